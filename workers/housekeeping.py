"""Use cases of beat's schedule: hand due replies over, repair after crashes, storm mode,
retention. Each takes the caller's transaction and is safe to run twice."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from shared.metrics import INBOUND as INBOUND_METRIC
from shared.rules.abuse import next_storm_mode, storm_threshold
from shared.rules.baselines import Threshold
from shared.settings import Settings
from shared.store import (
    alerts,
    budgets,
    campaigns,
    counters,
    evidence,
    inbound,
    parked,
    replies,
    rollups,
    texts,
)
from shared.store.db import Transaction
from shared.store.rollups import INBOUND, SPEND
from workers.inbound import text_key

MINUTE = timedelta(minutes=1)
SPEND_WINDOW = timedelta(minutes=10)


def due_campaigns(tx: Transaction, now: datetime) -> tuple[list[int], int]:
    """Expire stale replies; the campaigns with replies due now, and how many expired."""
    expired = replies.expire_replies(tx, now)
    return replies.campaigns_with_due_replies(tx, now), expired


def evaluate_storm_mode(tx: Transaction, now: datetime) -> list[tuple[str, bool, str]]:
    """Switch campaigns in and out of storm mode from their last minute of inbound (by
    the provider's receive time: a backlog drained at once is not a storm), against the
    campaign's adaptive threshold; each change raises an alert.

    Returns (campaign, storm mode, what was measured) for the ones that changed.
    """
    changed = []
    for campaign in campaigns.list_campaigns(tx):
        per_minute = inbound.inbound_since(tx, campaign.id, now - MINUTE)
        threshold = storm_threshold(campaign.rules, rollups.baseline(
            tx, campaign, INBOUND, MINUTE, now))
        storm = campaign.rules.mode("storm") != "off" and next_storm_mode(
            campaign.rules, campaign.storm_mode, per_minute, campaign.storm_changed_at, now,
            threshold.value)
        if storm != campaign.storm_mode:
            campaigns.set_storm_mode(tx, campaign.id, storm, now)
            measured = (f"{per_minute} messages in the last minute, threshold "
                        f"{threshold.explain()}")
            alerts.raise_alert(tx, f"storm:{campaign.number}:{'on' if storm else 'off'}:"
                               f"{now.isoformat()}", f"anti-relous: campaign {campaign.number}"
                               f" storm mode {'ON' if storm else 'off'} ({measured})", now)
            changed.append((campaign.number, storm, measured))
    return changed


def trip_on_spend_rate(tx: Transaction, now: datetime) -> list[tuple[str, str]]:
    """Halt the sending of campaigns whose last 10 minutes' spend passes their adaptive
    threshold; only a person starts it again. Returns (campaign, reason) for each trip.

    The threshold is max(floor, ratio × the campaign's usual peak 10 minutes), where the
    floor is the larger of `spend_trip_floor_euros` and the campaign's hourly cap: an
    operator who raised the cap for a broadcast expects that pace, and a whole hour's cap
    spent in 10 minutes is the surprise this trip is for."""
    tripped = []
    for campaign in campaigns.list_campaigns(tx):
        if campaign.sending_halted:
            continue
        spent = rollups.total_since(tx, campaign.id, SPEND, now - SPEND_WINDOW + MINUTE)
        if not spent:
            continue
        rules, budget = campaign.rules, budgets.budget_of(tx, campaign.id, now)
        floor = max(Decimal(str(rules.spend_trip_floor_euros)),
                    budget.hourly_cap if budget and budget.hourly_cap else Decimal(0))
        threshold = Threshold(float(floor), rules.spend_trip_ratio,
                              rollups.baseline(tx, campaign, SPEND, SPEND_WINDOW, now),
                              rules.baseline_days, rules.baseline_peak_day)
        if spent > Decimal(str(threshold.value)):
            reason = (f"spend rate: {spent:.2f} EUR in 10 min, threshold "
                      f"{threshold.explain()} EUR")
            campaigns.halt_sending(tx, campaign.id, reason, now)
            tripped.append((campaign.number, reason))
    return tripped


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
    counters.count_many(tx, {(INBOUND_METRIC, number, "suppress"): recorded.count(number)
                             for number in set(recorded)})
    return recorded


def purge(tx: Transaction, settings: Settings, now: datetime) -> dict[str, int]:
    """Apply the retention settings (see README, Privacy), and drop the defences' working
    data past its use: rollups after ROLLUP_DAYS, band keys after a day, usual texts
    not seen for ROLLUP_DAYS. The retention comes last: dropping a month of messages
    locks their tables until this transaction commits. Dedup keys are kept past the
    signature's max age (a signed webhook replayed within it must stay a duplicate)."""
    rollups_purged = rollups.purge_rollups(tx, now)
    text_signals = texts.purge_texts(
        tx, now - timedelta(hours=texts.BANDS_KEPT_HOURS),
        now - timedelta(days=rollups.ROLLUP_DAYS))
    horizon = max(inbound.DEDUP_HORIZON,
                  timedelta(seconds=settings.signature_max_age) + timedelta(days=1))
    parked_expired = parked.purge_parked(tx, now - timedelta(days=settings.retention_days))
    purged = evidence.purge(tx, now, timedelta(days=settings.retention_days),
                            timedelta(days=settings.evidence_retention_days), horizon)
    purged["rollups"] = rollups_purged
    purged["parked_expired"] = parked_expired
    purged["text_signals"] = text_signals
    return purged
