"""What every `relous` command shares: one-line errors, settings, the database, values."""

from __future__ import annotations

import sys
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import NoReturn

import click

from shared.rules.phones import is_phone_number
from shared.rules.segments import Encoding
from shared.rules.templates import check_template, describe
from shared.settings import ConfigError, Settings
from shared.store.db import Database, ensure_sqlite_folder, pending_migrations


def fail(message: str, code: int = 1) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def load_settings(require_keys: bool = False) -> Settings:
    try:
        return Settings.from_env(require_keys=require_keys)
    except ConfigError as error:
        fail(str(error), 2)


def open_database(*, migrated: bool = True) -> Database:
    """The database of DATABASE_URL; with `migrated`, one whose schema is up to date. What
    stops a command here is said in one line: unreachable, or not migrated yet."""
    settings = load_settings()
    ensure_sqlite_folder(settings.database_url)
    database = Database(settings.database_url, pool_size=1)
    try:
        database.ping()
        missing = pending_migrations(database)
    except Exception as error:  # any failure here means "cannot use it": say so in a line
        fail(f"cannot reach the database of DATABASE_URL ({type(error).__name__}): "
             "check the URL and that the database is running")
    if migrated and missing:
        fail(f"the database is not migrated ({len(missing)} migration(s) pending): "
             "run `relous db upgrade` first")
    return database


def parse_money(value: str, option: str) -> Decimal:
    try:
        amount = Decimal(value)
        if amount < 0 or not amount.is_finite():
            raise InvalidOperation
    except InvalidOperation:
        fail(f"{option} must be a non-negative amount in EUR, e.g. 0.08", 2)
    return amount


def checked_reply(text: str, price: Decimal, allow_multipart: bool) -> Encoding:
    """The template check every reply text passes (creation and change alike)."""
    if not text.strip():
        fail("--reply must not be empty", 2)
    report = check_template(text, price)
    if not report.fits_one_segment and not allow_multipart:
        for line in describe(report):
            click.echo(line, err=True)
        fail(f"the reply needs {report.encoding.segments} segments "
              f"({report.encoding.name}); shorten it, use the suggestion, or pass "
              f"--allow-multipart to pay for them")
    return report.encoding


def parse_number(value: str) -> str:
    if not is_phone_number(value):
        fail(f"{value!r} is not a number: give E.164 digits without '+', e.g. 33612345678", 2)
    return value




def iso(value: datetime | None) -> str:
    return value.isoformat() if value else ""


def parse_pairs(items: tuple[str, ...], example: str) -> dict[str, str]:
    """`KEY=VALUE` arguments as a dict; exit 2 naming the first one without `=`."""
    pairs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            fail(f"{item!r}: give KEY=VALUE, e.g. {example}", 2)
        pairs[key.strip()] = value
    return pairs
