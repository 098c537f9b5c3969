"""Receipts and beat's storm evaluation never wait behind a backlog of inbound SMS: they go
to the replies queue (the attack: a flood delayed storm mode and receipts by its backlog)."""

from __future__ import annotations

from kombu import Connection

from shared.broker import INBOUND_QUEUE, REPLIES_QUEUE, publisher_celery
from tests.helpers import receipt, sign


def _depths(settings) -> dict[str, int]:
    with Connection(settings.broker_url) as conn:
        channel = conn.channel()
        return {name: channel.queue_declare(name, passive=True).message_count
                for name in (INBOUND_QUEUE, REPLIES_QUEUE)}


def test_a_receipt_webhook_is_queued_on_the_replies_queue(client, queued, idle_settings):
    answer = client.post("/webhooks/status", data=sign(receipt("ROUTE1")))
    assert answer.status_code == 200
    assert _depths(idle_settings) == {INBOUND_QUEUE: 0, REPLIES_QUEUE: 1}


def test_beats_storm_evaluation_is_queued_on_the_replies_queue(queued, idle_settings):
    publisher_celery(idle_settings).send_task("relous.evaluate_storm_mode")
    assert _depths(idle_settings) == {INBOUND_QUEUE: 0, REPLIES_QUEUE: 1}
