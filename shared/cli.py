"""The `relous` command line (CONTRACT.md, "CLI").

Exit codes: 0 success, 1 a check failed, 2 bad usage. Errors go to stderr in one line that
says what to do. Raw phone numbers are never printed.
"""

from __future__ import annotations

import os
import secrets
import sys
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation

import click

from shared import store
from shared.db import Database, ensure_sqlite_folder, upgrade
from shared.phones import is_phone_number
from shared.segments import encode
from shared.settings import ConfigError, Settings


def _fail(message: str, code: int = 1) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def _settings(require_keys: bool = False) -> Settings:
    try:
        return Settings.from_env(require_keys=require_keys)
    except ConfigError as error:
        _fail(str(error), 2)
        raise  # unreachable: _fail exits


def _database() -> Database:
    settings = _settings()
    ensure_sqlite_folder(settings.database_url)
    return Database(settings.database_url, pool_size=1)


def _number(value: str) -> str:
    if not is_phone_number(value):
        _fail(f"{value!r} is not a number: give E.164 digits without '+', e.g. 33612345678", 2)
    return value


@click.group()
def main() -> None:
    """anti-relous: a fake phone number that answers once, cheaply, and survives floods."""


@main.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Apply the migrations not yet applied (the Procfile's `release` step)."""
    applied = upgrade(_database())
    names = ": " + ", ".join(applied) if applied else ""
    click.echo(f"applied {len(applied)} migration(s){names}")


@main.command()
def keys() -> None:
    """Print fresh values for RELOUS_SECRET_KEY and RELOUS_EVIDENCE_KEY."""
    from cryptography.fernet import Fernet

    click.echo(f"RELOUS_SECRET_KEY={secrets.token_urlsafe(32)}")
    click.echo(f"RELOUS_EVIDENCE_KEY={Fernet.generate_key().decode()}")


@main.group()
def campaign() -> None:
    """Campaigns: one inbound number each."""


@campaign.command("add")
@click.argument("number")
@click.option("--reply", "reply_text", required=True, help="The reply's text.")
@click.option("--delay", type=click.IntRange(min=0), default=3600, show_default=True,
              help="Seconds before the reply is sent.")
@click.option("--window", type=click.IntRange(min=1), default=30 * 86400, show_default=True,
              help="Seconds during which a sender gets no second reply.")
@click.option("--price-per-segment", default="0.08", show_default=True,
              help="Expected EUR per SMS segment (budget estimates).")
@click.option("--allow-multipart", is_flag=True, help="Accept a reply longer than one segment.")
def campaign_add(number: str, reply_text: str, delay: int, window: int,
                 price_per_segment: str, allow_multipart: bool) -> None:
    """Create the campaign answering on NUMBER (E.164 digits, no '+')."""
    number = _number(number)
    try:
        price = Decimal(price_per_segment)
        if price < 0:
            raise InvalidOperation
    except InvalidOperation:
        _fail("--price-per-segment must be a non-negative amount in EUR, e.g. 0.08", 2)
    if not reply_text.strip():
        _fail("--reply must not be empty", 2)
    encoding = encode(reply_text)
    if encoding.segments > 1 and not allow_multipart:
        _fail(f"the reply needs {encoding.segments} segments ({encoding.name}); shorten it, "
              f"or pass --allow-multipart to pay for them")
    with _database().transaction() as tx:
        created = store.add_campaign(
            tx, number, reply_text, delay_seconds=delay, window_seconds=window,
            price_per_segment=price, allow_multipart=allow_multipart, now=datetime.now(UTC),
        )
    if not created:
        _fail(f"a campaign already answers on {number}")
    click.echo(f"campaign {number} added: {encoding.segments} segment(s), {encoding.name}, "
               f"reply after {delay}s, one reply per sender every {window}s")


@campaign.command("list")
def campaign_list() -> None:
    """List campaigns."""
    with _database().transaction() as tx:
        campaigns = store.list_campaigns(tx)
    if not campaigns:
        click.echo("no campaign yet: relous campaign add NUMBER --reply TEXT")
        return
    click.echo(f"{'number':<16} {'state':<7} {'delay':>7} {'window':>9} {'EUR/seg':>8}  reply")
    for item in campaigns:
        state = "paused" if item.paused else "active"
        click.echo(f"{item.number:<16} {state:<7} {item.reply_delay_seconds:>6}s "
                   f"{item.reply_window_seconds:>8}s {item.price_per_segment:>8}  "
                   f"{item.reply_text[:60]}")


def _set_paused(number: str, paused: bool) -> None:
    with _database().transaction() as tx:
        found = store.set_campaign_paused(tx, _number(number), paused)
    if not found:
        _fail(f"no campaign answers on {number}: see `relous campaign list`")
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


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(1, 65535), default=None,
              help="Default: $PORT, else 8000.")
@click.option("--data-dir", default=".relous", show_default=True,
              help="Folder of the demo's database and embedded broker.")
def demo(host: str, port: int | None, data_dir: str) -> None:
    """Run the whole service on the embedded default: no RabbitMQ, PostgreSQL or Vonage."""
    from workers.demo import run_demo

    run_demo(host=host, port=port or int(os.environ.get("PORT") or 8000), data_dir=data_dir)


if __name__ == "__main__":
    main()
