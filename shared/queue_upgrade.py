"""The broker's side of moving to quorum queues (README, "Moving to quorum queues"): the
classic pipeline queues of an earlier version are replaced, never with a message in them.
"""

from __future__ import annotations

import contextlib
from typing import Any

from amqp.exceptions import AMQPError

from shared.broker import (
    dead_letter_queue,
    management_connections,
    pipeline_queues,
    publisher_celery,
    quorum_arguments,
)
from shared.settings import Settings

CLOSE_ERRORS = (AMQPError, OSError)


class QueuesBusy(RuntimeError):
    """A classic queue still holds messages or has consumers: it cannot be replaced yet."""


def upgrade_queues(settings: Settings, clients_stopped: bool = False) -> list[str]:
    """Replace the classic pipeline queues of a deployment that predates quorum queues, and
    declare the dead-letter path; return what was done, one line per queue.

    A queue's type cannot change in place, so each classic queue is deleted and declared
    again as a quorum queue. RabbitMQ deletes it only if it has no ready message and no
    consumer (checked by the broker, atomically). Neither check sees a message that a
    client still holds unacknowledged after cancelling its consumer (a worker in its warm
    shutdown): it would have no queue to go back to. So no client may be connected to the
    virtual host: checked with the management API when RABBITMQ_MANAGEMENT_URL is set,
    else stated by the operator (`clients_stopped`). Otherwise `QueuesBusy` says why, and
    nothing changes. Running it again, or on quorum queues, changes nothing.
    """
    if settings.uses_embedded_broker:
        return ["the embedded broker has no queue types: nothing to do"]
    if settings.rabbitmq_management_url:
        clients = management_connections(settings.rabbitmq_management_url,
                                          settings.broker_url)
        if clients:
            raise QueuesBusy(f"{clients} client(s) still connected to the virtual host (the "
                             "web, workers or beat): scale them to 0, then run this again")
    elif not clients_stopped:
        raise QueuesBusy("without RABBITMQ_MANAGEMENT_URL this cannot see whether a worker "
                         "still holds messages (deleting their queue would lose them): "
                         "scale web, worker and beat to 0 and pass --clients-stopped")
    done = []
    with publisher_celery(settings).connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=3)
        dead_letter_queue().bind(conn.default_channel).declare()
        for queue in pipeline_queues(settings):
            kind = _queue_type(conn, queue.name)
            if kind == "quorum":
                done.append(f"{queue.name}: already a quorum queue")
                continue
            if kind == "other":
                raise QueuesBusy(f"{queue.name} is a quorum queue with other arguments than "
                                 "this version's: see README, \"Moving to quorum queues\"")
            if kind == "classic":
                try:
                    conn.default_channel.queue_delete(queue.name, if_unused=True, if_empty=True)
                except conn.channel_errors as error:
                    raise QueuesBusy(
                        f"{queue.name} still holds messages or has consumers ({error}): "
                        "start the previous version's workers alone until it is empty, "
                        "stop them, then run this again") from error
            queue.bind(conn.default_channel).declare()
            done.append(f"{queue.name}: {'replaced by' if kind else 'declared as'} "
                        "a quorum queue")
    return done


def _queue_type(conn: Any, name: str) -> str | None:
    """'quorum' (with this version's arguments), 'classic', 'other', or None when the queue
    does not exist. A declare whose arguments differ fails (and closes its channel)."""
    attempts: list[tuple[str, dict[str, Any] | None]] = [
        ("quorum", quorum_arguments()), ("classic", None)]
    if not _declares(conn, name, passive=True):
        return None
    for kind, arguments in attempts:
        if _declares(conn, name, arguments=arguments):
            return kind
    return "other"


def _declares(conn: Any, name: str, passive: bool = False,
              arguments: dict[str, Any] | None = None) -> bool:
    channel = conn.channel()
    try:
        channel.queue_declare(name, passive=passive, durable=True, auto_delete=False,
                              arguments=arguments)
        return True
    except conn.channel_errors:
        return False
    finally:
        _close_quietly(channel)


def _close_quietly(channel: Any) -> None:
    with contextlib.suppress(*CLOSE_ERRORS):  # already closed by the broker's refusal
        channel.close()
