"""The money ledger: each campaign's caps and what is used in each period (`budgets`).

What the budgets count for each reply is `replies.charged`: its estimated cost from the
claim (under the campaign's budget row lock), then the reported price (sent), nothing
(not sent) or still the estimate (maybe sent). It changes only in the statement that
changes the reply's state, and `apply_charges` moves the budgets by what that statement
returned, in the same transaction. Invariant: for each campaign, `total_used` is the sum
of its replies' `charged`, and `spent` that sum over the replies billed by the provider.
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
from shared.store.rollups import SPEND as SPEND_SERIES
from shared.store.rollups import add_rollups, minute_of

_CAP_UPDATES = {
    period: f"UPDATE budgets SET {period}_cap = %(cap)s WHERE campaign_id = %(campaign)s"  # noqa: S608
    for period in ("hourly", "daily", "total")
}


def lock_budget(tx: Transaction, campaign_id: int, now: datetime,
                zone: str | None = None) -> BudgetState:
    """The campaign's budget, locked until commit, as seen at `now` (its days start at
    midnight in `zone`)."""
    tx.execute(
        "INSERT INTO budgets (campaign_id, hour_start, day_start)"
        " VALUES (%(campaign)s, %(hour)s, %(day)s) ON CONFLICT (campaign_id) DO NOTHING",
        {"campaign": campaign_id, "hour": hour_start(now, zone), "day": day_start(now, zone)},
    )
    row = tx.execute("SELECT * FROM budgets WHERE campaign_id = %(campaign)s FOR UPDATE",
                     {"campaign": campaign_id}).fetchone()
    return _budget_state(row).rolled(now, zone)


def persist_roll(tx: Transaction, campaign_id: int, budget: BudgetState) -> None:
    """Store the current periods of a budget locked by `lock_budget` (a new hour or day
    starts from zero), so that charges of this hour and day land in it."""
    tx.execute(
        "UPDATE budgets SET hour_start = %(hour)s, hour_used = %(hour_used)s,"
        " day_start = %(day)s, day_used = %(day_used)s WHERE campaign_id = %(campaign)s",
        {"hour": budget.hour_start, "hour_used": budget.hour_used, "day": budget.day_start,
         "day_used": budget.day_used, "campaign": campaign_id},
    )


# What a change of a reply's state returns for its money to move (shared/store/replies.py):
# RETURNING these columns, `charge_delta` set in the same statement.
CHARGE_COLUMNS = ("id, campaign_id, sender, charge_delta, charged, reserved, reserved_hour,"
                  " reserved_day, window_ends_at")


def apply_charges(tx: Transaction, rows: list[dict[str, Any]]) -> None:
    """Move the budgets by the `charge_delta` of replies whose state just changed (rows
    RETURNING `CHARGE_COLUMNS`). A period that has rolled over since the charge was made
    is left alone: its counter already started again from zero."""
    for row in rows:
        delta = Decimal(str(row["charge_delta"]))
        if delta:
            tx.execute(
                "UPDATE budgets SET"
                " hour_used = CASE WHEN hour_start = %(hour)s THEN hour_used + %(delta)s"
                " ELSE hour_used END,"
                " day_used = CASE WHEN day_start = %(day)s THEN day_used + %(delta)s"
                " ELSE day_used END,"
                " total_used = total_used + %(delta)s WHERE campaign_id = %(campaign)s",
                {"hour": row["reserved_hour"], "day": row["reserved_day"], "delta": delta,
                 "campaign": row["campaign_id"]},
            )


def record_spend(tx: Transaction, campaign_id: int, amount: Decimal, now: datetime) -> None:
    """Money the provider billed (or, with no price reported, the estimate): it counts in
    `budgets.spent`, `relous_spend_euros_total` and the spend rollup (the spend-rate trip)."""
    if not amount:
        return
    tx.execute("UPDATE budgets SET spent = spent + %(amount)s WHERE campaign_id = %(campaign)s",
               {"amount": amount, "campaign": campaign_id})
    number = tx.execute("SELECT number FROM campaigns WHERE id = %(id)s",
                        {"id": campaign_id}).fetchone()["number"]
    count(tx, SPEND, number, "", amount)
    add_rollups(tx, {(campaign_id, SPEND_SERIES, minute_of(now)): amount})


def set_budget(tx: Transaction, number: str, now: datetime, **caps: Decimal | None) -> bool:
    """Set some caps (`hourly`, `daily`, `total`; None removes one) of a campaign.

    False when no campaign answers on `number`.
    """
    campaign = find_campaign(tx, number)
    if campaign is None:
        return False
    lock_budget(tx, campaign.id, now, campaign.time_zone)
    for period, cap in caps.items():
        tx.execute(_CAP_UPDATES[period], {"cap": cap, "campaign": campaign.id})
    return True


def budget_of(tx: Transaction, campaign_id: int, now: datetime,
              zone: str | None = None) -> BudgetState | None:
    row = tx.execute("SELECT * FROM budgets WHERE campaign_id = %(campaign)s",
                     {"campaign": campaign_id}).fetchone()
    return _budget_state(row).rolled(now, zone) if row else None


def _budget_state(row: dict[str, Any]) -> BudgetState:
    def money(value: Any) -> Decimal | None:
        return None if value is None else Decimal(str(value))

    return BudgetState(money(row["hourly_cap"]), money(row["daily_cap"]),
                       money(row["total_cap"]), row["hour_start"],
                       Decimal(str(row["hour_used"])), row["day_start"],
                       Decimal(str(row["day_used"])), Decimal(str(row["total_used"])))
