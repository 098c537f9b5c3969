"""What operators read: `relous status` and the gauges of /metrics."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from shared.store.budgets import budget_of
from shared.store.campaigns import EVERY_CAMPAIGN, global_halt, list_campaigns
from shared.store.db import Transaction
from shared.store.parked import parked_counts


def campaign_overview(tx: Transaction, now: datetime) -> list[dict[str, Any]]:
    """What `relous status` shows, per campaign."""
    overview = []
    for campaign in list_campaigns(tx):
        inbound = tx.execute(
            "SELECT verdict, COUNT(*) AS n FROM inbound_messages"
            " WHERE campaign_id = %(id)s AND received_at > %(since)s GROUP BY verdict",
            {"id": campaign.id, "since": now - timedelta(hours=1)},
        ).fetchall()
        replies = tx.execute(
            "SELECT status, COUNT(*) AS n FROM replies WHERE campaign_id = %(id)s"
            " GROUP BY status", {"id": campaign.id},
        ).fetchall()
        budget = budget_of(tx, campaign.id, now, campaign.time_zone)
        caps = {"hour": (budget.hour_used, budget.hourly_cap) if budget else (Decimal(0), None),
                "day": (budget.day_used, budget.daily_cap) if budget else (Decimal(0), None),
                "total": (budget.total_used, budget.total_cap) if budget
                else (Decimal(0), None)}
        overview.append({
            "number": campaign.number, "paused": campaign.paused,
            "halted": campaign.sending_halted_reason,
            "top_reasons": top_reasons(tx, campaign.id, now - timedelta(days=1)),
            "storm_mode": campaign.storm_mode,
            "inbound": {row["verdict"]: row["n"] for row in inbound},
            "replies": {row["status"]: row["n"] for row in replies},
            "budget": caps,
        })
    return overview


def metric_gauges(tx: Transaction, now: datetime) -> dict[str, Any]:
    """The gauges of /metrics: per campaign, pending replies, storm mode, budget left;
    parked messages per kind."""
    campaigns = list_campaigns(tx)
    pending = {row["number"]: row["n"] for row in tx.execute(
        "SELECT c.number, COUNT(r.id) AS n FROM campaigns c"
        " LEFT JOIN replies r ON r.campaign_id = c.id AND r.status = 'pending'"
        " GROUP BY c.number").fetchall()}
    remaining, caps = {}, {}
    for campaign in campaigns:
        budget = budget_of(tx, campaign.id, now, campaign.time_zone)
        if budget is not None:
            remaining[campaign.number] = budget.remaining()
            caps[campaign.number] = {"hour": budget.hourly_cap, "day": budget.daily_cap,
                                     "total": budget.total_cap}
    return {"campaigns": [campaign.number for campaign in campaigns], "pending": pending,
            "storm": {campaign.number: campaign.storm_mode for campaign in campaigns},
            "remaining": remaining, "caps": caps, "parked": parked_counts(tx),
            "halted": {EVERY_CAMPAIGN: global_halt(tx),
                       **{campaign.number: campaign.sending_halted_reason
                          for campaign in campaigns}}}


def top_reasons(tx: Transaction, campaign_id: int, since: datetime,
                limit: int = 3) -> list[tuple[str, int]]:
    """The most frequent reasons (their kind, before ':') of suppressed or blocked messages
    since `since` (`relous status` and the status page)."""
    rows = tx.execute(
        "SELECT reasons, COUNT(*) AS n FROM inbound_messages WHERE campaign_id = %(id)s"
        " AND verdict IN ('suppress', 'block') AND received_at > %(since)s"
        " GROUP BY reasons ORDER BY n DESC LIMIT 200",
        {"id": campaign_id, "since": since},
    ).fetchall()
    kinds: dict[str, int] = {}
    for row in rows:
        first = (row["reasons"] or "no reason").split("; ")[0]
        kind = first.split(":")[0]
        kinds[kind] = kinds.get(kind, 0) + row["n"]
    return sorted(kinds.items(), key=lambda item: -item[1])[:limit]


def replies_by_sender(tx: Transaction, campaign_number: str) -> list[dict[str, Any]]:
    """Every reply of a campaign: its sender's pseudonym, status, charge and send time (a
    replay's report counts replies from the service's own records)."""
    return tx.execute(
        "SELECT r.sender, r.status, r.charged, r.sent_at FROM replies r"
        " JOIN campaigns c ON c.id = r.campaign_id WHERE c.number = %(number)s",
        {"number": campaign_number}).fetchall()


def pipeline_progress(tx: Transaction, campaign_number: str, now: datetime) -> dict[str, int]:
    """How far a campaign's traffic has gone: messages recorded, and replies due now or
    being sent (a replay waits for both to settle)."""
    row = tx.execute(
        "SELECT (SELECT COUNT(*) FROM inbound_messages m WHERE m.campaign_id = c.id)"
        " AS recorded, (SELECT COUNT(*) FROM replies r WHERE r.campaign_id = c.id AND"
        " (r.status IN ('claimed', 'sending') OR (r.status = 'pending'"
        " AND r.due_at <= %(now)s))) AS due FROM campaigns c WHERE c.number = %(number)s",
        {"number": campaign_number, "now": now}).fetchone()
    return {"recorded": int(row["recorded"]), "due": int(row["due"])} if row else \
        {"recorded": 0, "due": 0}
