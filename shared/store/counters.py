"""Business counters of /metrics (`metric_counters`), kept in the caller's transaction.

A counter moves in the same transaction as the event it counts, so a scrape of any web
process reads the truth. One row per process shard avoids a hot row; scrapes add them up.
"""

from __future__ import annotations

import os
from decimal import Decimal
from typing import Any

from shared.store.db import Transaction

COUNTER_SHARDS = 8


def count(tx: Transaction, metric: str, campaign: str, label: str,
          amount: Decimal | int = 1) -> None:
    """Add to a business counter in the caller's transaction (see shared.metrics)."""
    tx.execute(
        "INSERT INTO metric_counters (metric, campaign, label, shard, value)"
        " VALUES (%(metric)s, %(campaign)s, %(label)s, %(shard)s, %(amount)s)"
        " ON CONFLICT (metric, campaign, label, shard)"
        " DO UPDATE SET value = metric_counters.value + excluded.value",
        {"metric": metric, "campaign": campaign, "label": label,
         "shard": os.getpid() % COUNTER_SHARDS, "amount": amount},
    )


def count_many(tx: Transaction, amounts: dict[tuple[str, str, str], int]) -> None:
    """Several counters at once, in a fixed order (concurrent batches cannot deadlock)."""
    for (metric, campaign, label), amount in sorted(amounts.items()):
        count(tx, metric, campaign, label, amount)


def counter_totals(tx: Transaction) -> list[dict[str, Any]]:
    return tx.execute(
        "SELECT metric, campaign, label, SUM(value) AS value FROM metric_counters"
        " GROUP BY metric, campaign, label"
    ).fetchall()
