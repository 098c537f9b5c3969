"""`relous rules show|set`: each abuse rule's mode, limits and adaptive thresholds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import click

from shared.rules.abuse import raid_threshold, storm_threshold
from shared.rules.campaign import RULES, Campaign
from shared.store import campaigns as store
from shared.store import rollups
from shared.store.db import Transaction
from shared.store.rollups import INBOUND, NEW_SENDERS, WOULD_STOP
from workers.cli.common import USAGE, fail, open_database, parse_number, parse_pairs

DAY = timedelta(days=1)


@click.group("rules")
def rules_group() -> None:
    """Each abuse rule's mode: enforce, record or off."""


@rules_group.command("show")
@click.argument("number")
def rules_show(number: str) -> None:
    """Each rule's mode, what it stops at, and, for rules in record mode, how many
    messages it would have stopped in the last 24 hours."""
    number = parse_number(number)
    now = datetime.now(UTC)
    with open_database().transaction() as tx:
        campaign = _campaign(tx, number)
        would = would_stop_24h(tx, campaign, now)
        limits = rule_limits(tx, campaign, now)
    click.echo(f"{'rule':<17} {'mode':<8} {'would stop (24 h)':>17}  stops at")
    for rule in RULES:
        mode = campaign.rules.mode(rule)
        count = str(would.get(rule, 0)) if mode == "record" else "-"
        click.echo(f"{rule:<17} {mode:<8} {count:>17}  {limits[rule]}")


@rules_group.command("set")
@click.argument("number")
@click.argument("modes", nargs=-1, required=True)
def rules_set(number: str, modes: tuple[str, ...]) -> None:
    """Set rules' modes: RULE=enforce|record|off (record: write what it would have done,
    change nothing)."""
    number = parse_number(number)
    changes = parse_pairs(modes, "lexicon=record")
    with open_database().transaction() as tx:
        campaign = _campaign(tx, number, lock=True)
        try:
            new_rules = campaign.rules.with_modes(changes)
        except ValueError as error:
            fail(str(error), USAGE)
        store.update_campaign(tx, campaign.id, reply_text=None, delay_seconds=None,
                              window_seconds=None, price_per_segment=campaign.price_per_segment,
                              allow_multipart=campaign.allow_multipart, rules=new_rules)
    click.echo(f"campaign {number}: " + ", ".join(
        f"{rule} {new_rules.mode(rule)}" for rule in changes))


def would_stop_24h(tx: Transaction, campaign: Campaign, now: datetime) -> dict[str, int]:
    """Messages each record-mode rule would have stopped in the last 24 hours."""
    totals = rollups.series_totals(tx, campaign.id, WOULD_STOP, now - DAY)
    return {series.removeprefix(WOULD_STOP): int(total) for series, total in totals.items()}


def rule_limits(tx: Transaction, campaign: Campaign, now: datetime) -> dict[str, str]:
    """What each rule stops at, with the adaptive thresholds as they stand now."""
    rules = campaign.rules
    raid = raid_threshold(rules, rollups.baseline(tx, campaign, NEW_SENDERS,
                                                  rules.raid_window, now))
    storm = storm_threshold(rules, rollups.baseline(tx, campaign, INBOUND,
                                                    timedelta(minutes=1), now))
    during_raid = (f"during a raid (new senders per {rules.raid_window_seconds // 60} min "
                   f"from {raid.explain()})")
    return {
        "velocity": f"more than {rules.sender_per_minute}/min, {rules.sender_per_hour}/h or "
                    f"{rules.sender_per_day}/day from one sender (blocks)",
        "repetition": f"the same text {rules.repeat_per_day} times a day from one sender",
        "raid_same_text": f"{rules.raid_same_text_senders} senders of near-same texts "
                          f"{during_raid}",
        "prefix_cluster": f"{rules.prefix_cluster_senders} new senders of one number prefix "
                          f"{during_raid}",
        "lexicon": f"insults and raid slogans ({rules.lexicon_points} points; alone it "
                   f"never suppresses)",
        "storm": f"returning senders, above {storm.explain()} messages a minute",
        "destination_gate": "numbers that are not mobiles of "
                            f"{rules.reply_countries or 'the campaign number’s country'}",
    }


def _campaign(tx: Transaction, number: str, lock: bool = False) -> Campaign:
    campaign = (store.lock_campaign if lock else store.find_campaign)(tx, number)
    if campaign is None:
        fail(f"no campaign answers on {number}: see `relous campaign list`")
    return campaign
