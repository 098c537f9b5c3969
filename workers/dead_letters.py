"""The dead-letter path: what RabbitMQ takes out of a pipeline queue past its delivery limit
(shared/broker.py) is parked here, where `relous parked` shows it, never dropped.

A message reaches the limit only when it keeps coming back: a worker process dies every
time it takes it, or the database stayed unavailable for DELIVERY_LIMIT returns. The step
runs in each worker's consumer, on the dead-letter queue, one message at a time.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from celery import bootsteps
from kombu import Consumer
from kombu.message import Message

from shared.broker import dead_letter_queue
from shared.store.db import database_for
from workers.parking import DONE, park_message, pause_before_giving_back

log = logging.getLogger(__name__)

# Task messages whose loss would lose data; the others (beat's schedule, send rounds) are
# derived again from PostgreSQL by the next run.
PARKED_KINDS = {"relous.process_inbound": "inbound", "relous.apply_receipt": "receipt"}


class DeadLetters(bootsteps.ConsumerStep):
    """Consume the dead-letter queue and park what it holds."""

    def get_consumers(self, channel: Any) -> list[Consumer]:
        consumer = Consumer(channel, queues=[dead_letter_queue()], accept=["json"],
                            callbacks=[park_dead_letter], prefetch_count=1,
                            on_decode_error=park_undecodable)
        return [consumer]


def park_dead_letter(body: Any, message: Message) -> None:
    headers = message.headers or {}
    task = str(headers.get("task", ""))
    kind = PARKED_KINDS.get(task)
    if kind is None:
        log.error("dead-lettered %s task %s dropped: the next scheduled run redoes its work",
                  task or "unknown", headers.get("id"))
        message.ack()
        return
    args = body[0] if isinstance(body, (list, tuple)) and body else []
    payload = args[0] if isinstance(args, (list, tuple)) and args else args
    _park(message, kind, _key(payload, headers), payload, _why(headers))


def park_undecodable(message: Message, error: Exception) -> None:
    body = message.body.decode("utf-8", "replace") if isinstance(message.body, bytes) \
        else str(message.body)
    _park(message, "inbound", str((message.headers or {}).get("id", "undecodable")), body,
          f"dead-lettered, undecodable: {type(error).__name__}")


def _park(message: Message, kind: str, key: str, payload: Any, error: str) -> None:
    from workers.app import settings

    current = settings()
    status = park_message(database_for(current.database_url), current, kind, key, payload,
                          error, datetime.now(UTC))
    if status == DONE:
        message.ack()
    else:  # the database is unavailable: the dead-letter queue keeps it (no limit there)
        pause_before_giving_back()
        message.requeue()


def _key(payload: Any, headers: dict[str, Any]) -> str:
    if isinstance(payload, dict):
        for field in ("message_id", "messageId"):
            if payload.get(field):
                return str(payload[field])
    return str(headers.get("id", "unknown"))


def _why(headers: dict[str, Any]) -> str:
    deaths = headers.get("x-death") or [{}]
    death = deaths[0] if isinstance(deaths, list) and deaths else {}
    reason = death.get("reason", "unknown") if isinstance(death, dict) else "unknown"
    delivered = headers.get("x-delivery-count", "?")
    return f"dead-lettered by RabbitMQ ({reason}) after {delivered} returns"
