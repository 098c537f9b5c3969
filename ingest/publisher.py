"""Publishing webhook payloads to RabbitMQ, confirmed by the broker before we answer."""

from __future__ import annotations

from typing import Protocol

from celery import Celery

# How long a publish waits for RabbitMQ's confirm before the webhook answers 503.
PUBLISH_CONFIRM_TIMEOUT_SECONDS = 5.0


class BrokerUnavailable(RuntimeError):
    """The broker did not take the message: the webhook must answer 503."""


class Publisher(Protocol):
    def publish(self, task_name: str, payload: dict) -> None: ...
    def ping(self) -> None: ...
    def queue_depths(self) -> dict[str, int]: ...


class CeleryPublisher:
    """Sends a task message by name, persistent, and waits for the publisher confirm."""

    def __init__(self, celery: Celery) -> None:
        self._celery = celery

    def publish(self, task_name: str, payload: dict) -> None:
        try:
            self._celery.send_task(
                task_name, args=(payload,),
                # What logs and events show instead of the arguments (they hold a number).
                argsrepr="(<webhook payload>,)", kwargsrepr="{}",
                confirm_timeout=PUBLISH_CONFIRM_TIMEOUT_SECONDS,
            )
        except Exception as error:  # any failure to hand over means "not queued"
            raise BrokerUnavailable(type(error).__name__) from error

    def ping(self) -> None:
        with self._celery.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=3)

    def queue_depths(self) -> dict[str, int]:
        """Messages ready in each of the pipeline's queues (a queue declare each).

        AMQP reports ready messages only: the unacknowledged ones in workers' hands are not
        counted (at most one per worker process, prefetch being 1).
        """
        with self._celery.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=3)
            channel = conn.default_channel
            # Declared with the workers' own arguments (idempotent): a queue nobody has
            # declared yet reads 0 instead of failing the scrape.
            return {queue.name: queue.bind(channel).queue_declare().message_count
                    for queue in self._celery.conf.task_queues}
