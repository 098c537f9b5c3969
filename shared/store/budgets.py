"""The money ledger: each campaign's caps and what is used in each period (`budgets`),
and the reservations replies hold (`replies.reserved`).

Every send reserves its estimated cost under the campaign's budget row lock, then settles
to the reported price (sent), to nothing (not sent) or keeps it (maybe sent).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from shared.metrics import SPEND
from shared.rules.budget import BudgetState, day_start, hour_start
from shared.store.campaigns import find_campaign
from shared.store.counters import count
from shared.store.db import Transaction

_CAP_UPDATES = {
    period: f"UPDATE budgets SET {period}_cap = %(cap)s WHERE campaign_id = %(campaign)s"  # noqa: S608
    for period in ("hourly", "daily", "total")
}


def lock_budget(tx: Transaction, campaign_id: int, now: datetime) -> BudgetState:
    """The campaign's budget, locked until commit, as seen at `now`."""
    tx.execute(
        "INSERT INTO budgets (campaign_id, hour_start, day_start)"
        " VALUES (%(campaign)s, %(hour)s, %(day)s) ON CONFLICT (campaign_id) DO NOTHING",
        {"campaign": campaign_id, "hour": hour_start(now), "day": day_start(now)},
    )
    row = tx.execute("SELECT * FROM budgets WHERE campaign_id = %(campaign)s FOR UPDATE",
                     {"campaign": campaign_id}).fetchone()
    return _budget_state(row).rolled(now)


def reserve(tx: Transaction, campaign_id: int, budget: BudgetState, amount: Decimal) -> None:
    """Add `amount` to every period of a budget locked by `lock_budget` (and rolled)."""
    tx.execute(
        "UPDATE budgets SET hour_start = %(hour)s, hour_used = %(hour_used)s,"
        " day_start = %(day)s, day_used = %(day_used)s, total_used = %(total_used)s"
        " WHERE campaign_id = %(campaign)s",
        {"hour": budget.hour_start, "hour_used": budget.hour_used + amount,
         "day": budget.day_start, "day_used": budget.day_used + amount,
         "total_used": budget.total_used + amount, "campaign": campaign_id},
    )


def settle(tx: Transaction, reply_id: int, actual: Decimal, *, extra: bool = False) -> None:
    """Replace a reply's reservation by what it actually cost (0 when nothing was sent).

    With `extra`, `actual` is a cost learnt later (a part adopted from its receipt): it
    replaces the reservation if the reply still holds one, else it adds to the spend.
    A period that has rolled over since the reservation is left alone: its counter
    already started again from zero.
    """
    row = tx.execute(
        "SELECT campaign_id, reserved, reserved_hour, reserved_day FROM replies"
        " WHERE id = %(id)s", {"id": reply_id},
    ).fetchone()
    if row is None or (row["reserved"] is None and not extra):
        return
    delta = actual - Decimal(str(row["reserved"] or 0))
    tx.execute(
        "UPDATE budgets SET"
        " hour_used = CASE WHEN hour_start = %(hour)s THEN hour_used + %(delta)s"
        " ELSE hour_used END,"
        " day_used = CASE WHEN day_start = %(day)s THEN day_used + %(delta)s ELSE day_used END,"
        " total_used = total_used + %(delta)s, spent = spent + %(actual)s"
        " WHERE campaign_id = %(campaign)s",
        {"hour": row["reserved_hour"], "day": row["reserved_day"], "delta": delta,
         "actual": actual, "campaign": row["campaign_id"]},
    )
    tx.execute("UPDATE replies SET reserved = NULL WHERE id = %(id)s", {"id": reply_id})
    if actual:
        number = tx.execute("SELECT number FROM campaigns WHERE id = %(id)s",
                            {"id": row["campaign_id"]}).fetchone()["number"]
        count(tx, SPEND, number, "", actual)


def set_budget(tx: Transaction, number: str, now: datetime, **caps: Decimal | None) -> bool:
    """Set some caps (`hourly`, `daily`, `total`; None removes one) of a campaign.

    False when no campaign answers on `number`.
    """
    campaign = find_campaign(tx, number)
    if campaign is None:
        return False
    lock_budget(tx, campaign.id, now)
    for period, cap in caps.items():
        tx.execute(_CAP_UPDATES[period], {"cap": cap, "campaign": campaign.id})
    return True


def budget_of(tx: Transaction, campaign_id: int, now: datetime) -> BudgetState | None:
    row = tx.execute("SELECT * FROM budgets WHERE campaign_id = %(campaign)s",
                     {"campaign": campaign_id}).fetchone()
    return _budget_state(row).rolled(now) if row else None


def _budget_state(row: dict[str, Any]) -> BudgetState:
    def money(value: Any) -> Decimal | None:
        return None if value is None else Decimal(str(value))

    return BudgetState(money(row["hourly_cap"]), money(row["daily_cap"]),
                       money(row["total_cap"]), row["hour_start"],
                       Decimal(str(row["hour_used"])), row["day_start"],
                       Decimal(str(row["day_used"])), Decimal(str(row["total_used"])))
