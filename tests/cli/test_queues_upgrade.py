"""`relous queues upgrade`: from the classic queues of a deployment that predates quorum
queues to quorum queues, the documented step (README, "Moving to quorum queues").

A queue's type cannot change in place: the step deletes a classic queue only when RabbitMQ
finds it empty and unused, so it never deletes a message; meanwhile the new web answers
503 (Vonage retries), never 200 for a message it could not queue.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from click.testing import CliRunner
from kombu import Connection, Exchange, Queue

from ingest import create_app
from shared.broker import (
    DEAD_LETTER_QUEUE,
    EXCHANGE,
    INBOUND_QUEUE,
    REPLIES_QUEUE,
    management_connections,
)
from shared.settings import Settings
from tests.faults.stack import fresh_vhost
from tests.helpers import broker_url, inbound, sign, wait_for
from tests.ingest.test_metrics import MANAGEMENT_URL
from workers.cli import main


def _classic(name: str) -> Queue:
    """A queue as the previous version declared it."""
    return Queue(name, Exchange(EXCHANGE, type="direct", durable=True), routing_key=name,
                 durable=True)


@pytest.fixture
def previous_version(monkeypatch) -> Iterator[Connection]:
    """A vhost whose pipeline queues are the previous version's classic queues, and the
    CLI pointed at it."""
    with fresh_vhost() as vhost, Connection(broker_url(vhost)) as conn:
        monkeypatch.setenv("BROKER_URL", broker_url(vhost))
        for name in (INBOUND_QUEUE, REPLIES_QUEUE):
            _classic(name)(conn.default_channel).declare()
        yield conn


def _upgrade(*options: str):
    return CliRunner().invoke(main, ["queues", "upgrade", *options])


STOPPED = "--clients-stopped"  # the operator scaled web, worker and beat to 0


def _is_quorum(conn: Connection, name: str) -> bool:
    channel = conn.channel()
    try:
        channel.queue_declare(name, durable=True, auto_delete=False)  # as a classic queue
    except conn.channel_errors:
        return True
    channel.close()
    return False


def test_a_queue_holding_messages_is_kept_and_the_upgrade_refused(previous_version):
    conn = previous_version
    old = conn.SimpleQueue(_classic(INBOUND_QUEUE))
    old.put({"a": 1})
    old.put({"b": 2})
    result = _upgrade(STOPPED)
    assert result.exit_code == 1
    assert "relous.inbound still holds messages or has consumers" in result.output
    assert old.qsize() == 2 and not _is_quorum(conn, INBOUND_QUEUE)
    old.close()


def test_a_queue_with_a_consumer_is_kept(previous_version):
    conn = previous_version
    listening = conn.SimpleQueue(_classic(REPLIES_QUEUE))
    listening.consumer.consume()  # an old worker, still attached
    result = _upgrade(STOPPED)
    assert result.exit_code == 1 and "relous.replies" in result.output
    assert not _is_quorum(conn, REPLIES_QUEUE)
    listening.close()


def test_once_drained_the_queues_become_quorum_queues_and_the_web_queues_again(
        previous_version):
    conn = previous_version
    settings = Settings.from_env()
    web = create_app(settings, configure_logs=False).test_client()
    # The new web cannot declare its quorum queue over the classic one: 503, never 200.
    assert web.post("/webhooks/inbound", data=sign(inbound())).status_code == 503
    old = conn.SimpleQueue(_classic(INBOUND_QUEUE))
    old.put({"a": 1})
    old.get(timeout=10).ack()  # the previous version's workers drain it
    old.close()
    result = _upgrade(STOPPED)
    assert result.exit_code == 0, result.output
    assert f"{INBOUND_QUEUE}: replaced by a quorum queue" in result.output
    assert f"{REPLIES_QUEUE}: replaced by a quorum queue" in result.output
    assert _is_quorum(conn, INBOUND_QUEUE) and _is_quorum(conn, REPLIES_QUEUE)
    assert _is_quorum(conn, DEAD_LETTER_QUEUE)
    assert web.post("/webhooks/inbound", data=sign(inbound())).status_code == 200
    assert conn.default_channel.queue_declare(INBOUND_QUEUE, passive=True).message_count == 1
    again = _upgrade(STOPPED)
    assert again.exit_code == 0, again.output
    assert f"{INBOUND_QUEUE}: already a quorum queue" in again.output


def test_without_the_management_api_the_operator_must_say_the_clients_are_stopped(
        previous_version):
    """A worker that cancelled its consumer but still holds messages is invisible to the
    broker's if-empty and if-unused checks (tests/workers/test_quorum_red_team.py)."""
    result = _upgrade()
    assert result.exit_code == 1 and "--clients-stopped" in result.output
    assert not _is_quorum(previous_version, INBOUND_QUEUE)


def test_with_the_management_api_a_connected_client_stops_the_upgrade(previous_version,
                                                                       monkeypatch):
    """An old worker connected for a while (the management API lists a connection a few
    seconds after it opens)."""
    monkeypatch.setenv("RABBITMQ_MANAGEMENT_URL", MANAGEMENT_URL)
    url = Settings.from_env().broker_url
    # `previous_version` is itself a client connected to the virtual host
    wait_for(lambda: management_connections(MANAGEMENT_URL, url) >= 1, timeout=30,
             message="the management API to list the connection")
    result = _upgrade()
    assert result.exit_code == 1 and "client(s) still connected" in result.output
    assert not _is_quorum(previous_version, INBOUND_QUEUE)
