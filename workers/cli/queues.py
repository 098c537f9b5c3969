"""queues upgrade: the broker's side of an upgrade (README, "Moving to quorum queues")."""

from __future__ import annotations

import click

from shared.queue_upgrade import QueuesBusy, upgrade_queues
from workers.cli.common import fail, load_settings


@click.group()
def queues() -> None:
    """RabbitMQ queues."""


@queues.command("upgrade")
@click.option("--clients-stopped", is_flag=True,
              help="State that web, worker and beat are scaled to 0 (needed without "
                   "RABBITMQ_MANAGEMENT_URL, which lets the command check it).")
def queues_upgrade(clients_stopped: bool) -> None:
    """Replace empty classic pipeline queues by quorum queues and declare the dead-letter
    queue; refuse, changing nothing, while a client is connected or a queue holds
    messages."""
    try:
        done = upgrade_queues(load_settings(), clients_stopped)
    except QueuesBusy as error:
        fail(str(error))
    for line in done:
        click.echo(line)
