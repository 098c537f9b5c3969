"""Fixtures of the web tests: an app publishing to a RabbitMQ virtual host that no worker
consumes, and the count of what waits in its queues."""

from __future__ import annotations

import pytest
from kombu import Connection

from ingest import create_app
from shared.broker import INBOUND_QUEUE, REPLIES_QUEUE, broker_config
from shared.settings import Settings
from tests.helpers import VHOSTS, broker_url


@pytest.fixture(scope="module")
def idle_settings() -> Settings:
    return Settings.from_env().with_overrides(broker_url=broker_url(VHOSTS["idle"]))


@pytest.fixture
def queued(idle_settings):
    """Returns a function giving the number of messages waiting in the inbound queue."""
    with Connection(idle_settings.broker_url) as conn:
        channel = conn.channel()
        for queue in broker_config(idle_settings)["task_queues"]:
            queue(channel).declare()
            queue(channel).purge()

        def depth() -> int:
            return sum(channel.queue_declare(name, passive=True).message_count
                       for name in (INBOUND_QUEUE, REPLIES_QUEUE))

        yield depth
        channel.close()


@pytest.fixture
def client(idle_settings):
    return create_app(idle_settings, configure_logs=False).test_client()
