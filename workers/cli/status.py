"""`relous status`: the per-campaign overview."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import click

from shared.broker import create_publisher
from shared.rules.campaign import RULES, Campaign
from shared.rules.money import euros
from shared.settings import Settings
from shared.store.campaigns import global_halt, list_campaigns
from shared.store.parked import parked_counts
from shared.store.reports import campaign_overview
from workers.cli.common import fail, load_settings, open_database, reason
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
            f"{period} {euros(cap - used, 2)}/{euros(cap, 2)}"
            for period, (used, cap) in item["budget"].items() if cap is not None) or "no cap"
        click.echo(
            f"{item['number']:<14} {_state(item):<7} "
            f"{'STORM' if item['storm_mode'] else 'normal':<6} "
            f"{sum(item['inbound'].values()):>6} {replies.get('pending', 0):>7} "
            f"{replies.get('sent', 0) + replies.get('delivered', 0):>6} "
            f"{replies.get('failed', 0):>6} {replies.get('expired', 0):>7}  "
            f"{euros(used_day):>11}  {left}")
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
    _echo_queues(load_settings())

def _record_only(campaign: Campaign, would: dict[str, int]) -> str:
    """`lexicon 12, storm 0` for the campaign's rules in record mode; "" when none."""
    return ", ".join(f"{rule} {would.get(rule, 0)}" for rule in RULES
                     if campaign.rules.mode(rule) == "record")


def _state(item: dict[str, Any]) -> str:
    return "halted" if item["halted"] else "paused" if item["paused"] else "active"


def _echo_queues(settings: Settings) -> None:
    """The queue line; a broker that cannot be reached is one line on stderr and exit 1,
    after the rest of the overview (read from the database) was shown."""
    try:
        depths = create_publisher(settings).queue_depths()
    except Exception as error:  # any failure to read them means "cannot reach it"
        click.echo("queues: unavailable")
        where = ("BROKER_URL and RABBITMQ_MANAGEMENT_URL" if settings.rabbitmq_management_url
                 else "BROKER_URL")
        fail(f"cannot reach the broker of {where} ({reason(error)}): check the URL and "
             "that RabbitMQ is running (the overview above is current)")
    click.echo("queues: " + ", ".join(f"{name} {count} ready"
                                      for name, count in depths.items()))
