"""Operators' block and allow lists (stored as pseudonyms)."""

from __future__ import annotations

from datetime import UTC, datetime

import click

from shared.rules.phones import mask, pseudonym
from shared.store.senders import set_sender_list
from workers.cli.common import fail, load_settings, open_database, parse_number


@click.group()
def sender() -> None:
    """Operators' block and allow lists (stored as pseudonyms)."""


def _list_sender(number: str, action: str) -> None:
    settings = load_settings(require_keys=True)
    who = pseudonym(parse_number(number), settings.secret_key)
    with open_database().transaction() as tx:
        changed = set_sender_list(tx, who, action, datetime.now(UTC))
    label = mask(number)
    if not changed:
        fail(f"{label} was not on that list")
    click.echo(f"{label}: {action}ed" if action != "block" else f"{label}: blocked")


@sender.command("block")
@click.argument("number")
def sender_block(number: str) -> None:
    """Never answer NUMBER again, in any campaign."""
    _list_sender(number, "block")


@sender.command("unblock")
@click.argument("number")
def sender_unblock(number: str) -> None:
    """Lift an operator's or an automatic block of NUMBER."""
    _list_sender(number, "unblock")


@sender.command("allow")
@click.argument("number")
def sender_allow(number: str) -> None:
    """Let NUMBER past every abuse rule (not the budget, nor one reply per window)."""
    _list_sender(number, "allow")


@sender.command("disallow")
@click.argument("number")
def sender_disallow(number: str) -> None:
    """Take NUMBER off the allowlist."""
    _list_sender(number, "disallow")
