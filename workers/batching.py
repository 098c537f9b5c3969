"""The inbound batch's acknowledgement policy: a message is acknowledged only once its
batch has committed; it goes back to the queue when the database could not be used or
the process running the batch died; a message the code cannot record is dropped alone,
with an error naming it, so that it does not block its batch-mates forever.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Collection
from datetime import datetime
from typing import Any

from celery.worker.request import Request
from celery_batches import Batches, SimpleRequest
from celery_batches.trace import apply_batches_task

from shared.rules.abuse import load_lexicon
from shared.rules.messages import InboundSms
from shared.settings import Settings
from shared.store.db import DatabaseUnavailable, database_for
from workers.inbound import InboundOutcome, Keys, judge_batch

log = logging.getLogger(__name__)

DONE, RETRY = "done", "retry"


class InboundBatches(Batches):
    """celery-batches' buffering (up to a batch of messages, or what arrived within its
    flush interval, per call), with the acknowledgements of this module's docstring."""

    def Strategy(self, task: Batches, app: Any, consumer: Any) -> Any:
        """Called at each (re)connection to the broker. Messages buffered on a lost
        connection cannot be acknowledged any more and RabbitMQ redelivers them, and the
        consumer's timer was cleared with the flush timer in it (as Celery clears its own
        queues in `Consumer.on_close`): start again from an empty buffer."""
        for stale in (self._buffer, self._pending):
            while not stale.empty():
                stale.get_nowait()
        self._tref = None
        self._count = itertools.count(1)
        return super().Strategy(task, app, consumer)

    def flush(self, requests: Collection[Request]) -> Any:
        requests = list(requests)
        batch = ([SimpleRequest.from_request(request) for request in requests],)

        def settle(statuses: object) -> None:
            if not isinstance(statuses, list) or len(statuses) != len(requests):
                statuses = [RETRY] * len(requests)  # the batch itself failed unexpectedly
            for request, status in zip(requests, statuses, strict=True):
                if status == RETRY:
                    request.reject(requeue=True)
                else:
                    request.acknowledge()

        def process_lost(_error: object) -> None:
            for request in requests:
                request.reject(requeue=True)

        return self._pool.apply_async(apply_batches_task, (self, batch, 0, None),
                                      callback=settle, error_callback=process_lost)


def record_requests(settings: Settings, requests: list[SimpleRequest], now: datetime,
                    ) -> tuple[list[str], list[InboundOutcome]]:
    """Record a batch of inbound task requests received at `now`: per request DONE or
    RETRY (the database could not be used: back to the queue), and the outcomes of those
    recorded."""
    statuses = [DONE] * len(requests)
    messages: dict[int, InboundSms] = {}
    for index, request in enumerate(requests):
        try:
            messages[index] = InboundSms(**request.args[0])
        except (TypeError, IndexError, KeyError) as error:
            log.error("inbound task %s: unreadable payload (%s), dropped", request.id,
                      type(error).__name__)
    indices = list(messages)
    try:
        outcomes = record_messages(settings, [messages[i] for i in indices], now)
    except DatabaseUnavailable as error:
        log.warning("inbound batch of %s back to the queue: database unavailable (%s)",
                    len(indices), error)
        return [RETRY if index in messages else DONE for index in range(len(requests))], []
    except Exception:
        log.exception("inbound batch of %s failed; recording its messages one by one",
                      len(indices))
        outcomes = []
        for index in list(indices):
            try:
                outcomes.extend(record_messages(settings, [messages[index]], now))
            except DatabaseUnavailable:
                statuses[index] = RETRY
                indices.remove(index)
            except Exception:
                # A message this code cannot record would block the queue if requeued.
                log.exception("inbound message %s could not be recorded, dropped",
                              messages[index].message_id)
                indices.remove(index)
    return statuses, outcomes


def record_messages(settings: Settings, messages: list[InboundSms],
                    now: datetime) -> list[InboundOutcome]:
    """One transaction of the inbound use case."""
    with database_for(settings.database_url).transaction() as tx:
        return judge_batch(tx, messages, Keys(settings.secret_key, settings.evidence_key), now,
                           load_lexicon(settings.lexicon_path))
