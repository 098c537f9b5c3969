"""The alert webhook against a local HTTP server: each event is POSTed as `{"text": …}`
once however often beat runs, retried with back-off, given up after its attempts, and a
hanging webhook costs one run a bounded time, never the pipeline."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

import workers.app
from shared.rules.messages import SendResult, SentPart
from shared.store import alerts as outbox
from shared.store.budgets import set_budget
from shared.store.campaigns import (
    add_campaign,
    find_campaign,
    halt_everything,
    halt_sending,
    resume_sending,
    update_campaign,
)
from shared.store.db import Database, database_for, upgrade
from shared.store.replies import claim_batch, record_send, start_sending
from shared.vonage.webhooks import parse_inbound
from tests.helpers import SECRET_KEY, batch_request, inbound, record_inbound
from workers import alert_tasks, housekeeping, tasks
from workers import alerts as webhook_alerts

NUMBER = "33700000001"
NOW = datetime.now(UTC).replace(microsecond=0)


class Webhook:
    """A local webhook: records every POST, answers the queued statuses (then 200), or
    never answers while `hang` is set."""

    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []
        self.statuses: list[int] = []
        self.hang = threading.Event()
        self.release = threading.Event()
        self._lock = threading.Lock()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with hook._lock:
                    hook.posts.append({"content_type": self.headers["Content-Type"],
                                       "body": json.loads(body)})
                    status = hook.statuses.pop(0) if hook.statuses else 200
                if hook.hang.is_set():
                    hook.release.wait(timeout=120)  # accepted, never answered
                    return
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                """Quiet."""

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/secret-token"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def texts(self) -> list[str]:
        with self._lock:
            for post in self.posts:  # the shape Slack, Mattermost, Discord, hookshot take
                assert post["content_type"] == "application/json"
                assert set(post["body"]) == {"text"}
            return [post["body"]["text"] for post in self.posts]

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook()
    yield hook
    hook.stop()


@pytest.fixture
def database(db) -> Database:
    return database_for(os.environ["DATABASE_URL"])


@pytest.fixture
def beat(monkeypatch, webhook) -> Callable[..., dict[str, Any]]:
    """Run the alert task as beat does, at `at`, with ALERT_WEBHOOK_URL = `url`."""

    def run(at: datetime = NOW, url: str | None = webhook.url) -> dict[str, Any]:
        monkeypatch.setattr(workers.app, "_settings",
                            replace(workers.app.settings(), alert_webhook_url=url))
        monkeypatch.setattr(alert_tasks, "_now", lambda: at)
        return alert_tasks.alerts()

    return run


def _campaign(database: Database, **caps: Decimal) -> int:
    """A campaign whose one-segment reply is estimated at 0.10 EUR, with `caps`."""
    with database.transaction() as tx:
        add_campaign(tx, NUMBER, "Stop.", delay_seconds=0, window_seconds=86400,
                     price_per_segment=Decimal("0.10"), allow_multipart=False, now=NOW)
        if caps:
            set_budget(tx, NUMBER, NOW, **caps)
        return find_campaign(tx, NUMBER).id


def _senders(first: int, count: int) -> list[str]:
    return [f"336123456{n:02d}" for n in range(first, first + count)]


def _claim_replies(database: Database, campaign_id: int, senders: list[str]) -> int:
    """First contacts from `senders`, their replies claimed: each reserves 0.10 EUR."""
    with database.transaction() as tx:
        for sender in senders:
            record_inbound(tx, parse_inbound(inbound(msisdn=sender, to=NUMBER)), SECRET_KEY,
                           NOW)
        return len(claim_batch(tx, campaign_id, NOW, 100))


def _no_sender_in(texts: list[str], senders: list[str]) -> None:
    assert not [text for text in texts for sender in senders if sender[2:] in text]


# --- one test per event ------------------------------------------------------------------

def _storm_campaign(database: Database) -> None:
    campaign_id = _campaign(database)
    with database.transaction() as tx:
        campaign = find_campaign(tx, NUMBER)
        update_campaign(tx, campaign_id, reply_text=None, delay_seconds=None,
                        window_seconds=None, price_per_segment=campaign.price_per_segment,
                        allow_multipart=False,
                        rules=campaign.rules.with_changes({"storm_threshold_per_minute": "2"}))
        for sender in _senders(0, 3):  # 3 a minute, above the threshold of 2
            record_inbound(tx, parse_inbound(inbound(msisdn=sender, to=NUMBER)), SECRET_KEY,
                           NOW)
        assert housekeeping.evaluate_storm_mode(tx, NOW + timedelta(seconds=5))


def test_storm_mode_going_on_is_posted_once(database, webhook, beat):
    """Needs housekeeping.evaluate_storm_mode to raise `storm:NUMBER:on:…` alerts."""
    _storm_campaign(database)
    beat(NOW + timedelta(seconds=6))
    beat(NOW + timedelta(seconds=16))
    [text] = webhook.texts
    assert NUMBER in text and "storm" in text.lower()
    with database.transaction() as tx:
        assert [row["delivered_at"] is not None
                for row in outbox.alerts_raised(tx, f"storm:{NUMBER}:on:")] == [True]


def test_storm_mode_going_off_is_posted_once(database, webhook, beat):
    """Needs housekeeping.evaluate_storm_mode to raise `storm:NUMBER:off:…` alerts."""
    _storm_campaign(database)
    beat(NOW + timedelta(seconds=6))
    later = NOW + timedelta(minutes=11)  # past the 10-minute hold, no inbound
    with database.transaction() as tx:
        assert housekeeping.evaluate_storm_mode(tx, later)
    beat(later + timedelta(seconds=1))
    beat(later + timedelta(seconds=11))
    assert len(webhook.texts) == 2
    assert NUMBER in webhook.texts[1] and "storm" in webhook.texts[1].lower()
    with database.transaction() as tx:
        assert len(outbox.alerts_raised(tx, f"storm:{NUMBER}:off:")) == 1


def test_a_cap_at_80_percent_is_posted_once(database, webhook, beat):
    campaign_id = _campaign(database, total=Decimal("1.00"))
    assert _claim_replies(database, campaign_id, _senders(0, 7)) == 7  # 70 %
    beat()
    assert webhook.texts == []
    assert _claim_replies(database, campaign_id, _senders(7, 1)) == 1  # 80 %, 0.20 left
    beat()
    beat(NOW + timedelta(seconds=10))
    [text] = webhook.texts
    assert text == (f"anti-relous: campaign {NUMBER} used 80 % of its total cap"
                    " (0.8000 of 1.0000 EUR used).")
    _no_sender_in(webhook.texts, _senders(0, 8))


@pytest.mark.parametrize("period", ["hourly", "daily", "total"])
def test_a_cap_at_100_percent_is_posted_once(database, webhook, beat, period):
    """Full means no further reply fits: 0.95 EUR used of 1.00, at 0.10 a reply."""
    campaign_id = _campaign(database, **{period: Decimal("1.00")})
    _claim_replies(database, campaign_id, _senders(0, 8))
    beat()
    assert _claim_replies(database, campaign_id, _senders(8, 5)) == 2  # 3 wait
    beat()
    beat(NOW + timedelta(seconds=10))
    assert len(webhook.texts) == 2
    assert webhook.texts[1].startswith(
        f"anti-relous: campaign {NUMBER} reached its {period} cap (1.0000 of 1.0000 EUR")
    _no_sender_in(webhook.texts, _senders(0, 13))


def test_a_campaign_halt_is_posted_once_and_a_new_trip_again(database, webhook, beat):
    campaign_id = _campaign(database)
    with database.transaction() as tx:
        halt_sending(tx, campaign_id, "spend rate: 60 EUR in 10 minutes", NOW)
    beat()
    beat(NOW + timedelta(seconds=10))
    assert webhook.texts == [
        f"anti-relous: sending HALTED for campaign {NUMBER} since {NOW.isoformat()}: spend"
        f" rate: 60 EUR in 10 minutes. `relous sending start --campaign {NUMBER}` resumes it."]
    later = NOW + timedelta(minutes=5)
    with database.transaction() as tx:
        resume_sending(tx, campaign_id)
        halt_sending(tx, campaign_id, "operator: checking the bill", later)
    beat(later)
    beat(later + timedelta(seconds=10))
    assert len(webhook.texts) == 2 and "operator: checking the bill" in webhook.texts[1]


def test_the_global_kill_switch_is_posted_once(database, webhook, beat):
    _campaign(database)
    with database.transaction() as tx:
        halt_everything(tx, "the provider answered partner account barred (reply 7)", NOW)
    beat()
    beat(NOW + timedelta(seconds=10))
    assert webhook.texts == [
        f"anti-relous: sending HALTED for every campaign since {NOW.isoformat()}: the"
        " provider answered partner account barred (reply 7). `relous sending start`"
        " resumes it."]


def test_parked_messages_are_posted_once_per_new_batch(database, webhook, beat):
    _campaign(database)
    tasks.process_inbound([batch_request({"message_id": "bad-1", "not": "an sms"})])
    beat()
    beat(NOW + timedelta(seconds=10))
    assert webhook.texts == ["anti-relous: 1 new message(s) parked (inbound: 1); 1 waiting"
                             " for an operator: `relous parked list`."]
    tasks.process_inbound([batch_request({"message_id": "bad-2", "still": "not an sms"}),
                           batch_request({"message_id": "bad-3", "nor": "this"})])
    beat(NOW + timedelta(seconds=20))
    beat(NOW + timedelta(seconds=30))
    assert webhook.texts[1:] == ["anti-relous: 2 new message(s) parked (inbound: 2); 3"
                                 " waiting for an operator: `relous parked list`."]


def test_a_price_overrun_is_posted_once(database, webhook, beat):
    """A send billed 0.50 EUR where 0.10 was reserved: counted, and the campaign halted."""
    campaign_id = _campaign(database)
    sender = _senders(0, 1)
    with database.transaction() as tx:
        record_inbound(tx, parse_inbound(inbound(msisdn=sender[0], to=NUMBER)), SECRET_KEY,
                       NOW)
        [reply] = claim_batch(tx, campaign_id, NOW, 10)
        start_sending(tx, reply, NOW)
        record_send(tx, reply, SendResult("sent", parts=(SentPart("OVER", Decimal("0.50")),),
                                          segments=1), NOW, None)
    beat()
    beat(NOW + timedelta(seconds=10))
    overruns = [text for text in webhook.texts if "price overrun on" in text]
    assert overruns == [
        f"anti-relous: price overrun on campaign {NUMBER}: 1 send(s) billed above their"
        f" reservation (1 in all); its sending is halted until `relous sending start"
        f" --campaign {NUMBER}`."]
    assert len(webhook.texts) == 2  # and the halt it caused
    _no_sender_in(webhook.texts, sender)


def test_no_url_sends_nothing(database, webhook, beat):
    campaign_id = _campaign(database)
    with database.transaction() as tx:
        halt_sending(tx, campaign_id, "operator", NOW)
    assert beat(url=None) == {"webhook": False}
    assert webhook.posts == []
    with database.transaction() as tx:
        assert outbox.alerts_raised(tx, "") == []
    beat()  # once set, the state of that time is reported
    assert len(webhook.texts) == 1


# --- delivery ----------------------------------------------------------------------------

def _raise(database: Database, *keys: str) -> None:
    with database.transaction() as tx:
        for key in keys:
            assert outbox.raise_alert(tx, key, f"alert {key}", NOW)


def _row(database: Database, key: str) -> dict[str, Any]:
    with database.transaction() as tx:
        [row] = tx.execute("SELECT * FROM alerts WHERE dedupe_key = %(key)s",
                           {"key": key}).fetchall()
        return dict(row)


def test_a_failed_post_is_retried_after_its_back_off(database, webhook):
    _raise(database, "test:retry")
    webhook.statuses = [500, 200]
    assert webhook_alerts.deliver(database, webhook.url, NOW)["retrying"] == 1
    row = _row(database, "test:retry")
    assert (row["attempts"], row["last_error"], row["delivered_at"]) == (1, "HTTP 500", None)
    assert row["next_attempt_at"] == NOW + timedelta(seconds=30)
    webhook_alerts.deliver(database, webhook.url, NOW + timedelta(seconds=29))
    assert len(webhook.posts) == 1  # still backing off
    assert webhook_alerts.deliver(database, webhook.url,
                                  NOW + timedelta(seconds=30))["delivered"] == 1
    assert webhook.texts == ["alert test:retry"] * 2
    row = _row(database, "test:retry")
    assert row["delivered_at"] == NOW + timedelta(seconds=30) and row["attempts"] == 2
    webhook_alerts.deliver(database, webhook.url, NOW + timedelta(days=1))
    assert len(webhook.posts) == 2


def test_an_alert_is_given_up_after_its_attempts(database, webhook, caplog):
    _raise(database, "test:give-up")
    webhook.statuses = [503] * 50
    at = NOW
    for attempt in range(1, webhook_alerts.MAX_ATTEMPTS + 1):
        webhook_alerts.deliver(database, webhook.url, at)
        assert len(webhook.posts) == attempt
        at += webhook_alerts.retry_delay(attempt)
    row = _row(database, "test:give-up")
    assert row["given_up_at"] is not None and row["delivered_at"] is None
    assert row["attempts"] == webhook_alerts.MAX_ATTEMPTS
    assert "given up after 10 attempts: HTTP 503" in caplog.text
    assert at - NOW < webhook_alerts.STALE_AFTER  # the schedule ends before staleness
    webhook_alerts.deliver(database, webhook.url, at + timedelta(days=1))
    assert len(webhook.posts) == webhook_alerts.MAX_ATTEMPTS


def test_a_hanging_webhook_costs_one_bounded_post_and_the_alert_retries(database, webhook):
    """The server accepts and never answers: one time-out, the run ends, the alerts wait."""
    _raise(database, "test:hang-1", "test:hang-2")
    webhook.hang.set()
    outcome: dict[str, Any] = {}
    run = threading.Thread(target=lambda: outcome.update(
        webhook_alerts.deliver(database, webhook.url, NOW)), daemon=True)
    started = time.monotonic()
    run.start()
    bound = (webhook_alerts.CONNECT_TIMEOUT_SECONDS + webhook_alerts.READ_TIMEOUT_SECONDS
             + webhook_alerts.RUN_SECONDS)
    run.join(timeout=bound)
    assert not run.is_alive(), f"deliver still running after {bound} s"
    assert time.monotonic() - started >= webhook_alerts.READ_TIMEOUT_SECONDS  # it did wait
    assert outcome["retrying"] == 1 and len(webhook.posts) == 1
    first, second = _row(database, "test:hang-1"), _row(database, "test:hang-2")
    assert (first["attempts"], first["last_error"]) == (1, "ReadTimeout")
    assert first["next_attempt_at"] == NOW + timedelta(seconds=30)
    assert (second["attempts"], second["delivered_at"]) == (0, None)


def test_the_webhook_url_is_never_stored_or_logged(database, webhook, caplog):
    _raise(database, "test:secret")
    webhook.statuses = [500]
    webhook_alerts.deliver(database, webhook.url, NOW)
    assert "secret-token" not in caplog.text
    assert "secret-token" not in str(_row(database, "test:secret"))


# --- the outbox, on both dialects --------------------------------------------------------

@pytest.fixture(params=["sqlite", "postgresql"])
def any_database(request, tmp_path, db) -> Iterator[Database]:
    if request.param == "sqlite":
        database = Database(f"sqlite:///{tmp_path / 'alerts.db'}")
        upgrade(database)
    else:
        database = Database(os.environ["DATABASE_URL"], pool_size=2)
    yield database
    database.close()


def test_a_claim_dying_mid_post_is_claimed_again_after_its_lease(any_database):
    lease = NOW + timedelta(seconds=60)
    with any_database.transaction() as tx:
        outbox.raise_alert(tx, "k", "text", NOW)
        assert not outbox.raise_alert(tx, "k", "again", NOW)
        claimed = outbox.claim_due(tx, NOW, lease, 10)
        assert (claimed["text"], claimed["attempts"]) == ("text", 1)
        assert outbox.claim_due(tx, NOW + timedelta(seconds=59), lease, 10) is None
        again = outbox.claim_due(tx, lease, lease + timedelta(seconds=60), 10)
        assert again["attempts"] == 2
        assert not outbox.schedule_retry(tx, claimed["id"], 1, "late", lease)  # not its own
        assert outbox.mark_delivered(tx, again["id"], lease)
        assert outbox.claim_due(tx, NOW + timedelta(days=1), lease, 10) is None


def test_stale_alerts_are_given_up_and_old_ones_purged_but_the_kept(any_database):
    old = NOW - timedelta(days=40)
    with any_database.transaction() as tx:
        for key in ("old-delivered", "old-kept", "old-pending"):
            outbox.raise_alert(tx, key, key, old)
        for key in ("old-delivered", "old-kept"):  # oldest first
            claimed = outbox.claim_due(tx, old, old, 10)
            assert claimed["text"] == key
            outbox.mark_delivered(tx, claimed["id"], old)
        assert outbox.give_up_stale(tx, NOW - timedelta(hours=6), NOW) == 1
        assert outbox.purge_alerts(tx, NOW - timedelta(days=30), {"old-kept"}) == 2
        assert [row["dedupe_key"] for row in outbox.alerts_raised(tx, "old")] == ["old-kept"]
