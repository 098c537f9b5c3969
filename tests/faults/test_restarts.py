"""Crashes of the services: RabbitMQ restarted during an ingest load, PostgreSQL restarted
while the workers are busy. Both run on private instances (see conftest): the shared
ones serve every developer of this machine and are never stopped.

After recovery, every webhook answered 2xx is recorded exactly once; during the broker's
outage the web answers 503 (Vonage retries those, and so does the test); nothing is sent
twice and the cap holds.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from decimal import Decimal

import psycopg
import pytest

from tests.faults.audit import audit
from tests.faults.stack import (
    Poster,
    Stack,
    create_campaign,
    inbound_stream,
    recover,
    retry_like_vonage,
    scenario_seed,
    sender_numbers,
)
from tests.helpers import broker_url, wait_for, wait_until_idle

pytestmark = [pytest.mark.faults, pytest.mark.e2e]
RESTARTS = 2


def test_rabbitmq_restart_during_ingest_load(private_rabbitmq, db, fake_vonage,
                                             stack: Callable[..., Stack], capsys):
    seed = scenario_seed()
    rng = random.Random(seed)
    database_url = os.environ["DATABASE_URL"]
    number = create_campaign(database_url, delay=0, total_cap=Decimal("100"))
    running = stack(private_rabbitmq.url(), database_url)
    numbers = sender_numbers(rng, 120)
    poster = Poster(running, inbound_stream(rng, numbers, concat_share=0.05),
                    rate=30).start()
    outage_codes: set[int] = set()
    try:
        for _ in range(RESTARTS):
            poster.wait_acked(rng.randint(40, 120), "before the restart")
            before = len(poster.refused())
            private_rabbitmq.stop()
            wait_for(lambda before=before: len(poster.refused()) >= before + 5, timeout=60,
                     message="webhooks refused while the broker is down")
            outage_codes |= {code for code in poster.codes() if not 200 <= code < 300}
            private_rabbitmq.start()
            poster.wait_acked(20, "after the restart")
    finally:
        poster.finish()
    refused = poster.refused()
    retry_like_vonage(running, refused)
    returned, lost = recover(running, lambda: wait_until_idle("/", timeout=180,
                                                              ctl=private_rabbitmq.ctl))

    result = audit(db, fake_vonage, [params for params, _ in poster.answers], number,
                   running.logs(), numbers)
    result.extra.update(restarts=RESTARTS, answered_2xx=poster.acked,
                        refused=len(refused), refused_codes=sorted(
                            code for code in poster.codes() if not 200 <= code < 300),
                        returned=returned, unknown_after_crash=lost)
    result.report(capsys, "rabbitmq-restart", seed)
    assert outage_codes == {503}, "the broker being down is a 503 (Vonage retries)"
    assert len(refused) >= RESTARTS * 5
    result.check()
    assert result.sms > 0


def test_postgresql_restart_while_workers_are_busy(private_postgres, vhost, fake_vonage,
                                                   stack: Callable[..., Stack], capsys):
    seed = scenario_seed()
    rng = random.Random(seed)
    database_url = private_postgres.url()
    number = create_campaign(database_url, delay=0, total_cap=Decimal("3.00"))
    running = stack(broker_url(vhost), database_url)
    numbers = sender_numbers(rng, 150)
    poster = Poster(running, inbound_stream(rng, numbers, concat_share=0.05),
                    rate=30).start()
    try:
        for restart in range(RESTARTS):
            poster.wait_acked(rng.randint(40, 120), "before the restart")
            private_postgres.stop("fast")
            if restart:  # a longer outage: the web keeps accepting, the workers wait
                poster.wait_acked(rng.randint(10, 40), "while PostgreSQL is down")
            private_postgres.start()
            poster.wait_acked(20, "after the restart")
    finally:
        poster.finish()
    refused = poster.refused()
    retry_like_vonage(running, refused)
    returned, lost = recover(running, lambda: wait_until_idle(vhost, timeout=180))

    with psycopg.connect(database_url, autocommit=True) as conn:
        result = audit(conn, fake_vonage, [params for params, _ in poster.answers], number,
                       running.logs(), numbers)
    result.extra.update(restarts=RESTARTS, refused=len(refused), returned=returned,
                        unknown_after_crash=lost)
    result.report(capsys, "postgresql-restart", seed)
    result.check()
    assert result.sms > 0
