"""What stops sending or waits for a person shows where operators look: a price overrun
halts the campaign in /metrics and `relous status`; parked messages in /metrics."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from decimal import Decimal

from click.testing import CliRunner

from ingest import create_app
from shared.rules.messages import SendResult, SentPart
from shared.settings import Settings
from shared.store.db import database_for
from shared.store.replies import claim_batch, record_send, start_sending
from shared.vonage.webhooks import parse_inbound
from tests.helpers import SECRET_KEY, batch_request, inbound, record_inbound, sample, scrape
from workers import tasks
from workers.cli import main


def test_a_price_overrun_halts_sending_in_metrics_and_status(db, campaign):
    number = campaign()
    now = datetime.now(UTC)
    with database_for(os.environ["DATABASE_URL"]).transaction() as tx:
        outcome = record_inbound(tx, parse_inbound(inbound(to=number)), SECRET_KEY, now)
        [reply] = claim_batch(tx, outcome.campaign_id, now, 10)
        start_sending(tx, reply, now)
        record_send(tx, reply, SendResult("sent", parts=(SentPart("OVER", Decimal("0.50")),),
                                          segments=1), now, None)
    client = create_app(Settings.from_env(), configure_logs=False).test_client()
    families = scrape(client)
    assert sample(families, "relous_price_overruns_total", campaign=number) == 1
    assert sample(families, "relous_sending_halted", campaign=number) == 1
    assert sample(families, "relous_sending_halted", campaign="*") == 0
    status = CliRunner().invoke(main, ["status"])
    assert status.exit_code == 0
    assert f"{number}: SENDING HALTED: price overrun" in status.output
    assert "halted" in status.output.splitlines()[1]
    resumed = CliRunner().invoke(main, ["campaign", "resume", number])
    assert resumed.exit_code == 0
    assert sample(scrape(client), "relous_sending_halted", campaign=number) == 0


def test_parked_messages_are_counted_by_kind(db, campaign):
    campaign()
    tasks.process_inbound([batch_request({"not": "an sms"})])
    client = create_app(Settings.from_env(), configure_logs=False).test_client()
    families = scrape(client)
    assert sample(families, "relous_parked_messages", kind="inbound") == 1
    assert sample(families, "relous_parked_messages", kind="receipt") == 0
