"""Celery tasks: thin wrappers that load, call the rules in `shared/`, store, and return a
small dict. Every task is safe to run twice: the database decides (unique keys and
conditional updates), so `acks_late` redeliveries change nothing.
"""

from __future__ import annotations

import itertools
import logging
import random
import sqlite3
import time
from collections.abc import Collection
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

import psycopg
import psycopg_pool
from celery.exceptions import Reject
from celery.worker.request import Request
from celery_batches import Batches, SimpleRequest
from celery_batches.trace import apply_batches_task

from shared import store
from shared.abuse import load_lexicon
from shared.db import Database
from shared.providers import SendResult, SmsProvider, build_provider
from shared.replies import MAX_SEND_ATTEMPTS, retry_delay
from shared.settings import Settings
from shared.webhooks import DeliveryReceipt, InboundSms
from workers.app import INBOUND_BATCH, app

log = logging.getLogger(__name__)

# One send task works this long at most, then hands the rest to a fresh task, so that a
# busy campaign does not hold a worker process (or its broker message) for long.
SEND_TASK_SECONDS = 20.0
# Replies claimed per round: about a second of sending at the default account rate.
SEND_BATCH = 30
RATE_BUCKET = "sms-provider"
# How long a partial batch of inbound messages (INBOUND_BATCH at most) waits for more.
INBOUND_FLUSH_SECONDS = 0.1
DONE, RETRY = "done", "retry"
# The database was down, restarting, or a deadlock victim: worth another try later.
TRANSIENT_DATABASE_ERRORS = (psycopg.OperationalError, psycopg_pool.PoolTimeout,
                             sqlite3.OperationalError)


@cache
def database(url: str) -> Database:
    """This process's database (its psycopg pool opens on first use, after any fork)."""
    return Database(url)


@cache
def provider(settings: Settings) -> SmsProvider:
    return build_provider(settings)


def _settings() -> Settings:
    return app.relous_settings  # type: ignore[attr-defined]


def _now() -> datetime:
    return datetime.now(UTC)


class InboundBatches(Batches):
    """celery-batches' buffering (up to INBOUND_BATCH messages, or what arrived within
    INBOUND_FLUSH_SECONDS, per call), with acknowledgements that keep the pipeline's
    promise: a message is acknowledged only once its batch has committed; it goes back to
    the queue when the database could not be used or the process running the batch died.
    """

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


@app.task(name="relous.process_inbound", base=InboundBatches, flush_every=INBOUND_BATCH,
          flush_interval=INBOUND_FLUSH_SECONDS)
def process_inbound(requests: list[SimpleRequest]) -> list[str]:
    """Deduplicate, reassemble, record, score and decide inbound SMS, one transaction per
    batch. Returns, per request, DONE or RETRY (the database could not be used: the
    message goes back to the queue)."""
    settings = _settings()
    statuses = [DONE] * len(requests)
    messages: dict[int, InboundSms] = {}
    for index, request in enumerate(requests):
        try:
            messages[index] = InboundSms(**request.args[0])
        except (TypeError, IndexError, KeyError) as error:
            log.error("inbound task %s: unreadable payload (%s), dropped", request.id,
                      type(error).__name__)
    indices = list(messages)
    now = _now()
    try:
        outcomes = _record_inbound(settings, [messages[i] for i in indices], now)
    except TRANSIENT_DATABASE_ERRORS as error:
        log.warning("inbound batch of %s back to the queue: database unavailable (%s)",
                    len(indices), type(error).__name__)
        return [RETRY if index in messages else DONE for index in range(len(requests))]
    except Exception:
        log.exception("inbound batch of %s failed; recording its messages one by one",
                      len(indices))
        outcomes = []
        for index in list(indices):
            try:
                outcomes.extend(_record_inbound(settings, [messages[index]], now))
            except TRANSIENT_DATABASE_ERRORS:
                statuses[index] = RETRY
                indices.remove(index)
            except Exception:
                # A message this code cannot record would block the queue if requeued.
                log.exception("inbound message %s could not be recorded, dropped",
                              messages[index].message_id)
                indices.remove(index)
    verdicts: dict[str, int] = {}
    due_campaigns = set()
    for index, outcome in zip(indices, outcomes, strict=True):
        verdicts[outcome.verdict] = verdicts.get(outcome.verdict, 0) + 1
        log.debug("inbound %s campaign=%s verdict=%s", requests[index].id, outcome.campaign,
                  outcome.verdict)
        if outcome.campaign_id is not None and outcome.due_at is not None \
                and outcome.due_at <= now:
            due_campaigns.add(outcome.campaign_id)
    log.info("relous.process_inbound: %s messages recorded, verdicts %s", len(indices),
             verdicts)
    for campaign_id in sorted(due_campaigns):
        _hand_over(campaign_id)
    return statuses


def _record_inbound(settings: Settings, messages: list[InboundSms],
                    now: datetime) -> list[store.InboundOutcome]:
    with database(settings.database_url).transaction() as tx:
        return store.record_inbound_batch(tx, messages, settings.secret_key, now,
                                          load_lexicon(settings.lexicon_path),
                                          settings.evidence_key)


@app.task(name="relous.send_due_replies")
def send_due_replies(campaign_id: int) -> dict:
    """Send a campaign's due replies in batches, under the budget and the shared rate."""
    settings = _settings()
    db = database(settings.database_url)
    deadline = time.monotonic() + SEND_TASK_SECONDS
    counts: dict[str, int] = {}
    while time.monotonic() < deadline:
        with db.transaction() as tx:
            batch = store.claim_batch(tx, campaign_id, _now(), SEND_BATCH)
        if not batch:
            break
        for reply in batch:
            status = _send_one(db, settings, reply)
            counts[status] = counts.get(status, 0) + 1
    else:
        _hand_over(campaign_id)  # more may be due: a fresh task goes on
    if counts:
        log.info("campaign %s sends: %s", campaign_id, counts)
    return {"campaign_id": campaign_id, **counts}


def _send_one(db: Database, settings: Settings, reply: store.ClaimedReply) -> str:
    """Wait for a token of the shared rate, then send one claimed reply at most once."""
    while True:
        with db.transaction() as tx:
            wait = store.take_send_token(tx, RATE_BUCKET, settings.sms_rate_per_second, _now())
        if wait == 0:
            break
        time.sleep(min(wait, 1.0))  # rate pacing, not synchronisation
    with db.transaction() as tx:
        if not store.start_sending(tx, reply, _now()):
            return "not claimed"
    try:
        result = provider(settings).send(reply.to_number, reply.campaign_number, reply.text,
                                         client_ref=str(reply.id))
    except Exception as error:
        # We cannot tell whether it went out: at most once means never again.
        log.exception("reply %s: provider raised %s", reply.id, type(error).__name__)
        result = SendResult("unknown", error=type(error).__name__, reason="exception")
    now = _now()
    retry_at = None
    if result.outcome == "retry" and reply.attempts < MAX_SEND_ATTEMPTS:
        retry_at = now + retry_delay(reply.attempts, random.random())
    with db.transaction() as tx:
        status = store.record_send(tx, reply, result, now, retry_at)
    log.info("reply %s campaign=%s status=%s segments=%s price=%s %s", reply.id,
             reply.campaign_number, status, result.segments, result.price, result.error)
    return status


@app.task(name="relous.apply_receipt")
def apply_receipt(payload: dict) -> dict:
    """Fold one delivery receipt into its reply (status, error code, final price)."""
    receipt = DeliveryReceipt(**payload)
    try:
        with database(_settings().database_url).transaction() as tx:
            result = store.apply_receipt(tx, receipt, _now())
    except TRANSIENT_DATABASE_ERRORS as error:
        # Acknowledging a failed task would lose the receipt: back to the queue.
        log.warning("receipt %s back to the queue: database unavailable (%s)",
                    receipt.message_id, type(error).__name__)
        raise Reject(type(error).__name__, requeue=True) from error
    log.info("receipt %s status=%s -> %s", receipt.message_id, receipt.status, result)
    return {"message_id": receipt.message_id, "result": result}


@app.task(name="relous.flush_due_replies")
def flush_due_replies() -> dict:
    """Beat: expire stale replies, then start sending for every campaign with due ones."""
    now = _now()
    with database(_settings().database_url).transaction() as tx:
        expired = store.expire_replies(tx, now)
        campaign_ids = store.campaigns_with_due_replies(tx, now)
    for campaign_id in campaign_ids:
        _hand_over(campaign_id)
    if expired:
        log.warning("%s replies expired unsent (budget, pause or provider)", expired)
    return {"campaigns": len(campaign_ids), "expired": expired}


@app.task(name="relous.recover_stale_sending")
def recover_stale_sending() -> dict:
    """Beat: repair replies left by dead workers (see README, at most once)."""
    with database(_settings().database_url).transaction() as tx:
        returned, lost = store.recover_stale_claims(tx, _now())
    if lost:
        log.warning("%s replies were lost mid-send and marked unknown (not resent)", lost)
    return {"returned": returned, "recovered": lost}


@app.task(name="relous.evaluate_storm_mode")
def evaluate_storm_mode() -> dict:
    """Beat: switch campaigns in and out of storm mode."""
    with database(_settings().database_url).transaction() as tx:
        changed = store.evaluate_storm_mode(tx, _now())
    for number, storm, per_minute in changed:
        log.warning("campaign %s storm mode %s (%s messages in the last minute)", number,
                    "ON" if storm else "off", per_minute)
    return {"changed": len(changed)}


@app.task(name="relous.purge")
def purge() -> dict:
    """Beat, daily: apply the retention settings (see README, Privacy)."""
    settings = _settings()
    with database(settings.database_url).transaction() as tx:
        purged = store.purge(tx, _now(), timedelta(days=settings.retention_days),
                             timedelta(days=settings.evidence_retention_days))
    log.info("retention applied: %s", purged)
    return purged


@app.task(name="relous.noop")
def noop() -> None:
    """Does nothing: the baseline drain rate of bench/pipeline.py."""


def _hand_over(campaign_id: int) -> None:
    """Queue a send round now; if the broker refuses, beat's next flush does it."""
    try:
        send_due_replies.apply_async((campaign_id,))
    except Exception as error:  # the replies stay pending in the database: nothing is lost
        log.warning("campaign %s sends not queued now (%s); the next flush will",
                    campaign_id, type(error).__name__)

