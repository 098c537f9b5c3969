"""Spending caps per campaign."""

from __future__ import annotations

from datetime import UTC, datetime

import click

from shared.store.budgets import set_budget
from workers.cli.common import USAGE, fail, money, open_database, parse_money, parse_number


@click.group()
def budget() -> None:
    """Spending caps per campaign."""


@budget.command("set")
@click.argument("number")
@click.option("--hourly", help="EUR per hour ('none' removes the cap).")
@click.option("--daily", help="EUR per day ('none' removes the cap).")
@click.option("--total", help="EUR in total ('none' removes the cap).")
def budget_set(number: str, hourly: str | None, daily: str | None, total: str | None) -> None:
    """Set a campaign's caps; replies that do not fit wait, then expire."""
    number = parse_number(number)
    caps = {period: None if value.lower() == "none" else parse_money(value, f"--{period}")
            for period, value in (("hourly", hourly), ("daily", daily), ("total", total))
            if value is not None}
    if not caps:
        fail("give at least one of --hourly, --daily, --total", USAGE)
    with open_database().transaction() as tx:
        found = set_budget(tx, number, datetime.now(UTC), **caps)
    if not found:
        fail(f"no campaign answers on {number}: see `relous campaign list`")
    shown = ", ".join(f"{period} {'none' if cap is None else f'{money(cap)} EUR'}"
                      for period, cap in caps.items())
    click.echo(f"budget of {number}: {shown}")
