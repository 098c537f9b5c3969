"""Traffic rollups (`traffic_rollups`): per campaign, series and minute, kept on the write
path so that the adaptive thresholds (shared/rules/baselines.py) and the record-only
counts never scan the messages. A minute is Unix time // 60."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from decimal import Decimal

from shared.rules.campaign import Campaign
from shared.store.db import Transaction

NEW_SENDERS, INBOUND, SPEND = "new_senders", "inbound", "spend"
WOULD_STOP = "would_stop:"  # + a rule's name
# Rollups older than this are purged: the longest baseline a campaign may ask for.
ROLLUP_DAYS = 31


def minute_of(moment: datetime) -> int:
    return int(moment.timestamp()) // 60


def add_rollups(tx: Transaction, amounts: Mapping[tuple[int, str, int], Decimal | int]) -> None:
    """Add to (campaign id, series, minute) counts, in a fixed order (concurrent batches
    cannot deadlock each other)."""
    rows = [{"campaign": campaign, "series": series, "minute": minute, "value": value}
            for (campaign, series, minute), value in sorted(amounts.items()) if value]
    if rows:
        tx.executemany(
            "INSERT INTO traffic_rollups (campaign_id, series, minute, value)"
            " VALUES (%(campaign)s, %(series)s, %(minute)s, %(value)s)"
            " ON CONFLICT (campaign_id, series, minute)"
            " DO UPDATE SET value = traffic_rollups.value + excluded.value", rows)


def total_since(tx: Transaction, campaign_id: int, series: str, since: datetime) -> Decimal:
    """The series' total from `since`'s minute on."""
    row = tx.execute(
        "SELECT COALESCE(SUM(value), 0) AS total FROM traffic_rollups"
        " WHERE campaign_id = %(campaign)s AND series = %(series)s AND minute >= %(since)s",
        {"campaign": campaign_id, "series": series, "since": minute_of(since)}).fetchone()
    return Decimal(str(row["total"]))


def peak(tx: Transaction, campaign_id: int, series: str, until: datetime, days: int,
         window: timedelta, peak_day: int) -> Decimal:
    """Over the `days` before `until`: each day's busiest `window`, and of those the
    `peak_day`-th busiest (1: the busiest); 0 when fewer days had any traffic."""
    size = max(1, int(window.total_seconds()) // 60)
    row = tx.execute(
        "SELECT MAX(total) AS peak FROM (SELECT MIN(minute) AS first, SUM(value) AS total"
        " FROM traffic_rollups WHERE campaign_id = %(campaign)s AND series = %(series)s"
        " AND minute >= %(start)s AND minute < %(end)s GROUP BY minute / %(size)s) AS windows"
        " GROUP BY first / 1440 ORDER BY peak DESC LIMIT 1 OFFSET %(skip)s",
        {"campaign": campaign_id, "series": series, "size": size, "skip": peak_day - 1,
         "start": minute_of(until - timedelta(days=days)), "end": minute_of(until)},
    ).fetchone()
    return Decimal(str(row["peak"])) if row else Decimal(0)


def baseline(tx: Transaction, campaign: Campaign, series: str, window: timedelta,
             now: datetime) -> float:
    """The campaign's peak of a series per `window` (shared/rules/baselines.py), over
    `baseline_days` before the current window."""
    rules = campaign.rules
    return float(peak(tx, campaign.id, series, now - window, rules.baseline_days, window,
                      rules.baseline_peak_day))


def series_totals(tx: Transaction, campaign_id: int, prefix: str,
                  since: datetime) -> dict[str, Decimal]:
    """Totals since `since` of every series starting with `prefix`, by series."""
    rows = tx.execute(
        "SELECT series, SUM(value) AS total FROM traffic_rollups"
        " WHERE campaign_id = %(campaign)s AND minute >= %(since)s"
        " AND substr(series, 1, %(length)s) = %(prefix)s GROUP BY series",
        {"campaign": campaign_id, "since": minute_of(since), "prefix": prefix,
         "length": len(prefix)}).fetchall()
    return {row["series"]: Decimal(str(row["total"])) for row in rows}


def purge_rollups(tx: Transaction, now: datetime) -> int:
    """Drop rollups older than ROLLUP_DAYS; how many rows went."""
    return tx.execute("DELETE FROM traffic_rollups WHERE minute < %(before)s",
                      {"before": minute_of(now - timedelta(days=ROLLUP_DAYS))}).rowcount
