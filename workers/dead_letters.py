"""The dead-letter path: what RabbitMQ takes out of a pipeline queue past its delivery limit
(shared/broker.py) is parked here, where `relous parked` shows it, never dropped.

A message reaches the limit only when it keeps coming back: a worker process dies every
time it takes it, or the database stayed unavailable for DELIVERY_LIMIT returns. The step
runs in each worker's consumer (its event loop), on the dead-letter queue, one message at
a time; it never sleeps there: while the database is unavailable a dead letter goes back
to `relous.dead` on the consumer's timer, and the database is tried again only after
DATABASE_BACKOFF_SECONDS.
"""

from __future__ import annotations

import hashlib
import logging
import time
from datetime import UTC, datetime
from typing import Any

from celery import bootsteps
from kombu import Consumer
from kombu.message import Message

from shared import broker
from shared.store.db import database_for
from shared.store.failures import DatabaseError
from workers.parking import DONE, GIVE_BACK_PAUSE_SECONDS, park_message

log = logging.getLogger(__name__)

# Tasks derived again from PostgreSQL by the next scheduled run: a dead letter of one is
# dropped (logged). Anything else is parked, whole, whatever its shape.
REDERIVED_TASKS = frozenset(broker.REPLIES_TASKS) - {"relous.apply_receipt"}
DATABASE_BACKOFF_SECONDS = 30.0


class DeadLetters(bootsteps.ConsumerStep):
    """Consume the dead-letter queue and park what it holds."""

    def get_consumers(self, channel: Any) -> list[Consumer]:
        parker = DeadLetterParker(getattr(self, "timer", None))
        consumer = Consumer(channel, queues=[broker.dead_letter_queue()], accept=["json"],
                            callbacks=[parker.on_message], prefetch_count=1,
                            on_decode_error=parker.on_undecodable)
        return [consumer]

    def start(self, c: Any) -> None:
        self.timer = c.timer
        super().start(c)


class DeadLetterParker:
    """Parks dead letters; gives them back on `timer` (now, without one) while the
    database is unavailable."""

    def __init__(self, timer: Any = None) -> None:
        self._timer = timer
        self._database_down_until = 0.0

    def on_message(self, body: Any, message: Message) -> None:
        headers = message.headers or {}
        task = str(headers.get("task") or "")
        if task in REDERIVED_TASKS:
            log.error("dead-lettered %s task %s dropped: the next scheduled run redoes its "
                      "work", task, headers.get("id"))
            message.ack()
            return
        payload = _inbound_payload(body) if task else body
        self._park(message, "receipt" if task == "relous.apply_receipt" else "inbound",
                   _key(payload, headers, message.body), payload, _why(headers))

    def on_undecodable(self, message: Message, error: Exception) -> None:
        body = message.body.decode("utf-8", "replace") if isinstance(message.body, bytes) \
            else str(message.body)
        self._park(message, "inbound", _key(None, message.headers or {}, message.body), body,
                   f"dead-lettered, undecodable: {type(error).__name__}")

    def _park(self, message: Message, kind: str, key: str, payload: Any, error: str) -> None:
        from workers.app import settings

        if time.monotonic() < self._database_down_until:
            self._give_back(message)
            return
        current = settings()
        db = database_for(current.database_url)
        try:
            db.ping()  # quick to fail (a fresh connection): the pool would wait 10 s
        except DatabaseError:
            status = "retry"
        else:
            status = park_message(db, current, kind, key, payload, error, datetime.now(UTC))
        if status == DONE:
            message.ack()
        else:  # the database is unavailable: relous.dead keeps it (it has no limit)
            self._database_down_until = time.monotonic() + DATABASE_BACKOFF_SECONDS
            self._give_back(message)

    def _give_back(self, message: Message) -> None:
        if self._timer is None:
            message.requeue()
        else:
            self._timer.call_after(GIVE_BACK_PAUSE_SECONDS, message.requeue)


def _inbound_payload(body: Any) -> Any:
    """The task's first argument (Celery's protocol 2: [args, kwargs, embed]), else the
    whole body."""
    if isinstance(body, (list, tuple)) and body and isinstance(body[0], (list, tuple)) \
            and body[0]:
        return body[0][0]
    return body


def _key(payload: Any, headers: dict[str, Any], raw: Any) -> str:
    """The message id when there is one, else the task id, else a digest of the body:
    two dead letters never share a parked row by accident."""
    if isinstance(payload, dict):
        for field in ("message_id", "messageId"):
            if payload.get(field):
                return str(payload[field])
    if headers.get("id"):
        return str(headers["id"])
    data = raw if isinstance(raw, bytes) else str(raw).encode("utf-8", "replace")
    return "dead:" + hashlib.sha256(data).hexdigest()[:32]


def _why(headers: dict[str, Any]) -> str:
    deaths = headers.get("x-death") or [{}]
    death = deaths[0] if isinstance(deaths, list) and deaths else {}
    death = death if isinstance(death, dict) else {}
    return (f"dead-lettered by RabbitMQ from {death.get('queue', 'a pipeline queue')} "
            f"({death.get('reason', 'unknown reason')}), past its delivery limit of "
            f"{broker.DELIVERY_LIMIT}")
