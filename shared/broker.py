"""What the publisher (web) and the consumers (workers) share about RabbitMQ: the exchange,
the queues and routes, publisher confirms, the publisher itself and queue depths.

The web publishes task messages by name through a Celery app of its own that knows no
task (`create_publisher`); the workers' app (workers/app.py) adds its consumer policy to
the same `broker_config`.
"""

from __future__ import annotations

from typing import Any, Protocol
from urllib.parse import quote, urlsplit

import requests
from celery import Celery
from kombu import Exchange, Queue
from kombu.utils.url import url_to_parts

from shared import embedded_broker
from shared.settings import Settings

INBOUND_QUEUE = "relous.inbound"
REPLIES_QUEUE = "relous.replies"
EXCHANGE = "relous"
# Where RabbitMQ puts a message past its delivery limit; the workers park what it holds
# (workers/dead_letters.py).
DEAD_LETTER_EXCHANGE = DEAD_LETTER_QUEUE = "relous.dead"
# Deliveries of one message before RabbitMQ dead-letters it: far above what crashes and
# restarts give back (a poison message is parked by the task itself long before), so only
# a message that kills every worker that takes it gets there.
DELIVERY_LIMIT = 200
# How long a publish waits for RabbitMQ's confirm before the webhook answers 503.
PUBLISH_CONFIRM_TIMEOUT_SECONDS = 5.0
MANAGEMENT_API_TIMEOUT_SECONDS = 3.0
_TO_REPLIES = {"queue": REPLIES_QUEUE, "routing_key": REPLIES_QUEUE}
# Tasks that run on the replies queue: sending, beat's schedule and delivery receipts,
# so that none of them waits behind a backlog of inbound SMS. Only inbound SMS (and the
# benchmark's no-op) use the inbound queue.
REPLIES_TASKS = ("relous.send_due_replies", "relous.flush_due_replies",
                 "relous.recover_stale_sending", "relous.purge", "relous.evaluate_storm_mode",
                 "relous.apply_receipt", "relous.alerts")


class BrokerUnavailable(RuntimeError):
    """The broker did not take the message: the webhook must answer 503."""


def quorum_arguments() -> dict[str, Any]:
    """The pipeline queues' arguments: replicated quorum queues (Raft), a delivery limit
    whose overflow goes to the dead-letter exchange at least once (RabbitMQ's default would
    drop it), and a full queue refusing publishes (a 503 to Vonage) rather than dropping
    its oldest message."""
    return {"x-queue-type": "quorum", "x-delivery-limit": DELIVERY_LIMIT,
            "x-dead-letter-exchange": DEAD_LETTER_EXCHANGE,
            "x-dead-letter-routing-key": DEAD_LETTER_QUEUE,
            "x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"}


def dead_letter_queue() -> Queue:
    """The queue that receives dead-lettered messages, a quorum queue itself."""
    exchange = Exchange(DEAD_LETTER_EXCHANGE, type="direct", durable=True)
    return Queue(DEAD_LETTER_QUEUE, exchange, routing_key=DEAD_LETTER_QUEUE, durable=True,
                 queue_arguments={"x-queue-type": "quorum"})


def pipeline_queues(settings: Settings) -> tuple[Queue, Queue]:
    """The inbound and replies queues: quorum queues on RabbitMQ; plain ones on the
    embedded broker, which knows no queue arguments."""
    exchange = Exchange(EXCHANGE, type="direct", durable=True)
    arguments = None if settings.uses_embedded_broker else quorum_arguments()
    return (Queue(INBOUND_QUEUE, exchange, routing_key=INBOUND_QUEUE, durable=True,
                  queue_arguments=arguments),
            Queue(REPLIES_QUEUE, exchange, routing_key=REPLIES_QUEUE, durable=True,
                  queue_arguments=arguments))


def broker_config(settings: Settings) -> dict[str, Any]:
    """The Celery settings both sides need: broker, confirms, queues, routes, serialiser."""
    config: dict[str, Any] = {
        "broker_url": settings.broker_url,
        "broker_connection_timeout": 3,
        "broker_connection_retry_on_startup": True,
        # Publisher confirms: a publish returns only once RabbitMQ has the message.
        "broker_transport_options": {"confirm_publish": True},
        "task_queues": pipeline_queues(settings),
        "task_default_queue": INBOUND_QUEUE,
        "task_default_exchange": EXCHANGE,
        "task_default_routing_key": INBOUND_QUEUE,
        "task_routes": dict.fromkeys(REPLIES_TASKS, _TO_REPLIES),
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_ignore_result": True,
        "result_backend": None,
        "task_publish_retry": True,
        # Short: the web answers Vonage within its 15 s timeout (503 lets Vonage retry).
        "task_publish_retry_policy": {"max_retries": 2, "interval_start": 0.2,
                                      "interval_step": 0.3, "interval_max": 0.5},
    }
    if settings.uses_embedded_broker:
        # The embedded broker (shared/embedded_broker.py); `filesystem://`, the previous
        # default, names it too: kombu's own file transport loses messages on a crash.
        embedded_broker.register()
        config["broker_url"] = f"{embedded_broker.SCHEME}://"
        config["broker_transport_options"] = {
            "data_folder": str(settings.broker_folder.resolve())}
    return config


class Publisher(Protocol):
    def publish(self, task_name: str, payload: dict[str, Any]) -> None: ...
    def ping(self) -> None: ...
    def queue_depths(self) -> dict[str, int]: ...


def publisher_celery(settings: Settings) -> Celery:
    """A Celery app that only publishes: no task, never the process's current app."""
    celery = Celery("relous-publisher", set_as_current=False)
    celery.config_from_object(broker_config(settings))
    return celery


def create_publisher(settings: Settings) -> CeleryPublisher:
    """The web's publisher (and the CLI's queue depths)."""
    return CeleryPublisher(publisher_celery(settings), settings.rabbitmq_management_url)


class _NoResult:
    def __init__(self, task_id: str) -> None:
        self.id = task_id


class CeleryPublisher:
    """Sends a task message by name, persistent, and waits for the publisher confirm."""

    def __init__(self, celery: Celery, management_url: str | None = None) -> None:
        self._celery = celery
        self._management_url = management_url

    def publish(self, task_name: str, payload: dict[str, Any]) -> None:
        try:
            self._celery.send_task(
                task_name, args=(payload,),
                # What logs and events show instead of the arguments (they hold a number).
                argsrepr="(<webhook payload>,)", kwargsrepr="{}", ignore_result=True,
                # No AsyncResult: building one loads the result backend in every new
                # thread (an entry-points scan, a third of a publish's time).
                result_cls=_NoResult,
                confirm_timeout=PUBLISH_CONFIRM_TIMEOUT_SECONDS,
            )
        except Exception as error:  # any failure to hand over means "not queued"
            raise BrokerUnavailable(type(error).__name__) from error

    def ping(self) -> None:
        with self._celery.connection_for_write() as conn:
            _connect(conn)

    def queue_depths(self) -> dict[str, int]:
        """Messages in each of the pipeline's queues.

        With RABBITMQ_MANAGEMENT_URL, ready plus unacknowledged (held by workers, up to a
        batch per process), from RabbitMQ's management API. Without it, ready only: AMQP's
        queue declare does not count what workers hold.
        """
        queues = self._celery.conf.task_queues
        if self._management_url:
            return management_queue_depths(self._management_url,
                                           self._celery.conf.broker_url,
                                           [queue.name for queue in queues])
        with self._celery.connection_for_write() as conn:
            _connect(conn)
            channel = conn.default_channel
            # Declared with the workers' own arguments (idempotent): a queue nobody has
            # declared yet reads 0 instead of failing the scrape.
            return {queue.name: queue.bind(channel).queue_declare().message_count
                    for queue in queues}


def _connect(conn: Any) -> None:
    """Connect once, trying each URL of a failover list (`url1;url2;url3`) in turn: a
    cluster with one live node answers."""
    conn.ensure_connection(max_retries=max(1, len(conn.alt)), timeout=3)


def management_queue_depths(management_url: str, broker_url: str,
                            names: list[str]) -> dict[str, int]:
    """Ready + unacknowledged messages per queue of the broker URL's virtual host, from
    the management API (`GET /api/queues/{vhost}`). A queue not declared yet reads 0."""
    queues = _management_get(management_url, broker_url, "queues",
                             {"columns": "name,messages"})
    found = {queue["name"]: int(queue.get("messages") or 0) for queue in queues}
    return {name: found.get(name, 0) for name in names}


def management_connections(management_url: str, broker_url: str) -> int:
    """Client connections open on the broker URL's virtual host (management API)."""
    return len(_management_get(management_url, broker_url, "vhosts/{vhost}/connections",
                               {"columns": "name"}))


def _management_get(management_url: str, broker_url: str, path: str,
                    params: dict[str, str]) -> Any:
    """`GET /api/PATH` for the broker URL's virtual host (`{vhost}` in PATH, else appended).
    Credentials: the management URL's own, else the broker URL's. A failover list
    (`url1;url2`, the nodes of one cluster) is read through its first URL."""
    broker = url_to_parts(broker_url.split(";")[0])
    vhost = quote(broker.path or "/", safe="")
    management = urlsplit(management_url)
    auth = (management.username or broker.username or "guest",
            management.password or broker.password or "guest")
    netloc = (management.hostname or "") + (f":{management.port}" if management.port else "")
    base = management._replace(netloc=netloc).geturl().rstrip("/")
    path = path.format(vhost=vhost) if "{vhost}" in path else f"{path}/{vhost}"
    response = requests.get(f"{base}/api/{path}", params=params, auth=auth,
                            timeout=MANAGEMENT_API_TIMEOUT_SECONDS)
    response.raise_for_status()
    return response.json()
