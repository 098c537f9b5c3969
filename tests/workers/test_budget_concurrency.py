"""The budget guard under contention: 8 worker processes hammering one campaign whose cap
is a fraction of the demand. The cap is never exceeded, not by one cent, and every reply
that did not fit is still there, waiting."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from shared.settings import Settings
from shared.store.budgets import set_budget
from shared.store.campaigns import find_campaign
from shared.store.db import database_for
from shared.vonage.webhooks import parse_inbound
from tests.helpers import VHOSTS, broker_url, inbound, record_inbound, wait_for, wait_until_idle
from tests.processes import procfile_process
from workers import tasks

pytestmark = pytest.mark.e2e
VHOST = VHOSTS["budget"]
DEMAND = 200
HOURLY_CAP = Decimal("0.70")      # 21 replies at 0.0333; the 22nd would make 0.7326


def test_eight_concurrent_workers_never_exceed_the_cap(tmp_path, db, campaign, fake_vonage,
                                                       celery_app):
    number = campaign()
    settings = Settings.from_env()
    database = database_for(settings.database_url)
    now = datetime.now(UTC)
    with database.transaction() as tx:
        set_budget(tx, number, now, hourly=HOURLY_CAP, daily=Decimal("5"))
        for index in range(DEMAND):
            record_inbound(tx, parse_inbound(inbound(
                msisdn=f"336{index:08d}", message_id=f"DEMAND{index}")), settings.secret_key,
                now)
        campaign_id = find_campaign(tx, number).id
    env = dict(os.environ, BROKER_URL=broker_url(VHOST), WORKER_CONCURRENCY="8",
               SMS_RATE_PER_SECOND="1000")
    worker = procfile_process("worker", env, tmp_path)
    try:
        wait_for(lambda: " ready." in worker.output, timeout=60, message="8-process worker")
        with celery_app.connection_for_write(broker_url(VHOST)) as conn, \
                conn.Producer() as producer:
            for _ in range(64):  # far more send rounds than needed, all at once
                tasks.send_due_replies.apply_async((campaign_id,), connection=conn,
                                                   producer=producer)
        wait_until_idle(VHOST)
    finally:
        worker.stop()
    spent_at_fake = fake_vonage.total_price
    assert spent_at_fake <= HOURLY_CAP
    assert len(fake_vonage.sent) == 21, "the cap is used, and not one reply more"
    recorded = db.execute("SELECT COALESCE(SUM(price), 0) AS s FROM replies").fetchone()["s"]
    assert recorded == spent_at_fake
    budget = db.execute("SELECT hour_used, spent FROM budgets").fetchone()
    assert budget["spent"] == spent_at_fake and budget["hour_used"] <= HOURLY_CAP
    rows = db.execute("SELECT status, COUNT(*) AS n FROM replies GROUP BY status").fetchall()
    statuses = {row["status"]: row["n"] for row in rows}
    assert statuses == {"sent": 21, "pending": DEMAND - 21}, "the others wait for room"
    assert "relous.send_due_replies" in worker.output
