"""`relous sending stop|start|status`: sending stops at once, claimed replies included,
while inbound keeps being recorded and decided; only a person starts it again."""

from __future__ import annotations

import os
from datetime import UTC, datetime

from click.testing import CliRunner

from ingest import create_app
from shared.settings import Settings
from shared.store.db import database_for
from shared.store.replies import claim_batch, start_sending
from shared.vonage.webhooks import parse_inbound
from tests.helpers import SECRET_KEY, inbound, record_inbound, sample, scrape
from workers.cli import main


def _relous(*args: str):
    return CliRunner().invoke(main, list(args))


def _record(number: str, msisdn: str):
    with database_for(os.environ["DATABASE_URL"]).transaction() as tx:
        return record_inbound(tx, parse_inbound(inbound(msisdn=msisdn, to=number)),
                              SECRET_KEY, datetime.now(UTC))


def _claim(campaign_id: int):
    with database_for(os.environ["DATABASE_URL"]).transaction() as tx:
        return claim_batch(tx, campaign_id, datetime.now(UTC), 10)


def test_the_global_switch_stops_even_what_a_worker_already_claimed(db, campaign):
    number = campaign()
    campaign_id = _record(number, "33612340001").campaign_id
    _record(number, "33612340002")
    held = _claim(campaign_id)  # a worker holds these when the operator stops everything
    stopped = _relous("sending", "stop", "--reason", "provider bill looks wrong")
    assert stopped.exit_code == 0 and "every campaign" in stopped.output
    with database_for(os.environ["DATABASE_URL"]).transaction() as tx:
        assert [start_sending(tx, reply, datetime.now(UTC)) for reply in held] == [False] * 2
    assert _claim(campaign_id) == []
    assert _record(number, "33612340003").verdict == "reply", "inbound is still decided"
    rows = db.execute("SELECT status, charged FROM replies ORDER BY id").fetchall()
    assert [(row["status"], row["charged"]) for row in rows] == [("pending", 0)] * 3
    assert db.execute("SELECT total_used FROM budgets").fetchone()["total_used"] == 0
    client = create_app(Settings.from_env(), configure_logs=False).test_client()
    assert sample(scrape(client), "relous_sending_halted", campaign="*") == 1
    assert "STOPPED: stopped by an operator: provider bill looks wrong" in _relous(
        "sending", "status").output
    assert "SENDING STOPPED FOR EVERY CAMPAIGN" in _relous("status").output
    assert _relous("sending", "start").exit_code == 0
    assert len(_claim(campaign_id)) == 3
    assert sample(scrape(client), "relous_sending_halted", campaign="*") == 0


def test_one_campaigns_switch_leaves_the_others_sending(db, campaign):
    stopped, other = campaign("33700000001"), campaign("33700000002")
    stopped_id = _record(stopped, "33612340011").campaign_id
    other_id = _record(other, "33612340012").campaign_id
    assert _relous("sending", "stop", "--campaign", stopped, "--reason", "test").exit_code == 0
    assert _claim(stopped_id) == [] and len(_claim(other_id)) == 1
    assert _relous("sending", "start", "--campaign", stopped).exit_code == 0
    again = _relous("sending", "start", "--campaign", stopped)
    assert again.exit_code == 1 and "relous sending status" in again.output
    assert len(_claim(stopped_id)) == 1


def test_a_stop_needs_a_reason(db, campaign):
    campaign()
    assert _relous("sending", "stop").exit_code == 2
    assert _relous("sending", "stop", "--reason", "  ").exit_code == 2


def test_the_switch_trips_itself_on_quota_exceeded_or_account_barred(db, campaign):
    """Vonage's status 9 (partner quota exceeded) or 8 (account barred) stops every
    campaign: the account is shared. Only a person lifts it."""
    from shared.rules.messages import SendResult
    from shared.store.replies import record_send

    first, second = campaign("33700000001"), campaign("33700000002")
    first_id = _record(first, "33612340021").campaign_id
    second_id = _record(second, "33612340022").campaign_id
    [reply] = _claim(first_id)
    with database_for(os.environ["DATABASE_URL"]).transaction() as tx:
        start_sending(tx, reply, datetime.now(UTC))
        record_send(tx, reply, SendResult("failed", error="Vonage status 9",
                                          reason="status_9"), datetime.now(UTC), None)
    assert _claim(second_id) == []
    assert "partner quota exceeded" in _relous("sending", "status").output
    assert _relous("sending", "start").exit_code == 0
    assert len(_claim(second_id)) == 1
