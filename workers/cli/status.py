"""`relous status`: the per-campaign overview."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import click

from shared.broker import create_publisher
from shared.rules.campaign import RULES, Campaign
from shared.store.campaigns import global_halt, list_campaigns
from shared.store.parked import parked_counts
from shared.store.reports import campaign_overview
from workers.cli.common import load_settings, open_database
from workers.cli.rules import would_stop_24h


@click.command()
def status() -> None:
    """Per-campaign overview: mode, spend against caps, replies, top reasons, queues."""
    now = datetime.now(UTC)
    with open_database().transaction() as tx:
        overview = campaign_overview(tx, now)
        waiting = parked_counts(tx)
        everything = global_halt(tx)
        trials = {campaign.number: _record_only(campaign, would_stop_24h(tx, campaign, now))
                  for campaign in list_campaigns(tx)}
    if not overview:
        click.echo("no campaign yet: relous campaign add NUMBER --reply TEXT")
        return
    header = (f"{'campaign':<14} {'state':<7} {'mode':<6} {'in 1h':>6} {'pending':>7} "
              f"{'sent':>6} {'failed':>6} {'expired':>7}  {'spent today':>11}  caps left")
    click.echo(header)
    for item in overview:
        replies = item["replies"]
        used_day = item["budget"]["day"][0]
        left = ", ".join(
            f"{period} {cap - used:.2f}/{cap:.2f}"
            for period, (used, cap) in item["budget"].items() if cap is not None) or "no cap"
        click.echo(
            f"{item['number']:<14} {_state(item):<7} "
            f"{'STORM' if item['storm_mode'] else 'normal':<6} "
            f"{sum(item['inbound'].values()):>6} {replies.get('pending', 0):>7} "
            f"{replies.get('sent', 0) + replies.get('delivered', 0):>6} "
            f"{replies.get('failed', 0):>6} {replies.get('expired', 0):>7}  "
            f"{used_day:>11.4f}  {left}")
    if everything:
        click.echo(f"SENDING STOPPED FOR EVERY CAMPAIGN: {everything} "
                   "(`relous sending start` lifts it)")
    for item in overview:
        if item["halted"]:
            click.echo(f"{item['number']}: SENDING HALTED: {item['halted']} "
                       "(`relous sending start --campaign` lifts it)")
    for item in overview:
        verdicts = ", ".join(f"{k} {v}" for k, v in sorted(item["inbound"].items()))
        reasons = ", ".join(f"{kind} {n}" for kind, n in item["top_reasons"]) or "none"
        click.echo(f"{item['number']}: last hour {verdicts or 'no inbound'}; "
                   f"top suppression reasons (24 h): {reasons}")
        if trials.get(item["number"]):
            click.echo(f"{item['number']}: record-only rules, would have stopped in 24 h: "
                       f"{trials[item['number']]} (relous rules show {item['number']})")
    parked_line = ", ".join(f"{count} {kind}" for kind, count in waiting.items())
    hint = " (relous parked list)" if any(waiting.values()) else ""
    click.echo(f"parked: {parked_line}{hint}")
    click.echo(f"queues: {_queue_depths()}")


def _record_only(campaign: Campaign, would: dict[str, int]) -> str:
    """`lexicon 12, storm 0` for the campaign's rules in record mode; "" when none."""
    return ", ".join(f"{rule} {would.get(rule, 0)}" for rule in RULES
                     if campaign.rules.mode(rule) == "record")


def _state(item: dict[str, Any]) -> str:
    return "halted" if item["halted"] else "paused" if item["paused"] else "active"


def _queue_depths() -> str:
    try:
        depths = create_publisher(load_settings()).queue_depths()
    except Exception as error:  # status still shows the rest
        return f"unavailable ({type(error).__name__})"
    return ", ".join(f"{name} {count} ready" for name, count in depths.items())
