"""Each attack of the hardening review, on the storage and the use cases, on both dialects:
the ledger moves once per change of state, windows, first contacts, receipts, parts, the
destination gate and the price ceiling."""

from __future__ import annotations

import os
import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from shared.rules.messages import DeliveryReceipt, SendResult, SentPart
from shared.store.budgets import set_budget
from shared.store.campaigns import add_campaign, find_campaign
from shared.store.db import Database, upgrade
from shared.store.receipts import apply_receipt
from shared.store.replies import (
    CLAIMED_STALE_AFTER,
    SENDING_STALE_AFTER,
    claim_batch,
    expire_replies,
    record_send,
    recover_stale_claims,
    start_sending,
)
from shared.vonage.webhooks import InvalidField, parse_inbound
from tests.helpers import inbound, record_inbound
from workers.housekeeping import expire_parts

KEY = "hardening-test-key-0123456789"
NOW = datetime(2026, 11, 25, 20, 0, tzinfo=UTC)
CAMPAIGN = "33700000001"


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request, tmp_path, db) -> Database:
    if request.param == "sqlite":
        database = Database(f"sqlite:///{tmp_path / 'hardening.db'}")
        upgrade(database)
    else:
        database = Database(os.environ["DATABASE_URL"], pool_size=3)
    with database.transaction() as tx:
        add_campaign(tx, CAMPAIGN, "Stop.", delay_seconds=0, window_seconds=86400,
                     price_per_segment=Decimal("0.08"), allow_multipart=False, now=NOW)
        set_budget(tx, CAMPAIGN, NOW, total=Decimal("10"))
    yield database
    database.close()


def _record(database: Database, at: datetime = NOW, **fields):
    with database.transaction() as tx:
        return record_inbound(tx, parse_inbound(inbound(**fields)), KEY, at)


def _claim(database: Database, at: datetime = NOW):
    campaign_id = _campaign(database).id
    with database.transaction() as tx:
        return claim_batch(tx, campaign_id, at, 10)


def _campaign(database: Database):
    with database.transaction() as tx:
        return find_campaign(tx, CAMPAIGN)


def _ledger(database: Database) -> tuple[Decimal, Decimal, Decimal]:
    """(total_used, sum of charged, spent)."""
    with database.transaction() as tx:
        budget = tx.execute("SELECT total_used, spent FROM budgets").fetchone()
        charged = tx.execute("SELECT COALESCE(SUM(charged), 0) AS s FROM replies").fetchone()
    return (Decimal(str(budget["total_used"])), Decimal(str(charged["s"])),
            Decimal(str(budget["spent"])))


def _sent(message_id: str, price: str | None) -> SendResult:
    return SendResult("sent", parts=(SentPart(message_id, Decimal(price) if price else None),),
                      segments=1)


def test_two_recoveries_at_once_return_a_reservation_once(database):
    """The attack: two beats during a deploy both returned the same stale claim; the
    ledger ended at -0.08."""
    _record(database)
    _claim(database)
    later = NOW + CLAIMED_STALE_AFTER + timedelta(seconds=1)
    for _ in range(2):
        with database.transaction() as tx:
            recover_stale_claims(tx, later)
    assert _ledger(database) == (Decimal(0), Decimal(0), Decimal(0))


def test_recovery_racing_a_live_worker_never_frees_a_sent_reply(database):
    """A worker starts sending just before recovery looks: the reply stays charged."""
    _record(database)
    [reply] = _claim(database)
    with database.transaction() as tx:
        assert start_sending(tx, reply, NOW)
    with database.transaction() as tx:
        recover_stale_claims(tx, NOW + CLAIMED_STALE_AFTER + timedelta(seconds=1))
    with database.transaction() as tx:
        assert record_send(tx, reply, _sent("M1", "0.08"), NOW, None) == "sent"
    assert _ledger(database) == (Decimal("0.08"), Decimal("0.08"), Decimal("0.08"))


def test_concurrent_recoveries_on_postgresql_move_money_once(database):
    if database.dialect != "postgresql":
        pytest.skip("concurrent transactions: PostgreSQL")
    for n in range(5):
        _record(database, msisdn=f"3361234500{n}")
    _claim(database)
    later = NOW + CLAIMED_STALE_AFTER + timedelta(seconds=1)
    barrier = threading.Barrier(3)

    def recover() -> None:
        barrier.wait()
        with database.transaction() as tx:
            recover_stale_claims(tx, later)

    threads = [threading.Thread(target=recover) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert _ledger(database) == (Decimal(0), Decimal(0), Decimal(0))


def test_a_send_without_a_price_is_charged_the_estimate_not_zero(database):
    _record(database)
    [reply] = _claim(database)
    with database.transaction() as tx:
        start_sending(tx, reply, NOW)
        record_send(tx, reply, _sent("M2", None), NOW, None)
    assert _ledger(database) == (Decimal("0.08"), Decimal("0.08"), Decimal("0.08"))


def test_a_receipts_final_price_settles_the_difference_once(database):
    _record(database)
    [reply] = _claim(database)
    with database.transaction() as tx:
        start_sending(tx, reply, NOW)
        record_send(tx, reply, _sent("M3", "0.05"), NOW, None)
    receipt = DeliveryReceipt("M3", "delivered", 0, "0.07", str(reply.id), "x", None)
    for _ in range(2):
        with database.transaction() as tx:
            apply_receipt(tx, receipt, NOW)
    assert _ledger(database) == (Decimal("0.07"), Decimal("0.07"), Decimal("0.07"))


def test_a_forged_receipt_cannot_adopt_a_reply_that_was_not_being_sent(database):
    """The attack (signatures off): a receipt with an unknown id and a client-ref of any
    reply, priced 999999.99, froze the budget."""
    _record(database)
    [reply] = _claim(database)
    forged = DeliveryReceipt("FORGED", "delivered", 0, "999999.99", str(reply.id), "x", None)
    with database.transaction() as tx:
        assert apply_receipt(tx, forged, NOW) == "unmatched"
    assert _ledger(database)[0] == Decimal("0.08"), "only the claim's reservation"


def test_an_implausible_receipt_price_is_recorded_not_charged(database):
    _record(database)
    [reply] = _claim(database)
    with database.transaction() as tx:
        start_sending(tx, reply, NOW)
        record_send(tx, reply, _sent("M4", "0.08"), NOW, None)
    absurd = DeliveryReceipt("M4", "delivered", 0, "999999.99", str(reply.id), "x", None)
    with database.transaction() as tx:
        apply_receipt(tx, absurd, NOW)
        part = tx.execute("SELECT price FROM reply_parts").fetchone()
    assert Decimal(str(part["price"])) == Decimal("999999.99")
    assert _ledger(database) == (Decimal("0.08"), Decimal("0.08"), Decimal("0.08"))


def test_a_price_above_the_reservation_is_charged_and_halts_sending(database):
    """A premium route billed above the estimate: charged in full once, then no more
    sends until a person resumes the campaign."""
    for n in range(3):
        _record(database, msisdn=f"3361234510{n}")
    first, *_ = _claim(database)
    with database.transaction() as tx:
        start_sending(tx, first, NOW)
        record_send(tx, first, _sent("M5", "0.50"), NOW, None)
        counted = tx.execute("SELECT SUM(value) AS n FROM metric_counters"
                             " WHERE metric = 'price_overruns'").fetchone()["n"]
    assert counted == 1
    assert "price overrun" in (_campaign(database).sending_halted_reason or "")
    assert _claim(database, NOW + timedelta(minutes=5)) == []


def test_an_expired_reply_gives_the_sender_back_their_window(database):
    """The attack: a flood drains the day's cap; ordinary senders' replies expire, and
    they were 'already answered' for the whole window."""
    _record(database, msisdn="33612345200", message_id="FIRST")
    later = NOW + timedelta(hours=7)  # past the 6 h freshness limit, inside the window
    with database.transaction() as tx:
        assert expire_replies(tx, later) == 1
    again = _record(database, later, msisdn="33612345200", message_id="AGAIN")
    assert again.verdict == "reply"


def test_a_refused_send_gives_the_window_back_but_a_sent_one_does_not(database):
    _record(database, msisdn="33612345300", message_id="R1")
    [reply] = _claim(database)
    with database.transaction() as tx:
        start_sending(tx, reply, NOW)
        record_send(tx, reply, SendResult("failed", error="status 3"), NOW, None)
    assert _record(database, NOW + timedelta(minutes=1), msisdn="33612345300",
                   message_id="R2").verdict == "reply"
    [reply] = _claim(database, NOW + timedelta(minutes=1))
    with database.transaction() as tx:
        start_sending(tx, reply, NOW)
        record_send(tx, reply, _sent("M6", "0.08"), NOW, None)
    assert _record(database, NOW + timedelta(minutes=2), msisdn="33612345300",
                   message_id="R3").verdict == "suppress"


def test_a_first_message_in_two_parts_is_a_first_contact_in_storm_mode(database):
    """One ’ makes a French SMS UCS-2 (70 characters a part): a 2-part first message is
    common, and storm mode must still answer it."""
    with database.transaction() as tx:
        tx.execute("UPDATE campaigns SET storm_mode = %(on)s", {"on": True})
    parts = [dict(concat="true", **{"concat-ref": "7", "concat-total": "2",
                                    "concat-part": str(n)}) for n in (1, 2)]
    assert _record(database, msisdn="33612345400", message_id="P1", text="Bonjour, c’est",
                   **parts[0]).verdict == "partial"
    assert _record(database, msisdn="33612345400", message_id="P2", text=" Julie ?",
                   **parts[1]).verdict == "reply"


def test_a_reused_concat_ref_never_glues_an_old_orphan_to_a_new_sms(database):
    week_ago = NOW - timedelta(days=7)
    old = inbound(msisdn="33612345500", message_id="OLD1", text="vieux texte ",
                  concat="true", **{"concat-ref": "9", "concat-total": "2", "concat-part": "1",
                                    "message-timestamp": week_ago.strftime("%Y-%m-%d %H:%M:%S")})
    with database.transaction() as tx:
        record_inbound(tx, parse_inbound(old), KEY, week_ago)
    new = {"concat": "true", "concat-ref": "9", "concat-total": "2",
           "message-timestamp": NOW.strftime("%Y-%m-%d %H:%M:%S")}
    assert _record(database, msisdn="33612345500", message_id="NEW2", text=" fin",
                   **new, **{"concat-part": "2"}).verdict == "partial"
    assert _record(database, msisdn="33612345500", message_id="NEW1", text="Salut,",
                   **new, **{"concat-part": "1"}).verdict == "reply"
    with database.transaction() as tx:
        texts = [row["text"] for row in tx.execute(
            "SELECT text FROM inbound_messages ORDER BY id").fetchall()]
    assert texts == ["Salut, fin"]


def test_orphan_parts_are_recorded_suppressed_and_counted(database):
    """A flood of parts that never complete is visible, not silent."""
    for n in range(3):
        _record(database, msisdn="33612345600", message_id=f"ORPHAN{n}", text="bla",
                concat="true", **{"concat-ref": str(n), "concat-total": "3",
                                  "concat-part": "1"})
    with database.transaction() as tx:
        assert expire_parts(tx, NOW + timedelta(minutes=5)) == []
        assert expire_parts(tx, NOW + timedelta(hours=1)) == [CAMPAIGN] * 3
        rows = tx.execute("SELECT verdict, reasons FROM inbound_messages").fetchall()
        counted = tx.execute("SELECT SUM(value) AS n FROM metric_counters WHERE metric ="
                             " 'inbound' AND label = 'suppress'").fetchone()["n"]
        assert expire_parts(tx, NOW + timedelta(hours=2)) == []
    assert [row["verdict"] for row in rows] == ["suppress"] * 3
    assert all("incomplete concatenated SMS: 1 of 3 parts" in row["reasons"] for row in rows)
    assert counted == 3


@pytest.mark.parametrize("sender", ["447911123456", "33899123456", "336111", "99999999999"],
                         ids=["uk-mobile", "fr-premium-0899", "short-code", "invalid"])
def test_the_destination_gate_answers_only_the_campaigns_own_mobiles(database, sender):
    outcome = _record(database, msisdn=sender)
    assert outcome.verdict == "suppress"
    with database.transaction() as tx:
        [row] = tx.execute("SELECT reasons FROM inbound_messages").fetchall()
        assert tx.execute("SELECT COUNT(*) AS n FROM replies").fetchone()["n"] == 0
    assert "destination not allowed" in row["reasons"]


def test_a_french_mobile_is_answered_and_reply_countries_opens_another(database):
    assert _record(database, msisdn="33612345700").verdict == "reply"
    assert _record(database, msisdn="32470123456").verdict == "suppress"
    campaign = _campaign(database)
    from shared.store.campaigns import update_campaign

    with database.transaction() as tx:
        update_campaign(tx, campaign.id, reply_text=None, delay_seconds=None,
                        window_seconds=None, price_per_segment=campaign.price_per_segment,
                        allow_multipart=False,
                        rules=campaign.rules.with_changes({"reply_countries": "FR,BE"}))
    assert _record(database, msisdn="32470123457").verdict == "reply"


def test_a_backlog_drained_at_once_is_not_a_storm(database):
    """Storm mode counts the provider's receive time: 200 messages sent over the last
    hour and recorded in one go (a worker catching up) are not a minute's flood."""
    from workers.housekeeping import evaluate_storm_mode

    hour_ago = NOW - timedelta(hours=1)
    with database.transaction() as tx:
        for n in range(200):
            sent_at = hour_ago + timedelta(seconds=17 * n)
            record_inbound(tx, parse_inbound(inbound(
                msisdn=f"336{n:08d}", message_id=f"LATE{n}",
                **{"message-timestamp": sent_at.strftime("%Y-%m-%d %H:%M:%S")})), KEY, NOW)
        assert evaluate_storm_mode(tx, NOW + timedelta(seconds=5)) == []


def test_sessions_cannot_hold_locks_or_transactions_for_long(database):
    if database.dialect != "postgresql":
        pytest.skip("PostgreSQL session settings")
    with database.transaction() as tx:
        limits = {name: tx.execute(f"SHOW {name}").fetchone()[name] for name in
                  ("statement_timeout", "lock_timeout", "idle_in_transaction_session_timeout")}
    assert limits == {"statement_timeout": "30s", "lock_timeout": "10s",
                      "idle_in_transaction_session_timeout": "1min"}


def test_a_worker_with_a_fast_clock_takes_no_extra_send_tokens(database):
    """The shared send rate runs on the database's clock: a worker whose clock is an hour
    ahead does not refill the bucket for itself."""
    if database.dialect != "postgresql":
        pytest.skip("the database's clock: PostgreSQL")
    from shared.store.replies import take_send_token

    ahead = datetime.now(UTC) + timedelta(hours=1)
    with database.transaction() as tx:
        waits = [take_send_token(tx, "skew-test", 5, ahead + timedelta(minutes=n))
                 for n in range(8)]
    assert waits[:5] == [0.0] * 5 and all(wait > 0 for wait in waits[5:])


# --- what the red team of the hardening confirmed --------------------------------------

def test_a_halt_stops_the_replies_a_worker_already_claimed(database):
    """F1: halted at the first overrun, the rest of a claimed batch still went out at the
    overrun price: a stream passed the cap."""
    for n in range(4):
        _record(database, msisdn=f"3361234520{n}")
    first, *others = _claim(database)
    with database.transaction() as tx:
        start_sending(tx, first, NOW)
        record_send(tx, first, _sent("OVER1", "0.30"), NOW, None)
    for reply in others:
        with database.transaction() as tx:
            assert not start_sending(tx, reply, NOW)
    with database.transaction() as tx:
        statuses = sorted(row["status"] for row in tx.execute(
            "SELECT status FROM replies").fetchall())
    assert statuses == ["pending"] * 3 + ["sent"]
    total, charged, spent = _ledger(database)
    assert total == charged == spent == Decimal("0.30"), "one overrun, and nothing more"


def test_a_receipt_above_the_reservation_halts_sending_too(database):
    """F2: receipts re-priced sent replies up to 5x with no count and no halt."""
    _record(database)
    [reply] = _claim(database)
    with database.transaction() as tx:
        start_sending(tx, reply, NOW)
        record_send(tx, reply, _sent("RCPT-OVER", "0.08"), NOW, None)
        apply_receipt(tx, DeliveryReceipt("RCPT-OVER", "delivered", 0, "0.3999", None, "x",
                                          None), NOW)
    assert "price overrun" in (_campaign(database).sending_halted_reason or "")
    assert _ledger(database) == (Decimal("0.3999"),) * 3


@pytest.mark.parametrize("status", ["failed", "delivered"])
def test_a_forged_receipt_cannot_lower_an_unknown_replys_charge(database, status):
    """F3 (signatures off): adopting an `unknown` reply by client-ref with a tiny price
    freed its reservation, and the cap with it."""
    _record(database)
    [reply] = _claim(database)
    with database.transaction() as tx:
        start_sending(tx, reply, NOW)
        recover_stale_claims(tx, NOW + SENDING_STALE_AFTER + timedelta(seconds=1))
        apply_receipt(tx, DeliveryReceipt("FORGED2", status, 0, "0.00000001", str(reply.id),
                                          "x", None), NOW)
    total, charged, _ = _ledger(database)
    assert total == charged == Decimal("0.08")


def test_one_parts_receipt_does_not_lower_a_multipart_charge(database):
    """F4: a 3-part send without prices was charged the estimate; the first part's
    receipt (0.01) made it 0.01."""
    _record(database)
    [reply] = _claim(database)
    parts = tuple(SentPart(f"MP{n}", None) for n in range(3))
    with database.transaction() as tx:
        start_sending(tx, reply, NOW)
        record_send(tx, reply, SendResult("sent", parts=parts, segments=3), NOW, None)
        apply_receipt(tx, DeliveryReceipt("MP0", "delivered", 0, "0.01", None, "x", None), NOW)
    total, charged, spent = _ledger(database)
    assert total == charged == spent == Decimal("0.08")


def test_a_part_retried_after_its_sibling_expired_still_completes_the_sms(database):
    """F5: part 2, retried by Vonage after part 1 was recorded as an orphan, left the
    sender unanswered."""
    stamp = {"message-timestamp": NOW.strftime("%Y-%m-%d %H:%M:%S")}
    concat = {"concat": "true", "concat-ref": "42", "concat-total": "2"}
    assert _record(database, msisdn="33612345900", message_id="LATE1", text="Bonjour, ",
                   **concat, **stamp, **{"concat-part": "1"}).verdict == "partial"
    with database.transaction() as tx:
        assert expire_parts(tx, NOW + timedelta(minutes=21)) == ["33700000001"]
    late = _record(database, NOW + timedelta(minutes=22), msisdn="33612345900",
                   message_id="LATE2", text="vous êtes là ?", **concat, **stamp,
                   **{"concat-part": "2"})
    assert late.verdict == "reply"


def test_a_message_id_cannot_take_a_concatenated_sms_key(database):
    """F6: `messageId=concat:P1` took the key of a later 2-part SMS: its sender got no
    reply, or the plain message was dropped as a duplicate."""
    with pytest.raises(InvalidField):
        parse_inbound(inbound(message_id="concat:P1"))
    payload = parse_inbound(inbound(message_id="P1X")).to_payload() | {
        "message_id": "concat:P1"}
    from shared.settings import Settings
    from tests.helpers import batch_request
    from workers.batching import record_requests

    if database.dialect == "postgresql":
        statuses, _ = record_requests(Settings.from_env(), [batch_request(payload)],
                                      datetime.now(UTC))
        assert statuses == ["done"]
        with database.transaction() as tx:
            parked = tx.execute("SELECT error FROM parked_messages").fetchall()
        assert [row["error"] for row in parked] == ["unreadable payload: KeyError"]


def test_a_forged_future_timestamp_is_clamped(database):
    """A receive time far in the future would count in a later minute (or part window)."""
    future = (NOW + timedelta(days=3)).strftime("%Y-%m-%d %H:%M:%S")
    with database.transaction() as tx:
        record_inbound(tx, parse_inbound(inbound(**{"message-timestamp": future})), KEY, NOW)
        at = tx.execute("SELECT provider_timestamp FROM inbound_messages").fetchone()
    assert at["provider_timestamp"] <= NOW + timedelta(minutes=5)
