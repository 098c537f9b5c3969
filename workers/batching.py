"""The inbound batch's acknowledgement policy: a message is acknowledged only once its
batch has committed, or once it is parked (workers/parking.py); it goes back to the queue
when the database could not be used or the process running the batch died.
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
from shared.store.db import Transaction, database_for
from shared.store.failures import DatabaseContention, DatabaseUnavailable
from shared.vonage.webhooks import is_identifier
from workers.inbound import InboundOutcome, Keys, judge_batch
from workers.parking import DONE, RETRY, park_message, record_or_park

log = logging.getLogger(__name__)


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
        """A message delivered again runs in a batch of its own: if it kills the process
        that records it (a poison message), only it comes back, again and again until
        the queue's delivery limit dead-letters it; its former batch-mates are recorded."""
        fresh = [request for request in requests if not _redelivered(request)]
        groups = ([fresh] if fresh else []) + [[request] for request in requests
                                               if _redelivered(request)]
        return [self._flush_group(group) for group in groups]

    def _flush_group(self, requests: list[Request]) -> Any:
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


def _redelivered(request: Request) -> bool:
    return bool((request.delivery_info or {}).get("redelivered")
                or (request.message.headers or {}).get("x-delivery-count"))


def record_requests(settings: Settings, requests: list[SimpleRequest], now: datetime,
                    ) -> tuple[list[str], list[InboundOutcome]]:
    """Record a batch of inbound task requests received at `now`: per request DONE
    (recorded or parked) or RETRY (back to the queue), and the outcomes recorded.

    The batch is tried in one transaction; if it fails otherwise than by an unavailable
    database, each message is tried alone, so that one that cannot be recorded is parked
    without taking its batch-mates down.
    """
    db = database_for(settings.database_url)
    statuses = [DONE] * len(requests)
    messages: dict[int, InboundSms] = {}
    for index, request in enumerate(requests):
        try:
            messages[index] = InboundSms(**request.args[0])
            if not is_identifier(messages[index].message_id):  # not from our web
                raise KeyError("message_id")
        except (TypeError, IndexError, KeyError) as error:
            messages.pop(index, None)
            statuses[index] = park_message(db, settings, "inbound", str(request.id),
                                           request.args, f"unreadable payload: "
                                           f"{type(error).__name__}", now)
    indices = list(messages)
    try:
        return statuses, record_messages(settings, [messages[i] for i in indices], now)
    except (DatabaseUnavailable, DatabaseContention) as error:
        # A lock wait that timed out is logged: a session holding a campaign's row (an
        # operator's open transaction…) is visible here, not silent.
        log.warning("inbound batch of %s back to the queue: database %s (%s)", len(indices),
                    "unavailable" if isinstance(error, DatabaseUnavailable) else "contention",
                    error)
        return [RETRY if index in messages else status
                for index, status in enumerate(statuses)], []
    except Exception as error:
        log.warning("inbound batch of %s failed (%s); recording its messages one by one",
                    len(indices), type(error).__name__)
    outcomes = []
    for index in indices:
        sms = messages[index]

        def judge_alone(tx: Transaction, sms: InboundSms = sms) -> InboundOutcome:
            return judge_batch(tx, [sms], _keys(settings), now,
                               load_lexicon(settings.lexicon_path))[0]

        statuses[index], outcome = record_or_park(db, settings, "inbound", sms.message_id,
                                                  sms.to_payload(), judge_alone, now)
        if outcome is not None:
            outcomes.append(outcome)
    return statuses, outcomes


def record_messages(settings: Settings, messages: list[InboundSms],
                    now: datetime) -> list[InboundOutcome]:
    """One transaction of the inbound use case."""
    with database_for(settings.database_url).transaction() as tx:
        return judge_batch(tx, messages, _keys(settings), now,
                           load_lexicon(settings.lexicon_path))


def _keys(settings: Settings) -> Keys:
    return Keys(settings.secret_key, settings.evidence_key)
