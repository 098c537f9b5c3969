"""`relous rules show|set` (placeholder until it lands)."""

from __future__ import annotations

import click


@click.group("rules")
def rules_group() -> None:
    """Each abuse rule's mode: enforce, record or off."""
