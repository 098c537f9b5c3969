"""`relous explain` (placeholder until it lands)."""

from __future__ import annotations

import click


@click.command()
@click.argument("number", required=False)
@click.option("--message", "message_id", type=int, help="an inbound message's id")
def explain(number: str | None, message_id: int | None) -> None:
    """A sender's decision trail, pseudonymised."""
    raise click.UsageError("not built yet")
