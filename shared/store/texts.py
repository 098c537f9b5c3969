"""What the same-text raid signal compares: near-duplicate band keys of recent messages
(`text_bands`, shared/rules/neardup.py) and the texts usual in a campaign's normal
traffic (`usual_texts`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from shared.store.db import Transaction

# Band keys are compared within a raid window; a day is plenty.
BANDS_KEPT_HOURS = 24


def senders_of_band(tx: Transaction, campaign_id: int, band: str, since: datetime,
                    sample: int) -> set[str]:
    """Distinct senders among the latest `sample` messages sharing this band key."""
    return {row["sender"] for row in tx.execute(
        "SELECT sender FROM text_bands WHERE campaign_id = %(campaign)s"
        " AND band = %(band)s AND received_at > %(since)s"
        " ORDER BY received_at DESC LIMIT %(rows)s",
        {"campaign": campaign_id, "band": band, "since": since, "rows": sample},
    ).fetchall()}


def add_bands(tx: Transaction, rows: Sequence[Mapping[str, Any]]) -> None:
    """Rows of `campaign`, `band`, `sender`, `at`: on PostgreSQL in one statement over
    arrays (a batch writes thousands of keys; one row each would cost a fifth of the
    inbound path), elsewhere in one round trip."""
    if not rows:
        return
    if tx.dialect == "postgresql":
        tx.execute(
            "INSERT INTO text_bands (campaign_id, band, sender, received_at)"
            " SELECT * FROM unnest(%(campaigns)s::bigint[], %(bands)s::text[],"
            " %(senders)s::text[], %(ats)s::timestamptz[])",
            {"campaigns": [row["campaign"] for row in rows],
             "bands": [row["band"] for row in rows],
             "senders": [row["sender"] for row in rows], "ats": [row["at"] for row in rows]})
        return
    tx.executemany(
        "INSERT INTO text_bands (campaign_id, band, sender, received_at)"
        " VALUES (%(campaign)s, %(band)s, %(sender)s, %(at)s)", rows)


def usual_text_spread(tx: Transaction, campaign_id: int, text_key: str,
                      since: datetime) -> tuple[int, int]:
    """(first-time senders, distinct days) of this text in the campaign's calm normal
    traffic since `since`."""
    row = tx.execute(
        "SELECT COALESCE(SUM(senders), 0) AS senders, COUNT(*) AS days FROM usual_texts"
        " WHERE campaign_id = %(campaign)s AND text_key = %(key)s AND day >= %(since)s",
        {"campaign": campaign_id, "key": text_key, "since": day_of(since)}).fetchone()
    return int(row["senders"]), int(row["days"])


def count_usual_texts(tx: Transaction, counts: Mapping[tuple[int, str], int],
                      now: datetime) -> None:
    """Add first-time senders to (campaign id, text key) counts of `now`'s day, in a fixed
    order."""
    rows = [{"campaign": campaign, "key": key, "n": n, "day": day_of(now)}
            for (campaign, key), n in sorted(counts.items())]
    if rows:
        tx.executemany(
            "INSERT INTO usual_texts (campaign_id, text_key, day, senders)"
            " VALUES (%(campaign)s, %(key)s, %(day)s, %(n)s)"
            " ON CONFLICT (campaign_id, text_key, day) DO UPDATE"
            " SET senders = usual_texts.senders + excluded.senders", rows)


def day_of(moment: datetime) -> int:
    return int(moment.timestamp()) // 86400


def purge_texts(tx: Transaction, bands_before: datetime, usual_before: datetime) -> int:
    """Drop band keys and usual texts not seen since these times; rows dropped."""
    bands = tx.execute("DELETE FROM text_bands WHERE received_at < %(before)s",
                       {"before": bands_before}).rowcount
    usual = tx.execute("DELETE FROM usual_texts WHERE day < %(before)s",
                       {"before": day_of(usual_before)}).rowcount
    return int(bands) + int(usual)
