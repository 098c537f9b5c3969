"""Publishing webhook payloads to RabbitMQ, confirmed by the broker before we answer."""

from __future__ import annotations

from typing import Protocol
from urllib.parse import quote, urlsplit

import requests
from celery import Celery
from kombu.utils.url import url_to_parts

# How long a publish waits for RabbitMQ's confirm before the webhook answers 503.
PUBLISH_CONFIRM_TIMEOUT_SECONDS = 5.0
MANAGEMENT_API_TIMEOUT_SECONDS = 3.0


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
        """Messages in each of the pipeline's queues.

        With RABBITMQ_MANAGEMENT_URL, ready plus unacknowledged (held by workers, up to a
        batch per process), from RabbitMQ's management API. Without it, ready only: AMQP's
        queue declare does not count what workers hold.
        """
        names = [queue.name for queue in self._celery.conf.task_queues]
        management_url = self._celery.relous_settings.rabbitmq_management_url  # type: ignore[attr-defined]
        if management_url:
            return management_queue_depths(management_url, self._celery.conf.broker_url, names)
        with self._celery.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=3)
            channel = conn.default_channel
            # Declared with the workers' own arguments (idempotent): a queue nobody has
            # declared yet reads 0 instead of failing the scrape.
            return {queue.name: queue.bind(channel).queue_declare().message_count
                    for queue in self._celery.conf.task_queues}


def management_queue_depths(management_url: str, broker_url: str,
                            names: list[str]) -> dict[str, int]:
    """Ready + unacknowledged messages per queue of the broker URL's virtual host, from
    the management API (`GET /api/queues/{vhost}`). Credentials: the management URL's
    own, else the broker URL's. A queue not declared yet reads 0."""
    broker = url_to_parts(broker_url)
    vhost = broker.path or "/"
    management = urlsplit(management_url)
    auth = (management.username or broker.username or "guest",
            management.password or broker.password or "guest")
    netloc = (management.hostname or "") + (f":{management.port}" if management.port else "")
    base = management._replace(netloc=netloc).geturl().rstrip("/")
    response = requests.get(f"{base}/api/queues/{quote(vhost, safe='')}",
                            params={"columns": "name,messages"}, auth=auth,
                            timeout=MANAGEMENT_API_TIMEOUT_SECONDS)
    response.raise_for_status()
    found = {queue["name"]: int(queue.get("messages") or 0) for queue in response.json()}
    return {name: found.get(name, 0) for name in names}
