"""The dead-letter path: a message past its quorum queue's delivery limit is dead-lettered
by RabbitMQ (at least once), and the workers park it instead of losing it.

RabbitMQ's default without a dead-letter exchange drops such a message silently; the test
`test_past_the_delivery_limit_a_message_is_dead_lettered_then_parked` is that attack: a
message handed back again and again, as when it kills every worker that takes it.
"""

from __future__ import annotations

import uuid

from kombu import Connection, Consumer, Producer

from shared import broker
from shared.broker import DEAD_LETTER_QUEUE, INBOUND_QUEUE, dead_letter_queue
from shared.vonage.webhooks import parse_inbound
from tests.helpers import VHOSTS, broker_url, inbound, wait_for
from tests.workers.conftest import LIMIT
from workers.dead_letters import DeadLetterParker, DeadLetters


def _parked(db) -> list[dict]:
    return db.execute("SELECT kind, message_key, error FROM parked_messages ORDER BY id"
                      ).fetchall()


def _payload(message_id: str) -> dict:
    return parse_inbound(inbound(message_id=message_id)).to_payload()


def test_past_the_delivery_limit_a_message_is_dead_lettered_then_parked(db, limited_vhost):
    message_id = uuid.uuid4().hex[:16].upper()
    publisher = broker.create_publisher(limited_vhost)
    publisher.publish("relous.process_inbound", _payload(message_id))
    inbound_queue = broker.pipeline_queues(limited_vhost)[0]
    with Connection(limited_vhost.broker_url) as conn:
        dead = conn.SimpleQueue(dead_letter_queue())  # declared, as each worker does
        queue = conn.SimpleQueue(inbound_queue)
        returns = 0
        while True:  # the attack: handed back, again and again
            try:
                queue.get(timeout=2).requeue()
            except queue.Empty:
                break
            returns += 1
            assert returns <= LIMIT + 1, "RabbitMQ kept the message past its limit"
        assert returns == LIMIT + 1
        letter = dead.get(timeout=10)
        assert letter.headers["task"] == "relous.process_inbound"
        assert letter.headers["x-death"][0]["reason"] == "delivery_limit"
        assert queue.qsize() == 0
        DeadLetterParker().on_message(letter.decode(), letter)  # what the workers' step does
        assert dead.qsize() == 0
        queue.close()
        dead.close()
    [parked] = _parked(db)
    assert parked["kind"] == "inbound" and parked["message_key"] == message_id
    assert parked["error"] == ("dead-lettered by RabbitMQ from relous.inbound (delivery_limit),"
                               f" past its delivery limit of {LIMIT}")


def test_the_running_workers_park_what_the_dead_letter_queue_holds(db, worker, celery_app):
    """The session's worker runs the step: a dead-lettered inbound task (as RabbitMQ
    leaves it) ends as a parked message, and the dead-letter queue empties."""
    assert any(step.name.endswith("DeadLetters") for step in celery_app.steps["consumer"])
    message_id = uuid.uuid4().hex[:16].upper()
    body = [[_payload(message_id)], {}, {}]
    headers = {"task": "relous.process_inbound", "id": str(uuid.uuid4()),
               "x-death": [{"reason": "delivery_limit", "queue": INBOUND_QUEUE, "count": 1}],
               "x-delivery-count": 200}
    with Connection(broker_url(VHOSTS["test"])) as conn:
        Producer(conn.default_channel).publish(
            body, exchange=broker.DEAD_LETTER_EXCHANGE, routing_key=DEAD_LETTER_QUEUE,
            headers=headers, serializer="json", declare=[dead_letter_queue()])
    wait_for(lambda: _parked(db), timeout=30, message="the dead letter parked")
    [parked] = _parked(db)
    assert parked["message_key"] == message_id
    assert "from relous.inbound (delivery_limit)" in parked["error"]


def test_a_dead_lettered_schedule_task_is_dropped_not_parked(db, limited_vhost):
    """Beat's tasks and send rounds are derived from PostgreSQL again by the next run."""
    with Connection(limited_vhost.broker_url) as conn:
        dead = conn.SimpleQueue(dead_letter_queue())
        Producer(conn.default_channel).publish(
            [[7], {}, {}], exchange=broker.DEAD_LETTER_EXCHANGE,
            routing_key=DEAD_LETTER_QUEUE, headers={"task": "relous.send_due_replies"},
            serializer="json")
        letter = dead.get(timeout=10)
        DeadLetterParker().on_message(letter.decode(), letter)
        assert dead.qsize() == 0
        dead.close()
    assert _parked(db) == []


def test_the_step_consumes_the_dead_letter_queue_one_at_a_time(limited_vhost):
    with Connection(limited_vhost.broker_url) as conn:
        [consumer] = DeadLetters.get_consumers(object.__new__(DeadLetters),
                                               conn.default_channel)
        assert consumer.on_decode_error is not None
        assert isinstance(consumer, Consumer)
        assert [queue.name for queue in consumer.queues] == [DEAD_LETTER_QUEUE]
        assert consumer.prefetch_count == 1
