"""Celery tasks: thin wrappers that load, call the rules in `shared/`, store, and return a
small dict. Every task is safe to run twice: the database decides (unique keys and
conditional updates), so `acks_late` redeliveries change nothing.
"""

from __future__ import annotations

import logging
import random
from datetime import UTC, datetime
from functools import cache

from shared import store
from shared.db import Database
from shared.providers import SendResult, SmsProvider, build_provider
from shared.replies import MAX_SEND_ATTEMPTS, retry_delay
from shared.settings import Settings
from shared.webhooks import DeliveryReceipt, InboundSms
from workers.app import app

log = logging.getLogger(__name__)


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


@app.task(name="relous.process_inbound")
def process_inbound(payload: dict) -> dict:
    """Deduplicate, reassemble, record and decide one inbound SMS."""
    settings = _settings()
    sms = InboundSms(**payload)
    now = _now()
    with database(settings.database_url).transaction() as tx:
        outcome = store.record_inbound(tx, sms, settings.secret_key, now)
    log.info("inbound campaign=%s verdict=%s reply=%s", outcome.campaign, outcome.verdict,
             outcome.reply_id)
    if outcome.reply_id is not None and outcome.due_at is not None and outcome.due_at <= now:
        _hand_over(outcome.reply_id)
    return {"verdict": outcome.verdict, "campaign": outcome.campaign,
            "reply_id": outcome.reply_id}


@app.task(name="relous.send_reply")
def send_reply(reply_id: int) -> dict:
    """Send one due reply, at most once: claim it, call the provider, record the answer."""
    settings = _settings()
    db = database(settings.database_url)
    with db.transaction() as tx:
        claimed = store.claim_reply(tx, reply_id, _now())
    if claimed is None:
        return {"reply_id": reply_id, "status": "not claimed"}
    try:
        result = provider(settings).send(claimed.to_number, claimed.campaign_number,
                                         claimed.text, client_ref=str(claimed.id))
    except Exception as error:
        # We cannot tell whether it went out: at most once means never again.
        log.exception("reply %s: provider raised %s", reply_id, type(error).__name__)
        result = SendResult("unknown", error=type(error).__name__, reason="exception")
    now = _now()
    retry_at = None
    if result.outcome == "retry" and claimed.attempts < MAX_SEND_ATTEMPTS:
        retry_at = now + retry_delay(claimed.attempts, random.random())
    with db.transaction() as tx:
        status = store.record_send(tx, claimed, result, now, retry_at)
    log.info("reply %s campaign=%s status=%s segments=%s price=%s %s", reply_id,
             claimed.campaign_number, status, result.segments, result.price, result.error)
    return {"reply_id": reply_id, "status": status}


@app.task(name="relous.apply_receipt")
def apply_receipt(payload: dict) -> dict:
    """Fold one delivery receipt into its reply (status, error code, final price)."""
    receipt = DeliveryReceipt(**payload)
    with database(_settings().database_url).transaction() as tx:
        result = store.apply_receipt(tx, receipt, _now())
    log.info("receipt %s status=%s -> %s", receipt.message_id, receipt.status, result)
    return {"message_id": receipt.message_id, "result": result}


@app.task(name="relous.flush_due_replies")
def flush_due_replies() -> dict:
    """Beat: hand every due pending reply to the workers (the delay waits in the database)."""
    with database(_settings().database_url).transaction() as tx:
        reply_ids = store.dispatch_due_replies(tx, _now())
    for reply_id in reply_ids:
        _hand_over(reply_id)
    return {"dispatched": len(reply_ids)}


@app.task(name="relous.recover_stale_sending")
def recover_stale_sending() -> dict:
    """Beat: replies whose worker died mid-send become `unknown` (see README)."""
    with database(_settings().database_url).transaction() as tx:
        recovered = store.recover_stale_sending(tx, _now())
    if recovered:
        log.warning("%s replies were lost mid-send and marked unknown (not resent)", recovered)
    return {"recovered": recovered}


def _hand_over(reply_id: int) -> None:
    """Queue a send now; if the broker refuses, beat's flush hands it over later."""
    try:
        send_reply.apply_async((reply_id,))
    except Exception as error:  # the reply stays pending in the database: nothing is lost
        log.warning("reply %s not queued now (%s); the next flush will", reply_id,
                    type(error).__name__)
