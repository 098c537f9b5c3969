"""/metrics: exactly the catalogue of CONTRACT.md, with business figures from the database."""

from __future__ import annotations

import os
from decimal import Decimal

import pytest

from ingest import create_app
from shared.broker import broker_config
from shared.metrics import CATALOGUE
from shared.settings import Settings
from tests.helpers import (
    VHOSTS,
    broker_url,
    inbound,
    sample,
    scrape,
    sign,
    wait_for,
    wait_until_idle,
)

VHOST = VHOSTS["test"]


@pytest.fixture
def client(worker):
    return create_app(Settings.from_env(), configure_logs=False).test_client()


def test_metrics_expose_exactly_the_contract_catalogue(db, campaign, fake_vonage, client):
    campaign()
    assert client.post("/webhooks/inbound", data=sign(inbound())).status_code == 200
    client.post("/webhooks/inbound", data=inbound())  # unsigned: a 401 is counted too
    wait_for(lambda: fake_vonage.sent, message="the reply")
    wait_until_idle(VHOST)
    families = scrape(client)
    assert set(families) <= set(CATALOGUE), set(families) - set(CATALOGUE)
    for name, family in families.items():
        kind, labels, _ = CATALOGUE[name]
        assert family["type"] == kind, name
        for key in family["samples"]:
            sample_labels = {label for label, _ in key[1:]} - {"le"}
            assert sample_labels == set(labels), (name, key)
    expected_present = set(CATALOGUE) - {"relous_budget_remaining_euros"}
    assert expected_present <= set(families), expected_present - set(families)


def test_business_figures_follow_the_pipeline(db, campaign, fake_vonage, client):
    number = campaign()
    for message_id in ("M1", "M1", "M2"):
        client.post("/webhooks/inbound", data=sign(inbound(message_id=message_id)))
    wait_for(lambda: fake_vonage.sent, message="the reply")
    wait_until_idle(VHOST)
    families = scrape(client)
    counts = {verdict: sample(families, "relous_inbound_messages_total", campaign=number,
                              verdict=verdict) for verdict in ("reply", "suppress",
                                                               "duplicate", "block")}
    assert counts == {"reply": 1, "suppress": 1, "duplicate": 1, "block": 0}
    assert sample(families, "relous_replies_total", campaign=number, status="sent") == 1
    assert Decimal(str(sample(families, "relous_spend_euros_total", campaign=number))) == \
        fake_vonage.total_price
    assert sample(families, "relous_replies_pending", campaign=number) == 0
    assert sample(families, "relous_storm_mode", campaign=number) == 0
    assert sample(families, "relous_queue_depth_messages", queue="relous.inbound") == 0
    assert sample(families, "relous_webhook_requests_total", endpoint="inbound",
                  code="200") >= 3


def test_remaining_budget_is_shown_for_each_capped_period(db, campaign, client):
    from datetime import UTC, datetime

    from shared.store.budgets import set_budget
    from shared.store.db import database_for

    number = campaign()
    with database_for(Settings.from_env().database_url).transaction() as tx:
        set_budget(tx, number, datetime.now(UTC), daily=Decimal("2.5"))
    families = scrape(client)
    assert sample(families, "relous_budget_remaining_euros", campaign=number,
                  period="day") == 2.5
    assert sample(families, "relous_budget_remaining_euros", campaign=number,
                  period="hour") is None


def test_metrics_need_the_bearer_token_when_one_is_set(worker):
    settings = Settings.from_env().with_overrides(metrics_token="s3cret")
    client = create_app(settings, configure_logs=False).test_client()
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert scrape(client, Authorization="Bearer s3cret")


MANAGEMENT_URL = os.environ.get("RELOUS_TEST_RABBITMQ_MANAGEMENT_URL", "http://127.0.0.1:15672")


def test_queue_depth_counts_the_messages_workers_hold_unacknowledged(db):
    """Workers hold up to a batch of unacknowledged messages each: with the management
    API the gauge counts them (ready + unacknowledged); a queue declare sees ready only."""
    from kombu import Connection

    vhost = VHOSTS["idle"]
    base = Settings.from_env().with_overrides(broker_url=broker_url(vhost))
    with_api = base.with_overrides(rabbitmq_management_url=MANAGEMENT_URL)
    client = create_app(with_api, configure_logs=False).test_client()
    declare_only = create_app(base, configure_logs=False).test_client()
    inbound_queue = broker_config(base)["task_queues"][0]
    with Connection(broker_url(vhost)) as conn:  # what earlier tests left in this vhost
        conn.SimpleQueue(inbound_queue).clear()
    for _ in range(3):
        assert client.post("/webhooks/inbound", data=sign(inbound())).status_code == 200
    held = []
    with Connection(broker_url(vhost)) as conn:
        queue = conn.SimpleQueue(inbound_queue)
        queue.consumer.qos(prefetch_count=2)
        held = [queue.get(timeout=10), queue.get(timeout=10)]  # received, not acknowledged

        def depth(app_client) -> float:
            return sample(scrape(app_client), "relous_queue_depth_messages",
                          queue="relous.inbound")

        # The management API's figures are sampled every few seconds.
        wait_for(lambda: depth(client) == 3, timeout=30, interval=0.5,
                 message="ready + unacknowledged = 3")
        assert depth(declare_only) == 1
        for message in held:
            message.requeue()
        queue.close()
