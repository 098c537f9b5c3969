"""What every `relous` command shares: one-line errors, settings, the database, values.

Every failure a person can meet ends the same way (CONTRACT.md, "CLI"): one line on
stderr, `error: what went wrong: what to do`, and the exit code says whose move it is.
1: the command could not do its job as things stand (the database or the broker cannot be
reached, the database is not migrated, no campaign answers on that number, a check
failed); running it again once that is fixed works. 2: what was typed is wrong (a
malformed number, amount, date or id, an unknown key, rule or mode); it never works as
typed. Commands call `fail` for what they check; `RelousGroup` turns everything else
(click's usage errors, database and file failures, a bug) into the same one line. Only
`relous --traceback …` shows a Python traceback.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, NoReturn

import click

from shared.broker import BrokerUnavailable
from shared.rules.money import euros
from shared.rules.phones import is_phone_number, mask
from shared.rules.segments import Encoding
from shared.rules.templates import check_template, describe
from shared.settings import ConfigError, Settings
from shared.store.db import Database, ensure_sqlite_folder, pending_migrations, sqlite_path
from shared.store.failures import (
    DatabaseBusy,
    DatabaseError,
    DatabaseRefused,
    DatabaseUnavailable,
    classify,
)

FAILED, USAGE = 1, 2
# The widest amount the money columns hold: NUMERIC(14, 8) keeps 6 digits before the point.
MAX_EUROS = Decimal("999999")
# Seconds in an INTEGER column (68 years): a delay or window beyond it cannot be stored.
MAX_SECONDS = 2**31 - 1
# click 8.2+ shows a group's help on a bare `relous campaign`: that is not an error.
_HELP = (getattr(click.exceptions, "NoArgsIsHelpError", click.exceptions.Exit),)
_DIGITS = re.compile(r"\d{8,}")


def fail(message: str, code: int = FAILED) -> NoReturn:
    click.echo(f"error: {' '.join(message.split())}", err=True)
    sys.exit(code)


def reason(error: BaseException) -> str:
    """The driver's own words for a failure, in one short line: the first line of the
    underlying error (`connection refused`, `database "x" does not exist`), never its
    DETAIL lines, and with any long digit run masked (a value may hold a number)."""
    cause = error.__cause__ or error
    lines = [line.strip() for line in str(cause).splitlines() if line.strip()]
    text = lines[0].removeprefix("connection failed: ") if lines else type(cause).__name__
    return _DIGITS.sub(lambda found: mask(found.group()), text)[:200]


class RelousGroup(click.Group):
    """The `relous` group: whatever a command raises ends here as one line on stderr."""

    def make_context(self, info_name: str | None, args: list[str],
                     parent: click.Context | None = None, **extra: Any) -> click.Context:
        with _one_line(None):
            return super().make_context(info_name, args, parent, **extra)

    def invoke(self, ctx: click.Context) -> Any:
        with _one_line(ctx):
            return super().invoke(ctx)


@contextmanager
def _one_line(ctx: click.Context | None) -> Iterator[None]:
    try:
        yield
    except (*_HELP, click.exceptions.Exit, click.Abort):
        raise
    except click.UsageError as error:
        where = error.ctx.command_path if error.ctx else "relous"
        fail(f"{error.format_message()} (see `{where} --help`)", USAGE)
    except click.ClickException as error:
        fail(error.format_message(), error.exit_code)
    except Exception as error:
        if ctx is not None and ctx.params.get("show_traceback"):
            raise
        fail(*failure(error))


def failure(error: Exception) -> tuple[str, int]:
    """What to tell a person about an error no command caught, and the exit code."""
    classified = classify(error) or error
    if classified is not error:
        classified.__cause__ = error
    if isinstance(classified, DatabaseUnavailable):
        return (f"lost the database of DATABASE_URL ({reason(classified)}): check that it "
                "is running, then run the command again", FAILED)
    if isinstance(classified, DatabaseBusy):
        return (f"the database is busy ({reason(classified)}): run the command again in a "
                "moment", FAILED)
    if isinstance(classified, DatabaseRefused):
        if str(getattr(classified.__cause__, "sqlstate", "") or "").startswith("22"):
            return (f"the database refused a value ({reason(classified)}): give a smaller "
                    "or simpler one", USAGE)
        return (f"the database refused the change ({reason(classified)}): check that it "
                "is writable and that `relous db upgrade` ran with this version", FAILED)
    if isinstance(classified, DatabaseError):
        return f"database failure ({reason(classified)}): run the command again", FAILED
    if isinstance(error, BrokerUnavailable):
        return (f"cannot reach the broker of BROKER_URL ({reason(error)}): check the URL "
                "and that RabbitMQ is running", FAILED)
    if isinstance(error, ConfigError):
        return str(error), USAGE
    if isinstance(error, OSError):
        where = f" {error.filename}" if error.filename else ""
        return (f"cannot use{where} ({error.strerror or type(error).__name__}): check the "
                "path and its permissions", FAILED)
    return (f"unexpected {type(error).__name__}: a bug; `relous --traceback …` shows where "
            "(please report it)", FAILED)


def load_settings(require_keys: bool = False) -> Settings:
    try:
        return Settings.from_env(require_keys=require_keys)
    except ConfigError as error:
        fail(str(error), USAGE)


def open_database(*, migrated: bool = True) -> Database:
    """The database of DATABASE_URL; with `migrated`, one whose schema is up to date. What
    stops a command here is said in one line: unreachable, or not migrated yet. Only
    `relous db upgrade` (not `migrated`) creates an embedded database's file and folder."""
    settings = load_settings()
    url = settings.database_url
    if url.startswith("sqlite:"):
        path = Path(sqlite_path(url))
        if migrated and not path.is_file():
            fail(f"no database at {path} (DATABASE_URL): run `relous db upgrade` to create "
                 "it, or check DATABASE_URL")
        try:
            ensure_sqlite_folder(url)
        except OSError as error:
            fail(f"cannot create the folder of DATABASE_URL's file {path} "
                 f"({error.strerror}): check DATABASE_URL; the folder must be writable")
    database = Database(url, pool_size=1)
    try:
        database.ping()
        missing = pending_migrations(database)
    except Exception as error:  # any failure here means "cannot use it": say so in a line
        fail(f"cannot reach the database of DATABASE_URL ({reason(error)}): check the URL "
             "and that the database is running")
    if migrated and missing:
        fail(f"the database is not migrated ({len(missing)} migration(s) pending): "
             "run `relous db upgrade` first")
    return database


def parse_money(value: str, option: str) -> Decimal:
    """A non-negative amount in EUR the money columns can hold; `-0` is 0."""
    try:
        amount = Decimal(value.strip())
        if not amount.is_finite() or amount < 0 or amount > MAX_EUROS:
            raise InvalidOperation
    except InvalidOperation:
        fail(f"{option} must be an amount in EUR from 0 to {MAX_EUROS}, e.g. 0.08", USAGE)
    return abs(amount)


def money(amount: Decimal | float | int | None, at_least: int = 2) -> str:
    """EUR with the decimals the amount has (at least `at_least`, at most the 8 stored),
    through `euros`: never a negative zero."""
    value = Decimal(str(amount if amount is not None else 0))
    exponent = value.normalize().as_tuple().exponent
    needed = -exponent if isinstance(exponent, int) and exponent < 0 else 0
    return euros(value, min(8, max(at_least, needed)))


def checked_reply(text: str, price: Decimal, allow_multipart: bool) -> Encoding:
    """The template check every reply text passes (creation and change alike); the report
    goes to stdout, the one-line error to stderr."""
    if not text.strip():
        fail("--reply must not be empty", USAGE)
    report = check_template(text, price)
    if not report.fits_one_segment and not allow_multipart:
        for line in describe(report):
            click.echo(line)
        fail(f"the reply needs {report.encoding.segments} segments "
              f"({report.encoding.name}); shorten it, use the suggestion, or pass "
              f"--allow-multipart to pay for them")
    return report.encoding


def parse_number(value: str) -> str:
    if not is_phone_number(value):
        fail(f"{value!r} is not a number: give E.164 digits without '+', e.g. 33612345678",
             USAGE)
    return value


def iso(value: datetime | None) -> str:
    return value.isoformat() if value else ""


def parse_pairs(items: tuple[str, ...], example: str) -> dict[str, str]:
    """`KEY=VALUE` arguments as a dict; exit 2 naming the first one without `=`."""
    pairs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            fail(f"{item!r}: give KEY=VALUE, e.g. {example}", USAGE)
        pairs[key.strip()] = value
    return pairs
