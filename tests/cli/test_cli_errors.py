"""What a person sees when the `relous` command cannot do its job: one line on stderr that
says what to do, the exit code CONTRACT.md gives (1: it could not be done as things stand,
2: what was typed is wrong), never a traceback, and a wait of seconds. Run as the real
command, in a process of its own, with only the environment each case names.

Bad values (exit 2) are in test_cli_errors_values.py."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest

from tests.helpers import ADMIN_DATABASE_URL, RUN_ID, database_url, venv_bin

CAMPAIGN = "33700000001"
UNKNOWN = "33799999999"
KEYS = {"RELOUS_SECRET_KEY": "cli-test-secret-key-0123456789",
        "RELOUS_EVIDENCE_KEY": "J0IhnNDVUCQ6ZR7nKp7r1g5KcS9M3t1yW4O9bWrbsVw="}
# Every command that reads or writes the database, with valid arguments.
DATABASE_COMMANDS = [
    ["campaign", "add", CAMPAIGN, "--reply", "Stop."],
    ["campaign", "list"],
    ["campaign", "pause", CAMPAIGN],
    ["campaign", "resume", CAMPAIGN],
    ["campaign", "set", CAMPAIGN, "sender_per_minute=5"],
    ["budget", "set", CAMPAIGN, "--daily", "1"],
    ["template", "check", "Stop.", "--campaign", CAMPAIGN],
    ["sender", "block", "33612345678"],
    ["sender", "unblock", "33612345678"],
    ["status"],
    ["evidence", "export", "--campaign", CAMPAIGN, "--out", "evidence.csv"],
    ["purge"],
    ["rules", "show", CAMPAIGN],
    ["rules", "set", CAMPAIGN, "lexicon=record"],
    ["sending", "stop", "--reason", "test"],
    ["sending", "start", "--campaign", CAMPAIGN],
    ["sending", "status"],
    ["parked", "list"],
    ["parked", "retry", "--all"],
    ["parked", "drop", "1"],
    ["explain", "33612345678"],
    ["explain", "--message", "1"],
]
# Seconds any of these cases may take, process start included: a wait, not a hang.
BOUNDED = 15


def relous(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    base = {"PATH": os.environ["PATH"], "HOME": str(cwd), "LANG": "C.UTF-8"}
    return subprocess.run([str(Path(venv_bin()) / "relous"), *args], env=base | env,
                          cwd=cwd, capture_output=True, text=True, timeout=60, check=False)


def assert_one_line(result: subprocess.CompletedProcess, code: int, *hints: str) -> str:
    """Exit `code`, exactly one line on stderr, `error: …` naming each hint; that line."""
    assert result.returncode == code, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and result.stderr.endswith("\n"), result.stderr
    assert lines[0].startswith("error: ")
    for hint in hints:
        assert hint in lines[0], lines[0]
    return lines[0]


def sqlite_env(path: Path) -> dict[str, str]:
    return {"DATABASE_URL": f"sqlite:///{path}",
            "RELOUS_BROKER_DIR": str(path.parent / "broker"), **KEYS}


@pytest.fixture(scope="module")
def migrated(tmp_path_factory) -> dict[str, str]:
    """A migrated embedded database with campaign CAMPAIGN and one parked message."""
    from shared.store.campaigns import add_campaign
    from shared.store.db import Database, upgrade
    from shared.store.parked import park
    from shared.vault import seal

    path = tmp_path_factory.mktemp("migrated") / "relous.db"
    database = Database(f"sqlite:///{path}")
    upgrade(database)
    now = datetime.now(UTC)
    with database.transaction() as tx:
        add_campaign(tx, CAMPAIGN, "Stop.", delay_seconds=0, window_seconds=86400,
                     price_per_segment=Decimal("0.08"), allow_multipart=False, now=now)
        park(tx, "inbound", "PARKED", seal('{"to": "33700000001"}',
                                           KEYS["RELOUS_EVIDENCE_KEY"]), "ValueError", now)
    return sqlite_env(path)


def _partly_migrated(database) -> None:
    """Migrated, then the newest migration forgotten: an older schema under newer code."""
    from shared.store.db import upgrade

    upgrade(database)
    with database.transaction() as tx:
        tx.execute("DELETE FROM schema_migrations WHERE version ="
                   " (SELECT MAX(version) FROM schema_migrations)")


@pytest.fixture(scope="module")
def unmigrated(tmp_path_factory) -> Iterator[dict[str, dict[str, str]]]:
    """The environment of each kind of unmigrated database: an embedded file not created
    yet (its folder neither), an embedded file one migration behind, an empty PostgreSQL
    database and one a migration behind (this run's own, dropped at the end)."""
    from shared.store.db import Database

    folder = tmp_path_factory.mktemp("unmigrated")
    partial = folder / "partial.db"
    _partly_migrated(Database(f"sqlite:///{partial}"))
    names = {kind: f"relous_clierr_{kind}_{RUN_ID}" for kind in ("empty", "partial")}
    with psycopg.connect(ADMIN_DATABASE_URL, autocommit=True) as conn:
        for name in names.values():
            conn.execute(f'CREATE DATABASE "{name}"')
    partial_pg = Database(database_url(names["partial"]), pool_size=1)
    _partly_migrated(partial_pg)
    partial_pg.close()
    yield {
        "sqlite-missing": sqlite_env(folder / "no" / "such" / "relous.db"),
        "sqlite-partial": sqlite_env(partial),
        "postgresql-empty": {"DATABASE_URL": database_url(names["empty"]), **KEYS},
        "postgresql-partial": {"DATABASE_URL": database_url(names["partial"]), **KEYS},
    }
    with psycopg.connect(ADMIN_DATABASE_URL, autocommit=True) as conn:
        for name in names.values():
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never answers (a hung server, a firewall that
    lets the handshake through): only the clients' own timeouts end the wait."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(64)
        yield server.getsockname()[1]


def test_status_on_sqlite_needs_no_key_and_no_broker(tmp_path):
    """An operator's first look, on the embedded default: no production keys, no RabbitMQ."""
    env = {"DATABASE_URL": f"sqlite:///{tmp_path / 'relous.db'}",
           "RELOUS_BROKER_DIR": str(tmp_path / "broker")}
    assert relous(["db", "upgrade"], env, tmp_path).returncode == 0
    assert relous(["campaign", "add", CAMPAIGN, "--reply", "Stop."], env,
                  tmp_path).returncode == 0
    shown = relous(["status"], env, tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert CAMPAIGN in shown.stdout and "Traceback" not in shown.stderr
    assert "-0.00" not in shown.stdout


@pytest.mark.parametrize("args", DATABASE_COMMANDS, ids=" ".join)
@pytest.mark.parametrize("kind", ["sqlite-missing", "postgresql-empty"])
def test_an_unmigrated_database_says_to_run_db_upgrade(unmigrated, tmp_path, kind, args):
    result = relous(args, unmigrated[kind], tmp_path)
    assert_one_line(result, 1, "`relous db upgrade`")
    url = unmigrated[kind]["DATABASE_URL"]
    if url.startswith("sqlite:"):
        assert not Path(url.removeprefix("sqlite:///")).parent.exists(), \
            "only `relous db upgrade` creates an embedded database"


@pytest.mark.parametrize("args", [["campaign", "list"], ["status"],
                                  ["campaign", "add", CAMPAIGN, "--reply", "Stop."]],
                         ids=" ".join)
@pytest.mark.parametrize("kind", ["sqlite-partial", "postgresql-partial"])
def test_a_database_one_migration_behind_says_to_run_db_upgrade(unmigrated, tmp_path, kind,
                                                                args):
    result = relous(args, unmigrated[kind], tmp_path)
    assert_one_line(result, 1, "1 migration(s) pending", "`relous db upgrade`")


def _unreachable(kind: str, tmp_path: Path, silent_port: int) -> str:
    return {
        "postgresql closed port": "postgresql://postgres@127.0.0.1:1/relous",
        "postgresql unknown host": "postgresql://postgres@relous-no-such-host.invalid/relous",
        "postgresql silent server": f"postgresql://postgres@127.0.0.1:{silent_port}/relous",
        "postgresql no such database": database_url(f"relous_clierr_none_{RUN_ID}"),
        "sqlite folder is a file": f"sqlite:///{tmp_path / 'a-file' / 'relous.db'}",
        "sqlite unwritable folder": "sqlite:////proc/relous-no-such/relous.db",
    }[kind]


@pytest.mark.parametrize("args", [["campaign", "list"], ["db", "upgrade"]], ids=" ".join)
@pytest.mark.parametrize("kind", [
    "postgresql closed port", "postgresql unknown host", "postgresql silent server",
    "postgresql no such database", "sqlite folder is a file", "sqlite unwritable folder"])
def test_an_unreachable_database_is_one_line_within_seconds(tmp_path, silent_port, kind,
                                                             args):
    (tmp_path / "a-file").write_text("not a folder\n")
    env = {"DATABASE_URL": _unreachable(kind, tmp_path, silent_port), **KEYS}
    started = time.monotonic()
    result = relous(args, env, tmp_path)
    assert time.monotonic() - started < BOUNDED
    line = assert_one_line(result, 1, "DATABASE_URL")
    assert "check" in line or "`relous db upgrade`" in line


@pytest.fixture(params=["closed port", "unknown host", "silent server"])
def unreachable_broker(request, silent_port) -> dict[str, str]:
    host = {"closed port": "127.0.0.1:1", "unknown host": "relous-no-such-host.invalid:5672",
            "silent server": f"127.0.0.1:{silent_port}"}[request.param]
    return {"BROKER_URL": f"amqp://guest:guest@{host}//"}


def test_status_without_its_broker_shows_the_rest_then_one_line(migrated, tmp_path,
                                                                unreachable_broker):
    started = time.monotonic()
    result = relous(["status"], migrated | unreachable_broker, tmp_path)
    assert time.monotonic() - started < BOUNDED
    assert_one_line(result, 1, "cannot reach the broker of BROKER_URL", "RabbitMQ")
    assert CAMPAIGN in result.stdout and "queues: unavailable" in result.stdout


def test_parked_retry_without_its_broker_keeps_the_message(migrated, tmp_path,
                                                           unreachable_broker):
    started = time.monotonic()
    result = relous(["parked", "retry", "--all"], migrated | unreachable_broker, tmp_path)
    assert time.monotonic() - started < BOUNDED
    assert_one_line(result, 1, "broker of BROKER_URL did not take", "stays parked",
                    "RabbitMQ")
    assert "PARKED" in relous(["parked", "list"], migrated, tmp_path).stdout


@pytest.mark.parametrize(("args", "hint"), [
    (["campaign", "pause", UNKNOWN], "`relous campaign list`"),
    (["campaign", "resume", UNKNOWN], "`relous campaign list`"),
    (["campaign", "set", UNKNOWN, "sender_per_minute=5"], "`relous campaign list`"),
    (["budget", "set", UNKNOWN, "--daily", "1"], "`relous campaign list`"),
    (["rules", "show", UNKNOWN], "`relous campaign list`"),
    (["rules", "set", UNKNOWN, "lexicon=record"], "`relous campaign list`"),
    (["sending", "stop", "--campaign", UNKNOWN, "--reason", "test"],
     "`relous campaign list`"),
    (["sending", "start", "--campaign", UNKNOWN], "`relous campaign list`"),
    (["evidence", "export", "--campaign", UNKNOWN, "--out", "e.csv"],
     "`relous campaign list`"),
    (["template", "check", "Stop.", "--campaign", UNKNOWN], "`relous campaign list`"),
    (["explain", "33612345678"], "check the number"),
    (["explain", "--message", "999"], "check the id"),
    (["parked", "retry", "999"], "`relous parked list`"),
    (["parked", "drop", "999"], "`relous parked list`"),
], ids=lambda value: " ".join(value[:2]) if isinstance(value, list) else None)
def test_an_unknown_campaign_or_id_is_one_line_exit_1(migrated, tmp_path, args, hint):
    """A well-formed number that nothing answers on is a check that failed (1), not bad
    usage (2): the same command works once the campaign exists."""
    line = assert_one_line(relous(args, migrated, tmp_path), 1, hint)
    assert "33612345678" not in line, "a sender's number is never echoed"
    assert not (tmp_path / "e.csv").exists()
