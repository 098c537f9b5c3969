"""`relous parked`: inbound messages and receipts the workers could not record. List them,
retry them (published again to their queue) or drop them. No raw number is printed."""

from __future__ import annotations

import json

import click

from shared.broker import BrokerUnavailable, create_publisher
from shared.store.parked import parked, unpark
from shared.vault import CannotOpen, unseal
from workers.cli.common import USAGE, fail, iso, load_settings, open_database, reason

TASKS = {"inbound": "relous.process_inbound", "receipt": "relous.apply_receipt"}


@click.group("parked")
def parked_group() -> None:
    """Messages that could not be recorded: list, retry, drop."""


@parked_group.command("list")
def parked_list() -> None:
    """Parked messages, oldest first."""
    with open_database().transaction() as tx:
        rows = parked(tx)
    if not rows:
        click.echo("no parked message")
        return
    click.echo(f"{'id':>6} {'kind':<8} {'message':<24} {'tries':>5}  {'first':<19}  "
               f"{'last':<19}  error")
    for row in rows:
        click.echo(f"{row['id']:>6} {row['kind']:<8} {row['message_key'][:24]:<24} "
                   f"{row['attempts']:>5}  {iso(row['first_attempt_at'])[:19]:<19}  "
                   f"{iso(row['last_attempt_at'])[:19]:<19}  {row['error']}")


@parked_group.command("retry")
@click.argument("message_id", type=int, required=False)
@click.option("--all", "every", is_flag=True, help="Retry every parked message.")
def parked_retry(message_id: int | None, every: bool) -> None:
    """Publish parked messages again to their queue (MESSAGE_ID, or --all)."""
    if (message_id is None) == (not every):
        fail("give one parked message's ID, or --all", USAGE)
    settings = load_settings(require_keys=True)
    database = open_database()
    with database.transaction() as tx:
        rows = parked(tx, None if every else [message_id or 0])
    if not rows:
        fail(f"no parked message {message_id}: see `relous parked list`")
    publisher = create_publisher(settings)
    for row in rows:
        try:
            payload = json.loads(unseal(row["payload"], settings.evidence_key))
            publisher.publish(TASKS[row["kind"]], payload[0] if isinstance(payload, list)
                              and len(payload) == 1 else payload)
        except CannotOpen as error:
            fail(f"{error}: use the key the messages were parked with")
        except BrokerUnavailable as error:
            fail(f"the broker of BROKER_URL did not take message {row['id']} "
                 f"({reason(error)}): it stays parked; check the URL and that RabbitMQ is "
                 "running, then retry")
        with database.transaction() as tx:  # only once the broker confirmed it
            unpark(tx, row["id"])
        click.echo(f"message {row['id']} ({row['kind']} {row['message_key']}) queued again")


@parked_group.command("drop")
@click.argument("message_id", type=int)
def parked_drop(message_id: int) -> None:
    """Delete a parked message for good."""
    with open_database().transaction() as tx:
        dropped = unpark(tx, message_id)
    if not dropped:
        fail(f"no parked message {message_id}: see `relous parked list`")
    click.echo(f"message {message_id} dropped")
