"""queues upgrade: the broker's side of an upgrade (README, "Moving to quorum queues")."""

from __future__ import annotations

import click

from shared.broker import QueuesBusy, upgrade_queues
from workers.cli.common import fail, load_settings


@click.group()
def queues() -> None:
    """RabbitMQ queues."""


@queues.command("upgrade")
def queues_upgrade() -> None:
    """Replace empty classic pipeline queues by quorum queues and declare the dead-letter
    queue; refuse, changing nothing for it, while a queue holds messages or has consumers."""
    try:
        done = upgrade_queues(load_settings())
    except QueuesBusy as error:
        fail(str(error))
    for line in done:
        click.echo(line)
