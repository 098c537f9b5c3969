"""A bad value on the `relous` command line (a malformed number, amount, date or id, an
unknown key, rule or mode): one line on stderr naming what to type, exit 2, nothing
changed. Money is never printed as a negative zero. Unexpected failures are one line too,
and `relous --traceback` shows where they came from."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from datetime import UTC, datetime
from decimal import Decimal

import psycopg
import pytest
from click.testing import CliRunner

from shared.settings import ConfigError
from shared.store.failures import DatabaseContention, DatabaseUnavailable
from tests.cli.test_cli_errors import (  # noqa: F401 (`migrated` is a fixture)
    CAMPAIGN,
    assert_one_line,
    migrated,
    relous,
    sqlite_env,
)
from workers.cli.common import failure, money

ADD = ["campaign", "add", "33700000005", "--reply", "Stop."]
BAD_VALUES = [
    (["campaign", "add", "+33700000005", "--reply", "Stop."], "E.164 digits"),
    (["campaign", "pause", "nope"], "E.164 digits"),
    (["sender", "block", "123"], "E.164 digits"),
    ([*ADD, "--delay", "abc"], "`relous campaign add --help`"),
    ([*ADD, "--delay", "-1"], "--delay"),
    ([*ADD, "--delay", "99999999999"], "--delay"),
    ([*ADD, "--price-per-segment", "cheap"], "e.g. 0.08"),
    ([*ADD, "--price-per-segment", "NaN"], "e.g. 0.08"),
    ([*ADD, "--price-per-segment", "1e9"], "from 0 to 999999"),
    (["campaign", "add", "33700000005", "--reply", "   "], "--reply"),
    (["campaign", "add", "33700000005"], "--reply"),
    (["campaign", "set", CAMPAIGN, "no_such_rule=1"], "known: "),
    (["campaign", "set", CAMPAIGN, "sender_per_minute=abc"], "must be a number"),
    (["campaign", "set", CAMPAIGN, "sender_per_minute=-3"], "not negative"),
    (["campaign", "set", CAMPAIGN, "storm_ratio=nan"], "finite number"),
    (["campaign", "set", CAMPAIGN, "block_seconds=1e30"], "block_seconds must be"),
    (["campaign", "set", CAMPAIGN, "block_seconds=10000000000"], "at most 1000000000"),
    (["campaign", "set", CAMPAIGN, "reply_countries=XX"], "ISO 3166"),
    (["campaign", "set", CAMPAIGN, "sender_per_minute"], "KEY=VALUE"),
    (["campaign", "set", CAMPAIGN, "--window", "0"], "--window"),
    (["rules", "set", CAMPAIGN, "lexicon=maybe"], "enforce, record, off"),
    (["rules", "set", CAMPAIGN, "no_such_rule=record"], "rules: "),
    (["budget", "set", CAMPAIGN], "give at least one of"),
    (["budget", "set", CAMPAIGN, "--daily", "-1"], "from 0 to"),
    (["budget", "set", CAMPAIGN, "--daily", "abc"], "e.g. 0.08"),
    (["budget", "set", CAMPAIGN, "--hourly", "1e12"], "from 0 to 999999"),
    (["template", "check", "Stop.", "--price-per-segment", "-0.01"], "from 0 to"),
    (["evidence", "export", "--campaign", CAMPAIGN, "--since", "2020-13-45", "--out",
      "e.csv"], "--since"),
    (["evidence", "export", "--campaign", CAMPAIGN, "--out", "missing/e.csv"], "create it"),
    (["explain", "--message", "abc"], "--message"),
    (["explain", "not-a-number"], "E.164"),
    (["explain"], "one of them"),
    (["parked", "retry", "abc"], "MESSAGE_ID"),
    (["parked", "retry"], "--all"),
    (["sending", "stop", "--campaign", "abc", "--reason", "test"], "E.164 digits"),
    (["sending", "stop", "--reason", "  "], "--reason"),
    (["no-such-command"], "`relous --help`"),
    (["--no-such-option", "status"], "`relous --help`"),
]


@pytest.mark.parametrize(("args", "hint"), BAD_VALUES,
                         ids=[" ".join(args) for args, _ in BAD_VALUES])
def test_a_bad_value_is_one_line_exit_2_and_changes_nothing(migrated, tmp_path, args,  # noqa: F811
                                                            hint):
    before = _campaigns(migrated)
    assert_one_line(relous(args, migrated, tmp_path), 2, hint)
    assert _campaigns(migrated) == before
    assert not (tmp_path / "e.csv").exists()


def _campaigns(env: dict[str, str]) -> list[tuple]:
    """Every campaign and budget row of the embedded database, as stored."""
    with closing(sqlite3.connect(env["DATABASE_URL"].removeprefix("sqlite:///"))) as conn:
        return (conn.execute("SELECT * FROM campaigns ORDER BY id").fetchall()
                + conn.execute("SELECT * FROM budgets ORDER BY campaign_id").fetchall())


def test_a_refund_that_leaves_a_negative_zero_prints_zero(tmp_path):
    """On SQLite the used amounts are floats: reserving 0.3 then returning 0.1 and 0.2
    leaves -2.8e-17, which `:.4f` printed as `-0.0000`."""
    from shared.store.budgets import apply_charges, lock_budget
    from shared.store.campaigns import find_campaign
    from shared.store.db import Database

    env = sqlite_env(tmp_path / "relous.db")
    for args in (["db", "upgrade"], ["campaign", "add", CAMPAIGN, "--reply", "Stop."]):
        assert relous(args, env, tmp_path).returncode == 0
    capped = relous(["budget", "set", CAMPAIGN, "--daily", "1", "--hourly", "-0"], env,
                    tmp_path)
    assert capped.stdout == f"budget of {CAMPAIGN}: hourly 0.00 EUR, daily 1.00 EUR\n"
    with Database(env["DATABASE_URL"]).transaction() as tx:
        found = find_campaign(tx, CAMPAIGN)
        assert found is not None
        budget = lock_budget(tx, found.id, datetime.now(UTC), found.time_zone)
        apply_charges(tx, [{"campaign_id": found.id, "charge_delta": delta,
                            "reserved_hour": budget.hour_start,
                            "reserved_day": budget.day_start}
                           for delta in (Decimal("0.3"), Decimal("-0.1"), Decimal("-0.2"))])
        used = tx.execute("SELECT day_used FROM budgets").fetchone()["day_used"]
    assert f"{used:.4f}" == "-0.0000", "the case this test is about"
    shown = relous(["status"], env, tmp_path)
    assert shown.returncode == 0, shown.stderr
    row = next(line for line in shown.stdout.splitlines() if line.startswith(CAMPAIGN))
    assert "-0.0" not in shown.stdout
    assert row.split()[-5:] == ["0.0000", "hour", "0.00/0.00,", "day", "1.00/1.00"]


@pytest.mark.parametrize(("amount", "at_least", "shown"), [
    (Decimal("-0E-8"), 4, "0.0000"),
    (-2.7755575615628914e-17, 2, "0.00000000"),
    (Decimal("0.03330000"), 4, "0.0333"),
    (Decimal("0.05765"), 4, "0.05765"),
    (Decimal("1.5"), 2, "1.50"),
])
def test_money_keeps_the_stored_decimals_and_never_shows_minus_zero(amount, at_least,
                                                                    shown):
    assert money(amount, at_least) == shown


@pytest.mark.parametrize(("error", "code", "hint"), [
    (DatabaseUnavailable("OperationalError"), 1, "run the command again"),
    (DatabaseContention("SerializationFailure 40001"), 1, "busy"),
    (psycopg.errors.NumericValueOutOfRange("numeric field overflow"), 2,
     "refused a value (numeric field overflow)"),
    (psycopg.errors.UndefinedTable('relation "x" does not exist'), 1, "relous db upgrade"),
    (sqlite3.OperationalError("attempt to write a readonly database"), 1, "writable"),
    (PermissionError(13, "Permission denied", "/srv/out.csv"), 1, "/srv/out.csv"),
    (ConfigError("DATABASE_URL must start with postgresql:// or sqlite:///"), 2,
     "DATABASE_URL"),
    (KeyError("a bug"), 1, "relous --traceback"),
], ids=lambda value: type(value).__name__ if isinstance(value, Exception) else None)
def test_what_no_command_caught_is_told_with_its_exit_code(error, code, hint):
    message, exit_code = failure(error)
    assert exit_code == code and hint in message and "\n" not in message


def test_an_unexpected_error_is_one_line_and_traceback_shows_it(monkeypatch):
    from workers.cli import main, templates

    def broken(*args: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(templates, "check_template", broken)
    result = CliRunner().invoke(main, ["template", "check", "Stop."])
    assert result.exit_code == 1
    assert result.stderr == ("error: unexpected RuntimeError: a bug; `relous --traceback …` "
                             "shows where (please report it)\n")
    shown = CliRunner().invoke(main, ["--traceback", "template", "check", "Stop."])
    assert isinstance(shown.exception, RuntimeError)
