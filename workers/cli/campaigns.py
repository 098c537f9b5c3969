"""Campaigns: one inbound number each."""

from __future__ import annotations

from datetime import UTC, datetime

import click

from shared.store import campaigns as store
from workers.cli.common import (
    MAX_SECONDS,
    USAGE,
    checked_reply,
    fail,
    money,
    open_database,
    parse_money,
    parse_number,
    parse_pairs,
)

DELAY = click.IntRange(min=0, max=MAX_SECONDS)
WINDOW = click.IntRange(min=1, max=MAX_SECONDS)


@click.group()
def campaign() -> None:
    """Campaigns: one inbound number each."""


@campaign.command("add")
@click.argument("number")
@click.option("--reply", "reply_text", required=True, help="The reply's text.")
@click.option("--delay", type=DELAY, default=3600, show_default=True,
              help="Seconds before the reply is sent.")
@click.option("--window", type=WINDOW, default=30 * 86400, show_default=True,
              help="Seconds during which a sender gets no second reply.")
@click.option("--price-per-segment", default="0.08", show_default=True,
              help="Expected EUR per SMS segment (budget estimates).")
@click.option("--allow-multipart", is_flag=True, help="Accept a reply longer than one segment.")
def campaign_add(number: str, reply_text: str, delay: int, window: int,
                 price_per_segment: str, allow_multipart: bool) -> None:
    """Create the campaign answering on NUMBER (E.164 digits, no '+')."""
    number = parse_number(number)
    price = parse_money(price_per_segment, "--price-per-segment")
    encoding = checked_reply(reply_text, price, allow_multipart)
    with open_database().transaction() as tx:
        created = store.add_campaign(
            tx, number, reply_text, delay_seconds=delay, window_seconds=window,
            price_per_segment=price, allow_multipart=allow_multipart, now=datetime.now(UTC),
        )
    if not created:
        fail(f"a campaign already answers on {number}: `relous campaign set {number}` "
             "changes it")
    click.echo(f"campaign {number} added: {encoding.segments} segment(s), {encoding.name}, "
               f"reply after {delay}s, one reply per sender every {window}s")


@campaign.command("list")
def campaign_list() -> None:
    """List campaigns."""
    with open_database().transaction() as tx:
        campaigns = store.list_campaigns(tx)
    if not campaigns:
        click.echo("no campaign yet: relous campaign add NUMBER --reply TEXT")
        return
    click.echo(f"{'number':<16} {'state':<7} {'delay':>7} {'window':>9} {'EUR/seg':>8}  reply")
    for item in campaigns:
        state = "paused" if item.paused else "active"
        click.echo(f"{item.number:<16} {state:<7} {item.reply_delay_seconds:>6}s "
                   f"{item.reply_window_seconds:>8}s {money(item.price_per_segment, 4):>8}  "
                   f"{item.reply_text[:60]}")


def _set_paused(number: str, paused: bool) -> None:
    with open_database().transaction() as tx:
        found = store.set_campaign_paused(tx, parse_number(number), paused)
    if not found:
        fail(f"no campaign answers on {number}: see `relous campaign list`")
    click.echo(f"campaign {number} {'paused' if paused else 'resumed'}")


@campaign.command("pause")
@click.argument("number")
def campaign_pause(number: str) -> None:
    """Stop sending replies; inbound is still recorded and replies wait."""
    _set_paused(number, True)


@campaign.command("resume")
@click.argument("number")
def campaign_resume(number: str) -> None:
    """Send waiting replies again."""
    _set_paused(number, False)


@campaign.command("set")
@click.argument("number")
@click.argument("rules", nargs=-1)
@click.option("--reply", "reply_text", help="A new reply text (checked like at creation).")
@click.option("--delay", type=DELAY, help="Seconds before the reply is sent.")
@click.option("--window", type=WINDOW, help="Seconds between two replies.")
@click.option("--price-per-segment", help="Expected EUR per SMS segment.")
@click.option("--allow-multipart", is_flag=True, help="Accept a reply over one segment.")
def campaign_set(number: str, rules: tuple[str, ...], reply_text: str | None,
                 delay: int | None, window: int | None, price_per_segment: str | None,
                 allow_multipart: bool) -> None:
    """Change a campaign: options, and abuse-rule knobs as RULE=VALUE (see README)."""
    number = parse_number(number)
    changes = parse_pairs(rules, "sender_per_minute=5")
    with open_database().transaction() as tx:
        current = store.find_campaign(tx, number)
        if current is None:
            fail(f"no campaign answers on {number}: see `relous campaign list`")
        try:
            new_rules = current.rules.with_changes(changes)
        except ValueError as error:
            fail(str(error), USAGE)
        price = (parse_money(price_per_segment, "--price-per-segment")
                 if price_per_segment is not None else current.price_per_segment)
        if reply_text is not None or price_per_segment is not None:
            checked_reply(reply_text if reply_text is not None else current.reply_text,
                           price, allow_multipart or current.allow_multipart)
        store.update_campaign(
            tx, current.id, reply_text=reply_text, delay_seconds=delay, window_seconds=window,
            price_per_segment=price, allow_multipart=allow_multipart or current.allow_multipart,
            rules=new_rules,
        )
    click.echo(f"campaign {number} updated")
