"""Celery tasks: the transport. Each decodes its message, calls a use case (workers/
inbound.py, sending.py, housekeeping.py) and returns a small dict. Every task is safe to
run twice: the database decides (unique keys and conditional updates), so `acks_late`
redeliveries change nothing.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from functools import cache
from typing import Any

from celery import shared_task
from celery.exceptions import Reject
from celery_batches import SimpleRequest

from shared.rules.messages import DeliveryReceipt
from shared.settings import Settings
from shared.store import receipts, replies
from shared.store.db import database_for
from shared.vonage.sms import SmsProvider, build_provider
from workers import housekeeping, sending
from workers.app import INBOUND_BATCH, settings
from workers.batching import InboundBatches, record_requests
from workers.parking import RETRY, park_message, pause_before_giving_back, record_or_park

log = logging.getLogger(__name__)

# One send task works this long at most, then hands the rest to a fresh task, so that a
# busy campaign does not hold a worker process (or its broker message) for long.
SEND_TASK_SECONDS = 20.0
# How long a partial batch of inbound messages (INBOUND_BATCH at most) waits for more.
INBOUND_FLUSH_SECONDS = 0.1


@cache
def provider(settings: Settings) -> SmsProvider:
    return build_provider(settings)


def _now() -> datetime:
    return datetime.now(UTC)


@shared_task(name="relous.process_inbound", base=InboundBatches, flush_every=INBOUND_BATCH,
             flush_interval=INBOUND_FLUSH_SECONDS)
def process_inbound(requests: list[SimpleRequest]) -> list[str]:
    """Record a batch of inbound SMS; per request DONE, or RETRY (back to the queue)."""
    now = _now()
    statuses, outcomes = record_requests(settings(), requests, now)
    if RETRY in statuses:
        pause_before_giving_back()
    verdicts: dict[str, int] = {}
    due = set()
    for outcome in outcomes:
        verdicts[outcome.verdict] = verdicts.get(outcome.verdict, 0) + 1
        if outcome.campaign_id is not None and outcome.due_at is not None \
                and outcome.due_at <= now:
            due.add(outcome.campaign_id)
    log.info("relous.process_inbound: %s messages recorded, verdicts %s", len(outcomes),
             verdicts)
    for campaign_id in sorted(due):
        _hand_over(campaign_id)
    return statuses


@shared_task(name="relous.send_due_replies")
def send_due_replies(campaign_id: int) -> dict[str, Any]:
    """Send a campaign's due replies in batches, under the budget and the shared rate."""
    current = settings()
    counts, more = sending.send_due(database_for(current.database_url), current,
                                    provider(current), campaign_id, SEND_TASK_SECONDS)
    if more:
        _hand_over(campaign_id)  # more may be due: a fresh task goes on
    if counts:
        log.info("campaign %s sends: %s", campaign_id, counts)
    return {"campaign_id": campaign_id, **counts}


@shared_task(name="relous.apply_receipt")
def apply_receipt(payload: dict[str, Any]) -> dict[str, Any]:
    """Fold one delivery receipt into its reply (status, error code, final price); park it
    when it cannot be recorded, give it back to the queue while the database is down."""
    current = settings()
    db, now = database_for(current.database_url), _now()
    key = str(payload.get("message_id", "")) if isinstance(payload, dict) else ""
    try:
        receipt = DeliveryReceipt(**payload)
    except (TypeError, KeyError) as error:
        park_message(db, current, "receipt", key or "unreadable", payload,
                     f"unreadable payload: {type(error).__name__}", now)
        return {"message_id": key, "result": "parked"}
    status, result = record_or_park(db, current, "receipt", receipt.message_id, payload,
                                    lambda tx: receipts.apply_receipt(tx, receipt, now), now)
    if status == RETRY:
        # Acknowledging it would lose the receipt: back to the queue.
        log.warning("receipt %s back to the queue: database unavailable", receipt.message_id)
        pause_before_giving_back()
        raise Reject("database unavailable", requeue=True)
    log.info("receipt %s status=%s -> %s", receipt.message_id, receipt.status,
             result or "parked")
    return {"message_id": receipt.message_id, "result": result or "parked"}


@shared_task(name="relous.flush_due_replies")
def flush_due_replies() -> dict[str, Any]:
    """Beat: expire stale replies, then start sending for every campaign with due ones."""
    with database_for(settings().database_url).transaction() as tx:
        campaign_ids, expired = housekeeping.due_campaigns(tx, _now())
        incomplete = housekeeping.expire_parts(tx, _now())
    for campaign_id in campaign_ids:
        _hand_over(campaign_id)
    if expired:
        log.warning("%s replies expired unsent (budget, pause or provider)", expired)
    if incomplete:
        log.warning("%s concatenated SMS never completed: recorded, suppressed",
                    len(incomplete))
    return {"campaigns": len(campaign_ids), "expired": expired}


@shared_task(name="relous.recover_stale_sending")
def recover_stale_sending() -> dict[str, Any]:
    """Beat: repair replies left by dead workers (see README, at most once)."""
    with database_for(settings().database_url).transaction() as tx:
        returned, lost = replies.recover_stale_claims(tx, _now())
    if lost:
        log.warning("%s replies were lost mid-send and marked unknown (not resent)", lost)
    return {"returned": returned, "recovered": lost}


@shared_task(name="relous.evaluate_storm_mode")
def evaluate_storm_mode() -> dict[str, Any]:
    """Beat: switch campaigns in and out of storm mode; trip the kill switch of campaigns
    spending far above their usual rate."""
    with database_for(settings().database_url).transaction() as tx:
        changed = housekeeping.evaluate_storm_mode(tx, _now())
        tripped = housekeeping.trip_on_spend_rate(tx, _now())
    for number, storm, measured in changed:
        log.warning("campaign %s storm mode %s (%s)", number, "ON" if storm else "off",
                    measured)
    for number, reason in tripped:
        log.error("campaign %s sending HALTED: %s (relous sending start --campaign %s)",
                  number, reason, number)
    return {"changed": len(changed), "halted": len(tripped)}


@shared_task(name="relous.purge")
def purge() -> dict[str, Any]:
    """Beat, daily: apply the retention settings (see README, Privacy)."""
    current = settings()
    with database_for(current.database_url).transaction() as tx:
        purged = housekeeping.purge(tx, current, _now())
    log.info("retention applied: %s", purged)
    if purged["parked_expired"]:
        log.warning("%s parked message(s) deleted past the retention, never recorded",
                    purged["parked_expired"])
    return purged


@shared_task(name="relous.noop")
def noop() -> None:
    """Does nothing: the baseline drain rate of bench/pipeline.py."""


def _hand_over(campaign_id: int) -> None:
    """Queue a send round now; if the broker refuses, beat's next flush does it."""
    try:
        send_due_replies.apply_async((campaign_id,))
    except Exception as error:  # the replies stay pending in the database: nothing is lost
        log.warning("campaign %s sends not queued now (%s); the next flush will",
                    campaign_id, type(error).__name__)
