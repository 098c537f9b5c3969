"""The reads of the operators' status page (`GET /status`): one snapshot per request.

Bounded whatever the traffic: every read of messages is an indexed range of one campaign's
last 24 hours (`inbound_messages (campaign_id, received_at)`, joined to its reply by the
reply's unique `inbound_message_id`), the decision log stops at LOG_LIMIT rows per
campaign, and spend comes from the per-minute rollups. No message text leaves these
queries, and a sender only as the first SHORT_PSEUDONYM characters of its pseudonym.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from shared.rules.campaign import Campaign
from shared.store.budgets import budget_of
from shared.store.campaigns import global_halt, list_campaigns
from shared.store.db import Transaction
from shared.store.parked import parked_counts
from shared.store.reports import top_reasons
from shared.store.rollups import SPEND, minute_of

# What a campaign's message is judged (shared/rules/abuse.py): the log's filter accepts
# exactly these.
VERDICTS = ("reply", "suppress", "block")
REPLY_STATUSES = ("pending", "claimed", "sending", "sent", "delivered", "failed", "expired",
                  "unknown")
# A reply that went out, or may have (README, "At most once").
WENT_OUT = ("sent", "delivered", "unknown")
WINDOW = timedelta(hours=24)
HOUR = timedelta(hours=1)
BUCKET = timedelta(minutes=15)
BUCKETS = int(WINDOW / BUCKET)
LOG_LIMIT = 100
# As `relous explain` prints a sender: enough to find it again, not the whole key.
SHORT_PSEUDONYM = 12
TOP_REASONS = 5

# The bucket of a message, counted from `origin` (Unix seconds): (origin + k·size, …].
_BUCKET_SQL = {
    "postgresql": "FLOOR((EXTRACT(EPOCH FROM m.received_at) - %(origin)s) / %(size)s)",
    "sqlite": "(CAST(strftime('%s', m.received_at) AS INTEGER) - %(origin)s) / %(size)s",
}


@dataclass(frozen=True)
class Cap:
    period: str                 # "hour", "day" or "total"
    used: Decimal
    cap: Decimal | None         # None: no cap for this period

    @property
    def left(self) -> Decimal | None:
        return None if self.cap is None else self.cap - self.used


@dataclass(frozen=True)
class Traffic:
    """A campaign's last 24 hours."""

    start: datetime                          # the first bucket's start (now − 24 h)
    inbound_hour: dict[str, int]             # verdict -> messages, last hour
    inbound_day: dict[str, int]              # verdict -> messages, last 24 h
    replies: dict[str, int]                  # status -> replies to the last 24 h's messages
    buckets: dict[str, list[int]]            # verdict -> messages per BUCKET, oldest first
    answered: list[int]                      # replies gone out, by their message's bucket
    spend: list[Decimal]                     # EUR billed per BUCKET (by send time)


@dataclass(frozen=True)
class CampaignStatus:
    number: str
    paused: bool
    storm: bool
    halted: str | None                       # the campaign's own kill switch, with reason
    caps: list[Cap]
    traffic: Traffic
    top_reasons: list[tuple[str, int]]


@dataclass(frozen=True)
class StatusPage:
    now: datetime
    numbers: list[str]                       # every campaign, for the filter
    halted_everywhere: str | None            # the global `*` kill switch's reason
    parked: dict[str, int]                   # parked messages per kind
    campaigns: list[CampaignStatus]          # the ones shown
    log: list[dict[str, Any]]                # the latest decisions, newest first


def status_page(tx: Transaction, now: datetime, campaign: str | None = None,
                verdict: str | None = None) -> StatusPage:
    """Everything the page shows: every campaign, or only `campaign` (none if unknown);
    the decision log of those, only `verdict` if given (one of VERDICTS)."""
    if verdict is not None and verdict not in VERDICTS:
        raise ValueError(f"verdict must be one of {', '.join(VERDICTS)}")
    every = list_campaigns(tx)
    shown = [c for c in every if campaign is None or c.number == campaign]
    log: list[dict[str, Any]] = []
    for one in shown:
        log += decision_log(tx, one, now, verdict)
    log.sort(key=lambda row: (row["received_at"], row["id"]), reverse=True)
    return StatusPage(now=now, numbers=[c.number for c in every],
                      halted_everywhere=global_halt(tx), parked=parked_counts(tx),
                      campaigns=[_campaign_status(tx, one, now) for one in shown],
                      log=log[:LOG_LIMIT])


def _campaign_status(tx: Transaction, campaign: Campaign, now: datetime) -> CampaignStatus:
    budget = budget_of(tx, campaign.id, now, campaign.time_zone)
    zero = Decimal(0)
    caps = [Cap("hour", budget.hour_used if budget else zero, budget.hourly_cap if budget
                else None),
            Cap("day", budget.day_used if budget else zero, budget.daily_cap if budget
                else None),
            Cap("total", budget.total_used if budget else zero, budget.total_cap if budget
                else None)]
    return CampaignStatus(
        number=campaign.number, paused=campaign.paused, storm=campaign.storm_mode,
        halted=campaign.sending_halted_reason, caps=caps,
        traffic=traffic(tx, campaign.id, now),
        top_reasons=top_reasons(tx, campaign.id, now - WINDOW, TOP_REASONS))


def traffic(tx: Transaction, campaign_id: int, now: datetime) -> Traffic:
    """A campaign's last 24 hours in two reads: its messages (one indexed range, grouped
    by bucket, verdict and reply status) and its spend rollups."""
    since = now - WINDOW
    origin = int(since.timestamp())
    rows = tx.execute(
        f"SELECT {_BUCKET_SQL[tx.dialect]} AS bucket, m.verdict, r.status,"  # noqa: S608
        " CASE WHEN m.received_at > %(hour)s THEN 1 ELSE 0 END AS recent, COUNT(*) AS n"
        " FROM inbound_messages m LEFT JOIN replies r ON r.inbound_message_id = m.id"
        " WHERE m.campaign_id = %(campaign)s AND m.received_at > %(since)s"
        " AND m.received_at <= %(now)s GROUP BY 1, 2, 3, 4",
        {"campaign": campaign_id, "since": since, "now": now, "hour": now - HOUR,
         "origin": origin, "size": int(BUCKET.total_seconds())}).fetchall()
    hour: dict[str, int] = {}
    day: dict[str, int] = {}
    replies: dict[str, int] = {}
    buckets = {verdict: [0] * BUCKETS for verdict in VERDICTS}
    answered = [0] * BUCKETS
    for row in rows:
        n, verdict, status = int(row["n"]), row["verdict"], row["status"]
        index = min(max(int(row["bucket"]), 0), BUCKETS - 1)
        day[verdict] = day.get(verdict, 0) + n
        if row["recent"]:
            hour[verdict] = hour.get(verdict, 0) + n
        buckets.setdefault(verdict, [0] * BUCKETS)[index] += n
        if status is not None:
            replies[status] = replies.get(status, 0) + n
            answered[index] += n if status in WENT_OUT else 0
    return Traffic(start=since, inbound_hour=hour, inbound_day=day, replies=replies,
                   buckets=buckets, answered=answered, spend=_spend(tx, campaign_id, now))


def _spend(tx: Transaction, campaign_id: int, now: datetime) -> list[Decimal]:
    """EUR billed per bucket over the last 24 hours, from the minute rollups (a minute
    falls in the bucket holding its end)."""
    first, last = minute_of(now - WINDOW), minute_of(now)
    per_bucket = int(BUCKET.total_seconds()) // 60
    spend = [Decimal(0)] * BUCKETS
    for row in tx.execute(
            "SELECT minute, value FROM traffic_rollups WHERE campaign_id = %(campaign)s"
            " AND series = %(series)s AND minute >= %(first)s AND minute <= %(last)s",
            {"campaign": campaign_id, "series": SPEND, "first": first,
             "last": last}).fetchall():
        index = min(max((int(row["minute"]) - first) // per_bucket, 0), BUCKETS - 1)
        spend[index] += Decimal(str(row["value"]))
    return spend


def decision_log(tx: Transaction, campaign: Campaign, now: datetime,
                 verdict: str | None = None, limit: int = LOG_LIMIT) -> list[dict[str, Any]]:
    """The campaign's latest `limit` decisions of the last 24 hours (only `verdict`, if
    given): when, which message, a short pseudonym, the verdict, score and reasons as
    stored, the reply's status. Never the text."""
    where = ("m.campaign_id = %(campaign)s AND m.received_at > %(since)s"
             " AND m.received_at <= %(now)s")
    if verdict is not None:
        where += " AND m.verdict = %(verdict)s"
    rows: list[dict[str, Any]] = tx.execute(
        f"SELECT m.id, m.received_at, substr(m.sender, 1, %(short)s) AS sender,"  # noqa: S608
        " m.verdict, m.score, m.reasons, r.status AS reply_status"
        " FROM inbound_messages m LEFT JOIN replies r ON r.inbound_message_id = m.id"
        f" WHERE {where} ORDER BY m.received_at DESC, m.id DESC LIMIT %(limit)s",
        {"campaign": campaign.id, "since": now - WINDOW, "now": now, "verdict": verdict,
         "short": SHORT_PSEUDONYM, "limit": limit}).fetchall()
    for row in rows:
        row["campaign"] = campaign.number
        row["received_at"] = row["received_at"].astimezone(UTC)
    return rows
