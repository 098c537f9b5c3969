"""Use case: send a campaign's due replies, each at most once, under the budget guard and
the shared send rate.

A reply is claimed with its reservation (store), marked `sending` and committed, then
handed to the provider once; what the provider said is recorded and settles the
reservation. A crash in between leaves `claimed` (returned later) or `sending` (never
resent): see the README, "At most once".
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime

from shared.rules.messages import SendResult
from shared.rules.replies import MAX_SEND_ATTEMPTS, retry_delay
from shared.settings import Settings
from shared.store import replies
from shared.store.db import Database
from shared.vonage.sms import SmsProvider

log = logging.getLogger(__name__)

# Replies claimed per round: about a second of sending at the default account rate.
SEND_BATCH = 30
RATE_BUCKET = "sms-provider"


def _now() -> datetime:
    return datetime.now(UTC)


def send_due(db: Database, settings: Settings, provider: SmsProvider, campaign_id: int,
             seconds: float) -> tuple[dict[str, int], bool]:
    """Send a campaign's due replies in rounds for about `seconds`; the counts by status,
    and whether more may be due (the caller hands the rest to a fresh task)."""
    deadline = time.monotonic() + seconds
    counts: dict[str, int] = {}
    while time.monotonic() < deadline:
        with db.transaction() as tx:
            batch = replies.claim_batch(tx, campaign_id, _now(), SEND_BATCH)
        if not batch:
            return counts, False
        for reply in batch:
            status = send_one(db, settings, provider, reply)
            counts[status] = counts.get(status, 0) + 1
    return counts, True


def send_one(db: Database, settings: Settings, provider: SmsProvider,
             reply: replies.ClaimedReply, jitter: Callable[[], float] = random.random) -> str:
    """Wait for a token of the shared rate, then send one claimed reply at most once."""
    while True:
        with db.transaction() as tx:
            wait = replies.take_send_token(tx, RATE_BUCKET, settings.sms_rate_per_second,
                                           _now())
        if wait == 0:
            break
        time.sleep(min(wait, 1.0))  # rate pacing, not synchronisation
    with db.transaction() as tx:
        if not replies.start_sending(tx, reply, _now()):
            return "not claimed"
    try:
        result = provider.send(reply.to_number, reply.campaign_number, reply.text,
                               client_ref=str(reply.id))
    except Exception as error:
        # We cannot tell whether it went out: at most once means never again.
        log.exception("reply %s: provider raised %s", reply.id, type(error).__name__)
        result = SendResult("unknown", error=type(error).__name__, reason="exception")
    now = _now()
    retry_at = None
    if result.outcome == "retry" and reply.attempts < MAX_SEND_ATTEMPTS:
        retry_at = now + retry_delay(reply.attempts, jitter())
    with db.transaction() as tx:
        status = replies.record_send(tx, reply, result, now, retry_at)
    log.info("reply %s campaign=%s status=%s segments=%s price=%s %s", reply.id,
             reply.campaign_number, status, result.segments, result.price, result.error)
    return status
