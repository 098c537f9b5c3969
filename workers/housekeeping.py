"""Use cases of beat's schedule: hand due replies over, repair after crashes, storm mode,
retention. Each takes the caller's transaction and is safe to run twice."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from shared.metrics import INBOUND
from shared.rules.abuse import next_storm_mode
from shared.settings import Settings
from shared.store import campaigns, counters, evidence, inbound, replies
from shared.store.db import Transaction
from workers.inbound import text_key


def due_campaigns(tx: Transaction, now: datetime) -> tuple[list[int], int]:
    """Expire stale replies; the campaigns with replies due now, and how many expired."""
    expired = replies.expire_replies(tx, now)
    return replies.campaigns_with_due_replies(tx, now), expired


def evaluate_storm_mode(tx: Transaction, now: datetime) -> list[tuple[str, bool, int]]:
    """Switch campaigns in and out of storm mode from their last minute of inbound (by
    the provider's receive time: a backlog drained at once is not a storm).

    Returns (campaign, storm mode, messages in the last minute) for the ones that changed.
    """
    changed = []
    for campaign in campaigns.list_campaigns(tx):
        per_minute = inbound.inbound_since(tx, campaign.id, now - timedelta(minutes=1))
        storm = next_storm_mode(campaign.rules, campaign.storm_mode, per_minute,
                                campaign.storm_changed_at, now)
        if storm != campaign.storm_mode:
            campaigns.set_storm_mode(tx, campaign.id, storm, now)
            changed.append((campaign.number, storm, per_minute))
    return changed


def expire_parts(tx: Transaction, now: datetime) -> list[str]:
    """Record what arrived of SMS whose parts never all came (within twice PART_WINDOW),
    one suppressed message each: orphan parts are counted and visible, never silent.
    Returns the campaign number of each message recorded."""
    stale = inbound.stale_parts(tx, now - 2 * inbound.PART_WINDOW)
    groups: dict[tuple[int, str, str, int], list[dict[str, Any]]] = {}
    for part in stale:
        key = (part["campaign_id"], part["sender"], part["concat_ref"], part["total"])
        groups.setdefault(key, []).append(part)
    recorded = []
    for parts in groups.values():
        parts.sort(key=lambda part: part["part"])
        text = "".join(part["text"] for part in parts)
        inbound.record_incomplete(
            tx, parts, text_key(text), f"incomplete concatenated SMS: {len(parts)} of "
            f"{parts[0]['total']} parts within {inbound.PART_WINDOW}", now)
        recorded.append(parts[0]["number"])
    counters.count_many(tx, {(INBOUND, number, "suppress"): recorded.count(number)
                             for number in set(recorded)})
    return recorded


def purge(tx: Transaction, settings: Settings, now: datetime) -> dict[str, int]:
    """Apply the retention settings (see README, Privacy)."""
    return evidence.purge(tx, now, timedelta(days=settings.retention_days),
                          timedelta(days=settings.evidence_retention_days))
