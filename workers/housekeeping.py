"""Use cases of beat's schedule: hand due replies over, repair after crashes, storm mode,
retention. Each takes the caller's transaction and is safe to run twice."""

from __future__ import annotations

from datetime import datetime, timedelta

from shared.rules.abuse import next_storm_mode
from shared.settings import Settings
from shared.store import campaigns, evidence, inbound, replies
from shared.store.db import Transaction


def due_campaigns(tx: Transaction, now: datetime) -> tuple[list[int], int]:
    """Expire stale replies; the campaigns with replies due now, and how many expired."""
    expired = replies.expire_replies(tx, now)
    return replies.campaigns_with_due_replies(tx, now), expired


def evaluate_storm_mode(tx: Transaction, now: datetime) -> list[tuple[str, bool, int]]:
    """Switch campaigns in and out of storm mode from their last minute of inbound.

    Returns (campaign, storm mode, messages in the last minute) for the ones that changed.
    """
    changed = []
    for campaign in campaigns.list_campaigns(tx):
        per_minute = inbound.inbound_since(tx, campaign.id, now - timedelta(minutes=1))
        storm = next_storm_mode(campaign.rules, campaign.storm_mode, per_minute)
        if storm != campaign.storm_mode:
            campaigns.set_storm_mode(tx, campaign.id, storm, now)
            changed.append((campaign.number, storm, per_minute))
    return changed


def purge(tx: Transaction, settings: Settings, now: datetime) -> dict[str, int]:
    """Apply the retention settings (see README, Privacy)."""
    return evidence.purge(tx, now, timedelta(days=settings.retention_days),
                          timedelta(days=settings.evidence_retention_days))
