"""Poison messages: what cannot be recorded is parked, alone, and its batch-mates are
recorded; nothing is requeued forever and nothing the web answered 200 disappears."""

from __future__ import annotations

import random
import string
from datetime import UTC, datetime

import pytest
from psycopg import errors

from shared.settings import Settings
from shared.vonage.webhooks import parse_inbound
from tests.helpers import batch_request, inbound
from workers import batching, tasks
from workers.parking import DONE, MAX_BUSY_ATTEMPTS, RETRY


def _hard_to_compress(length: int, seed: int = 7) -> str:
    chooser = random.Random(seed)
    return "".join(chooser.choice(string.ascii_letters) for _ in range(length))


def _recorded(db) -> list[str]:
    return sorted(row["dedup_key"] for row in db.execute(
        "SELECT dedup_key FROM inbound_messages").fetchall())


def _parked(db) -> list[dict]:
    return db.execute("SELECT * FROM parked_messages ORDER BY id").fetchall()


def test_a_long_hard_to_compress_text_is_recorded_with_its_batch(db, campaign):
    """The attack: ~2,700+ random letters overflowed the fingerprint's btree entry
    (ProgramLimitExceeded, an 'OperationalError'), and the whole batch was requeued forever."""
    campaign()
    long_text = _hard_to_compress(3900)
    requests = [batch_request(inbound(msisdn="33612345601", message_id="OK1")),
                batch_request(inbound(msisdn="33612345602", message_id="LONG", text=long_text)),
                batch_request(inbound(msisdn="33612345603", message_id="OK2"))]
    assert tasks.process_inbound(requests) == [DONE] * 3
    assert _recorded(db) == ["LONG", "OK1", "OK2"]
    row = db.execute("SELECT text, fingerprint FROM inbound_messages"
                     " WHERE dedup_key = 'LONG'").fetchone()
    assert row["text"] == long_text and len(row["fingerprint"]) == 32
    assert _parked(db) == []


def test_a_long_text_assembled_from_parts_is_recorded(db, campaign):
    campaign()
    halves = _hard_to_compress(3800, seed=11)
    parts = [batch_request(inbound(msisdn="33612345604", message_id=f"PART{n}",
                                   text=halves[(n - 1) * 1900:n * 1900], concat="true",
                                   **{"concat-ref": "A1", "concat-total": "2",
                                      "concat-part": str(n)})) for n in (1, 2)]
    assert tasks.process_inbound(parts) == [DONE, DONE]
    assert db.execute("SELECT text FROM inbound_messages").fetchone()["text"] == halves


def test_same_long_texts_are_still_compared(db, campaign):
    """Hashing the key keeps the repetition signal: the same long text thrice is seen."""
    campaign()
    text = _hard_to_compress(3000, seed=3)
    requests = [batch_request(inbound(msisdn="33612345605", message_id=f"REP{n}", text=text))
                for n in range(4)]
    assert tasks.process_inbound(requests) == [DONE] * 4
    reasons = [row["reasons"] for row in db.execute(
        "SELECT reasons FROM inbound_messages ORDER BY id").fetchall()]
    assert any("repetition: same text 3 times today" in reason for reason in reasons)


def test_a_message_the_database_refuses_is_parked_sealed_and_its_batch_recorded(db, campaign):
    """A NUL byte reaching a worker (another producer, an old message): PostgreSQL refuses
    it for good. It is parked at once, and the number inside is sealed."""
    campaign()
    poison = parse_inbound(inbound(msisdn="33698765432", message_id="NUL")).to_payload()
    poison["text"] = "salut\x00toi"
    requests = [batch_request(inbound(msisdn="33612345606", message_id="OK3")),
                batch_request(poison),
                batch_request(inbound(msisdn="33612345607", message_id="OK4"))]
    assert tasks.process_inbound(requests) == [DONE] * 3
    assert _recorded(db) == ["OK3", "OK4"]
    [parked] = _parked(db)
    assert (parked["kind"], parked["message_key"]) == ("inbound", "NUL")
    assert parked["error"].startswith("DatabaseRefused: DataError")
    assert "33698765432" not in parked["payload"] and "salut" not in parked["payload"]


def test_a_message_that_keeps_timing_out_is_parked_after_bounded_attempts(db, campaign,
                                                                          monkeypatch):
    campaign()
    real, tries = batching.judge_batch, []

    def slow_on_one(tx, messages, *args):
        if any(sms.message_id == "SLOW" for sms in messages):
            tries.append(len(messages))
            tx.execute("SELECT 1")
            raise errors.QueryCanceled("canceling statement due to statement timeout")
        return real(tx, messages, *args)

    monkeypatch.setattr(batching, "judge_batch", slow_on_one)
    requests = [batch_request(inbound(msisdn="33612345608", message_id="OK5")),
                batch_request(inbound(msisdn="33612345609", message_id="SLOW"))]
    assert tasks.process_inbound(requests) == [DONE, DONE]
    assert tries == [2] + [1] * MAX_BUSY_ATTEMPTS, "the batch once, then a bounded few alone"
    assert _recorded(db) == ["OK5"]
    [parked] = _parked(db)
    assert parked["message_key"] == "SLOW" and "57014" in parked["error"]


def test_while_the_database_is_unavailable_everything_goes_back_and_nothing_is_parked(
        db, campaign, monkeypatch):
    campaign()

    def shutting_down(tx, messages, *args):
        raise errors.AdminShutdown("terminating connection due to administrator command")

    monkeypatch.setattr(batching, "judge_batch", shutting_down)
    requests = [batch_request(inbound(msisdn="33612345610", message_id=f"DOWN{n}"))
                for n in range(3)]
    assert batching.record_requests(Settings.from_env(), requests,
                                    datetime.now(UTC))[0] == [RETRY] * 3
    assert _recorded(db) == [] and _parked(db) == []


def test_a_lock_wait_that_times_out_sends_the_batch_back_not_to_the_parking(db, campaign,
                                                                           monkeypatch):
    """Another session holding the campaign's row (an operator's open transaction) is
    contention, nothing about these messages: the batch is requeued, nothing parked."""
    campaign()

    def lock_held(tx, messages, *args):
        raise errors.LockNotAvailable("canceling statement due to lock timeout")

    monkeypatch.setattr(batching, "judge_batch", lock_held)
    requests = [batch_request(inbound(msisdn="33612345611", message_id=f"LOCK{n}"))
                for n in range(2)]
    assert batching.record_requests(Settings.from_env(), requests,
                                    datetime.now(UTC))[0] == [RETRY] * 2
    assert _parked(db) == []


@pytest.mark.parametrize("payload", [{"unexpected": "payload"}, "not even a dict"])
def test_an_unreadable_receipt_is_parked(db, payload):
    assert tasks.apply_receipt.apply(args=(payload,)).get()["result"] == "parked"
    [parked] = _parked(db)
    assert parked["kind"] == "receipt" and "unreadable payload" in parked["error"]


def test_a_receipt_the_database_refuses_is_parked(db, monkeypatch):
    from shared.store import receipts

    def refuses(tx, receipt, now):
        tx.execute("SELECT 1")
        raise errors.NumericValueOutOfRange("numeric field overflow")

    monkeypatch.setattr(receipts, "apply_receipt", refuses)
    payload = {"message_id": "RCPT1", "status": "delivered", "err_code": 0, "price": "0.05",
               "client_ref": None, "to": "33700000001", "message_timestamp": None}
    assert tasks.apply_receipt.apply(args=(payload,)).get() == {"message_id": "RCPT1",
                                                                "result": "parked"}
    [parked] = _parked(db)
    assert parked["message_key"] == "RCPT1" and "22003" in parked["error"]
