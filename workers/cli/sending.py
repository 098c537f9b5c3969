"""`relous sending`: the kill switch. Stop sending at once, for one campaign or every one,
while inbound keeps being recorded and decided; only a person starts it again (automatic
halts, such as a price overrun, are lifted here too)."""

from __future__ import annotations

from datetime import UTC, datetime

import click

from shared.store import campaigns as store
from workers.cli.common import USAGE, fail, open_database, parse_number


@click.group("sending")
def sending_group() -> None:
    """Stop or start sending replies (the kill switch)."""


@sending_group.command("stop")
@click.option("--campaign", "number", help="Only this campaign (default: every campaign).")
@click.option("--reason", required=True, help="Why, for whoever starts it again.")
def sending_stop(number: str | None, reason: str) -> None:
    """Stop sending now; claimed replies go back to waiting, inbound is still recorded."""
    if not reason.strip():
        fail("--reason must say why", USAGE)
    text = f"stopped by an operator: {reason.strip()[:200]}"
    with open_database().transaction() as tx:
        if number is None:
            changed = store.halt_everything(tx, text, datetime.now(UTC))
        else:
            campaign = store.find_campaign(tx, parse_number(number))
            if campaign is None:
                fail(f"no campaign answers on {number}: see `relous campaign list`")
            changed = not campaign.sending_halted
            store.halt_sending(tx, campaign.id, text, datetime.now(UTC))
    scope = f"campaign {number}" if number else "every campaign"
    click.echo(f"sending stopped for {scope}" if changed
               else f"sending was already stopped for {scope}")


@sending_group.command("start")
@click.option("--campaign", "number", help="Only this campaign (default: the global switch).")
def sending_start(number: str | None) -> None:
    """Start sending again; replies still fresh go out, the others expire as documented."""
    with open_database().transaction() as tx:
        if number is None:
            changed = store.resume_everything(tx)
        else:
            campaign = store.find_campaign(tx, parse_number(number))
            if campaign is None:
                fail(f"no campaign answers on {number}: see `relous campaign list`")
            changed = store.resume_sending(tx, campaign.id)
    scope = f"campaign {number}" if number else "every campaign"
    if not changed:
        fail(f"sending was not stopped for {scope}: see `relous sending status`")
    click.echo(f"sending started for {scope}")


@sending_group.command("status")
def sending_status() -> None:
    """Where sending is stopped, and why."""
    with open_database().transaction() as tx:
        everything = store.global_halt(tx)
        halted = [(c.number, c.sending_halted_reason) for c in store.list_campaigns(tx)
                  if c.sending_halted]
    click.echo(f"every campaign: {'STOPPED: ' + everything if everything else 'sending'}")
    for number, reason in halted:
        click.echo(f"campaign {number}: STOPPED: {reason}")
