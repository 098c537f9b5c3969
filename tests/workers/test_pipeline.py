"""The whole path of inbound SMS through a real Celery worker consuming RabbitMQ, with
PostgreSQL and the real vonage SDK talking to the fake Vonage over HTTPS."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from ingest import create_app
from shared.settings import Settings
from shared.store.db import database_for
from shared.store.replies import claim_batch, start_sending
from tests.fake_vonage import Behaviour
from tests.helpers import (
    VHOSTS,
    batch_request,
    inbound,
    receipt,
    record_inbound,
    sign,
    wait_for,
    wait_until_idle,
)
from workers import batching, tasks

VHOST = VHOSTS["test"]


@pytest.fixture
def post(worker):
    client = create_app(Settings.from_env(), configure_logs=False).test_client()

    def send(params: dict[str, str], path: str = "/webhooks/inbound") -> None:
        response = client.post(path, data=sign(params))
        assert response.status_code == 200, response.json

    return send


def _replies(db) -> list[dict]:
    return db.execute("SELECT * FROM replies ORDER BY id").fetchall()


def test_one_sms_gets_one_reply_from_the_campaign_number(db, campaign, fake_vonage, post):
    campaign("33700000001", reply="Elle ne veut pas vous parler.")
    post(inbound(msisdn="33612345621", message_id="M1"))
    wait_for(lambda: fake_vonage.sent, message="one SMS at the fake")
    wait_until_idle(VHOST)
    [sms] = fake_vonage.sent
    assert (sms.to, sms.sender, sms.text, sms.type) == (
        "33612345621", "33700000001", "Elle ne veut pas vous parler.", "text")
    [reply] = _replies(db)
    assert reply["status"] == "sent"
    assert reply["provider_message_id"] == sms.message_ids[0]
    assert reply["price"] == Decimal("0.0333") and reply["segments"] == 1
    assert reply["to_number"] is None, "the raw number is erased once sent"
    assert sms.client_ref == str(reply["id"])
    [message] = db.execute("SELECT * FROM inbound_messages").fetchall()
    assert message["sender"] != "33612345621" and len(message["sender"]) == 64
    assert message["verdict"] == "reply"


def test_retries_and_a_second_message_get_no_second_reply(db, campaign, fake_vonage, post):
    campaign()
    first = inbound(msisdn="33612345621", message_id="RETRIED")
    for _ in range(6):  # Vonage retrying one webhook
        post(first)
    post(inbound(msisdn="33612345621", message_id="SECOND", text="Tu réponds ?"))
    post(inbound(msisdn="33698765432", message_id="OTHER"))
    wait_for(lambda: len(fake_vonage.sent) >= 2, message="two SMS")
    wait_until_idle(VHOST)
    assert sorted(sms.to for sms in fake_vonage.sent) == ["33612345621", "33698765432"]
    verdicts = db.execute(
        "SELECT dedup_key, verdict FROM inbound_messages ORDER BY dedup_key").fetchall()
    assert [(row["dedup_key"], row["verdict"]) for row in verdicts] == [
        ("OTHER", "reply"), ("RETRIED", "reply"), ("SECOND", "suppress")]


def test_many_messages_of_one_sender_at_once_win_one_reply(db, campaign, fake_vonage, post):
    campaign()
    for number in range(20):
        post(inbound(msisdn="33611111111", message_id=f"BURST{number}"))
    wait_until_idle(VHOST)
    assert len(fake_vonage.sent_to("33611111111")) == 1
    assert db.execute("SELECT count(*) AS n FROM inbound_messages").fetchone()["n"] == 20


def test_concatenated_sms_is_reassembled_once(db, campaign, fake_vonage, post):
    campaign()
    parts = {part: inbound(msisdn="33612345621", message_id=f"PART{part}", text=text,
                           concat="true", **{"concat-ref": "42", "concat-total": "3",
                                             "concat-part": str(part)})
             for part, text in ((1, "Pourquoi tu "), (2, "ne réponds "), (3, "pas ?"))}
    post(parts[3])
    post(parts[1])
    post(parts[1])  # a retried part
    post(parts[2])
    wait_until_idle(VHOST)
    [message] = db.execute("SELECT * FROM inbound_messages").fetchall()
    assert message["text"] == "Pourquoi tu ne réponds pas ?"
    assert message["parts"] == 3 and message["dedup_key"] == "concat:PART1"
    assert len(fake_vonage.sent) == 1


def test_unroutable_number_is_recorded_without_reply(db, campaign, fake_vonage, post):
    campaign("33700000001")
    post(inbound(to="33799999999", message_id="LOST"))
    wait_until_idle(VHOST)
    [message] = db.execute("SELECT * FROM inbound_messages").fetchall()
    assert (message["verdict"], message["campaign_id"]) == ("unroutable", None)
    assert fake_vonage.sent == []


def _make_due(db) -> None:
    db.execute("UPDATE replies SET due_at = %(past)s WHERE status = 'pending'",
               {"past": datetime.now(UTC) - timedelta(seconds=1)})


def test_delayed_reply_waits_in_the_database_until_flushed(db, campaign, fake_vonage, post):
    campaign(delay=3600)
    post(inbound(message_id="LATER"))
    wait_until_idle(VHOST)
    tasks.flush_due_replies.delay()
    wait_until_idle(VHOST)
    [reply] = _replies(db)
    assert reply["status"] == "pending" and fake_vonage.sent == []
    assert reply["due_at"] > datetime.now(UTC) + timedelta(minutes=59)
    assert reply["to_number"] == "33612345621", "kept only while the reply is pending"
    _make_due(db)
    tasks.flush_due_replies.delay()
    wait_for(lambda: fake_vonage.sent, message="the flushed reply")
    wait_until_idle(VHOST)
    assert [r["status"] for r in _replies(db)] == ["sent"]


def test_throttled_send_is_retried_later_without_double_sending(db, campaign, fake_vonage,
                                                                post):
    campaign()
    fake_vonage.script(Behaviour(status="1"))
    post(inbound(message_id="THROTTLED"))
    wait_until_idle(VHOST)
    [reply] = _replies(db)
    assert (reply["status"], reply["attempts"]) == ("pending", 1)
    assert reply["due_at"] >= reply["updated_at"] + timedelta(seconds=1), "after a back-off"
    assert fake_vonage.sent == []
    _make_due(db)
    tasks.flush_due_replies.delay()
    wait_until_idle(VHOST)
    assert len(fake_vonage.sent) == 1
    assert [r["status"] for r in _replies(db)] == ["sent"]


def test_refused_send_fails_without_retry_and_forgets_the_number(db, campaign, fake_vonage,
                                                                 post):
    campaign()
    fake_vonage.script(Behaviour(status="3"))
    post(inbound(message_id="INVALID"))
    wait_until_idle(VHOST)
    [reply] = _replies(db)
    assert reply["status"] == "failed" and reply["to_number"] is None
    assert "3" in reply["error"]


def test_an_unavailable_provider_is_retried(db, campaign, fake_vonage, post):
    """503 with Retry-After: refused before any processing, certainly not sent."""
    campaign()
    fake_vonage.script(Behaviour(http_status=503, retry_after="1"))
    post(inbound(message_id="FIVEOTHREE"))
    wait_until_idle(VHOST)
    assert [r["status"] for r in _replies(db)] == ["pending"]
    assert fake_vonage.sent == []


def test_a_server_error_may_have_sent_so_it_is_never_resent(db, campaign, fake_vonage, post):
    """500 (or a proxy's 502/504) may come after the request reached Vonage: `unknown`,
    its reservation kept, never sent again."""
    campaign()
    fake_vonage.script(Behaviour(http_status=500))
    post(inbound(message_id="FIVEHUNDRED"))
    wait_until_idle(VHOST)
    [reply] = _replies(db)
    assert (reply["status"], reply["to_number"]) == ("unknown", None)
    budget = db.execute("SELECT total_used, spent FROM budgets").fetchone()
    assert budget["total_used"] == reply["charged"] > 0 and budget["spent"] == 0


def test_a_batch_the_database_refused_goes_back_to_the_queue(db, campaign, fake_vonage, post,
                                                            monkeypatch):
    """The database fails once (a restart, a deadlock), inside the batch's transaction: the
    batch's messages are not acknowledged but requeued, and recorded once on redelivery."""
    import psycopg

    campaign()
    real, failures = batching.judge_batch, []

    def fails_once(*args, **kwargs):
        if not failures:
            failures.append(1)
            raise psycopg.OperationalError("server closed the connection unexpectedly")
        return real(*args, **kwargs)

    monkeypatch.setattr(batching, "judge_batch", fails_once)
    post(inbound(msisdn="33612345621", message_id="REFUSED"))
    wait_for(lambda: fake_vonage.sent, message="the requeued message answered")
    wait_until_idle(VHOST)
    assert failures == [1]
    assert [row["dedup_key"] for row in db.execute(
        "SELECT dedup_key FROM inbound_messages").fetchall()] == ["REFUSED"]
    assert len(fake_vonage.sent) == 1


def test_a_message_that_breaks_its_batch_does_not_take_the_others_down(db, campaign,
                                                                        monkeypatch):
    """A message the code cannot record (a bug, not the database) fails its batch: the
    others are then recorded one by one, and the culprit is parked, like an unreadable
    payload: acknowledged, never lost, never requeued."""
    campaign()
    real = batching.judge_batch

    def breaks_on_poison(tx, messages, *args):
        if any(sms.message_id == "POISON" for sms in messages):
            raise ValueError("a bug")
        return real(tx, messages, *args)

    monkeypatch.setattr(batching, "judge_batch", breaks_on_poison)
    requests = [batch_request(inbound(msisdn=f"3361234560{n}", message_id=f"OK{n}")) for n in
                range(3)]
    requests.insert(1, batch_request(inbound(message_id="POISON")))
    requests.append(batch_request({"unexpected": "payload"}))
    statuses = tasks.process_inbound(requests)
    assert statuses == [batching.DONE] * 5, "nothing is requeued forever"
    assert sorted(row["dedup_key"] for row in db.execute(
        "SELECT dedup_key FROM inbound_messages").fetchall()) == ["OK0", "OK1", "OK2"]
    parked = db.execute("SELECT kind, message_key, error FROM parked_messages"
                        " ORDER BY id").fetchall()
    assert [(row["kind"], row["error"]) for row in parked] == [
        ("inbound", "unreadable payload: TypeError"), ("inbound", "ValueError")]
    assert parked[1]["message_key"] == "POISON"


def test_one_batch_judges_each_sender_as_its_own_transactions_would(db, campaign):
    """A batch with repeats and several senders gives the verdicts one message at a time
    would: one reply per sender, the repeats within the window suppressed."""
    campaign()
    requests = [batch_request(inbound(msisdn=f"3361111111{n % 3}", message_id=f"B{n}",
                                 text=f"Message numero {n}")) for n in range(9)]
    assert tasks.process_inbound(requests) == [batching.DONE] * 9
    rows = db.execute("SELECT dedup_key, verdict FROM inbound_messages").fetchall()
    verdicts = {row["dedup_key"]: row["verdict"] for row in rows}
    assert [verdicts[f"B{n}"] for n in range(9)] == ["reply"] * 3 + ["suppress"] * 6
    assert db.execute("SELECT count(*) AS n FROM replies").fetchone()["n"] == 3


def _record_and_claim(message_id: str, now: datetime):
    """Record one inbound message and claim its reply, as a worker would, in-process."""
    from shared.vonage.webhooks import parse_inbound

    settings = Settings.from_env()
    database = database_for(settings.database_url)
    with database.transaction() as tx:
        outcome = record_inbound(tx, parse_inbound(inbound(message_id=message_id)),
                                       settings.secret_key, now)
    with database.transaction() as tx:
        return outcome, claim_batch(tx, outcome.campaign_id, now, 10)


def test_crash_between_send_and_record_sends_no_second_sms(db, campaign, fake_vonage):
    """A worker claims and sends, then dies before recording: the redelivered task finds
    the reply `sending`, sends nothing, and the stale claim is later marked `unknown`."""
    number = campaign()
    settings = Settings.from_env()
    now = datetime.now(UTC)
    outcome, [claimed] = _record_and_claim("CRASH", now)
    with database_for(settings.database_url).transaction() as tx:
        assert start_sending(tx, claimed, now)
    tasks.provider(settings).send(claimed.to_number, number, claimed.text,
                                  client_ref=str(claimed.id))
    # ... the worker dies here; RabbitMQ redelivers the task to another worker:
    assert tasks.send_due_replies.apply(args=(outcome.campaign_id,)).get() == {
        "campaign_id": outcome.campaign_id}
    assert len(fake_vonage.sent) == 1
    db.execute("UPDATE replies SET claimed_at = claimed_at - interval '11 minutes'")
    assert tasks.recover_stale_sending.apply().get() == {"returned": 0, "recovered": 1}
    [reply] = _replies(db)
    assert reply["status"] == "unknown" and reply["to_number"] is None
    assert tasks.flush_due_replies.apply().get() == {"campaigns": 0, "expired": 0}
    assert len(fake_vonage.sent) == 1


def test_claimed_but_never_sent_reply_goes_back_to_pending_and_is_sent(db, campaign,
                                                                        fake_vonage, worker):
    """A worker dies after claiming a batch, before handing a reply to the provider: the
    reply was certainly not sent, so it returns to `pending` and is sent once."""
    campaign()
    _, claimed = _record_and_claim("CLAIMED", datetime.now(UTC))
    assert len(claimed) == 1
    db.execute("UPDATE replies SET claimed_at = claimed_at - interval '3 minutes'")
    assert tasks.recover_stale_sending.apply().get() == {"returned": 1, "recovered": 0}
    tasks.flush_due_replies.delay()
    wait_for(lambda: fake_vonage.sent, message="the recovered reply")
    wait_until_idle(VHOST)
    assert len(fake_vonage.sent) == 1
    assert [r["status"] for r in _replies(db)] == ["sent"]


def test_delivery_receipt_settles_the_reply(db, campaign, fake_vonage, post):
    campaign()
    post(inbound(message_id="DLR"))
    wait_for(lambda: fake_vonage.sent, message="the reply")
    wait_until_idle(VHOST)
    message_id = fake_vonage.sent[0].message_ids[0]
    post(receipt(message_id, status="delivered", price="0.03500000"), "/webhooks/status")
    post(receipt(message_id, status="delivered", price="0.03500000"), "/webhooks/status")
    wait_until_idle(VHOST)
    [reply] = _replies(db)
    assert reply["status"] == "delivered"
    assert reply["final_price"] == Decimal("0.035")
    assert db.execute("SELECT count(*) AS n FROM delivery_receipts").fetchone()["n"] == 1


def test_failed_receipt_marks_the_reply_failed(db, campaign, fake_vonage, post):
    campaign()
    post(inbound(message_id="DLRFAIL"))
    wait_for(lambda: fake_vonage.sent, message="the reply")
    wait_until_idle(VHOST)
    message_id = fake_vonage.sent[0].message_ids[0]
    post(receipt(message_id, status="failed", **{"err-code": "6"}), "/webhooks/status")
    wait_until_idle(VHOST)
    [part] = db.execute("SELECT * FROM reply_parts").fetchall()
    assert (part["status"], part["err_code"]) == ("failed", 6)
    assert _replies(db)[0]["status"] == "failed"


def test_receipt_for_an_unknown_message_is_accepted_and_ignored(db, post):
    post(receipt("NOSUCHID"), "/webhooks/status")
    wait_until_idle(VHOST)
    [row] = db.execute("SELECT * FROM delivery_receipts").fetchall()
    assert row["reply_id"] is None


def test_multipart_reply_records_every_billed_part(db, campaign, fake_vonage, post):
    long_text = "Laissez-la tranquille. " * 10
    from shared.rules.campaign import Campaign  # noqa: F401  (documentation of the type used)

    number = campaign(reply=long_text[:150])
    with database_for(os.environ["DATABASE_URL"]).transaction() as tx:
        tx.execute("UPDATE campaigns SET reply_text = %(text)s WHERE number = %(n)s",
                   {"text": long_text, "n": number})
    post(inbound(message_id="LONG"))
    wait_for(lambda: fake_vonage.sent, message="the reply")
    wait_until_idle(VHOST)
    [reply] = _replies(db)
    assert reply["segments"] == 2
    assert reply["price"] == Decimal("0.0666")
    assert db.execute("SELECT count(*) AS n FROM reply_parts").fetchone()["n"] == 2
