"""Database access for PostgreSQL (production) and SQLite (the embedded default).

SQL is written once, for PostgreSQL, with psycopg's named parameters (`%(name)s`). On
SQLite the same text runs after two mechanical rewrites: parameters become `:name`, and
`FOR UPDATE [OF t] [SKIP LOCKED]` is dropped (SQLite serialises writers: a write
transaction already holds the whole database). Each process gets its own psycopg
connection pool, created lazily after any fork.
"""

from __future__ import annotations

import os
import re
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

import psycopg
import psycopg_pool

from shared.store.failures import classify
from shared.store.sqlite import SqliteTransaction, connection, forget_connection, write_lock

# No statement, lock wait or forgotten transaction of ours blocks the others for long: a
# session idle in a transaction while holding a campaign's row would stop its inbound.
SESSION_LIMITS = ("-c statement_timeout=30000 -c lock_timeout=10000"
                  " -c idle_in_transaction_session_timeout=60000")


class Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...


class Transaction(Protocol):
    """What storage functions receive: one open transaction."""

    dialect: str

    def execute(self, sql: str, params: Mapping[str, Any] | None = None) -> Cursor: ...
    def executemany(self, sql: str, rows: Sequence[Mapping[str, Any]]) -> None: ...


class Database:
    """A database URL and the per-process connections to it."""

    def __init__(self, url: str, *, pool_size: int = 4) -> None:
        self.url = url
        self.dialect = "sqlite" if url.startswith("sqlite:") else "postgresql"
        self._pool_size = pool_size
        self._pool: Any = None
        self._pool_pid: int | None = None
        self._lock = threading.Lock()

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """One transaction: committed when the block ends, rolled back on an exception.
        A failure of the database is raised classified (shared/store/failures.py): callers
        never see a driver's exception class."""
        try:
            if self.dialect == "sqlite":
                with self._sqlite_transaction() as tx:
                    yield tx
            else:
                with self._postgres_pool().connection() as conn, conn.transaction():
                    yield _PostgresTransaction(conn)
        except (psycopg.Error, psycopg_pool.PoolTimeout, sqlite3.Error) as error:
            raise (classify(error) or error) from error

    def close(self) -> None:
        if self._pool is not None and self._pool_pid == os.getpid():
            self._pool.close()
        self._pool = None

    def ping(self) -> None:
        """Raise when the database does not answer (a fresh connection, quick to fail)."""
        if self.dialect == "sqlite":
            with self.transaction() as tx:
                tx.execute("SELECT 1").fetchone()
            return
        try:
            with psycopg.connect(self.url, connect_timeout=3) as conn:
                conn.execute("SELECT 1").fetchone()
        except psycopg.Error as error:
            raise (classify(error) or error) from error

    def _postgres_pool(self) -> Any:
        if self._pool is None or self._pool_pid != os.getpid():
            with self._lock:
                if self._pool is None or self._pool_pid != os.getpid():
                    from psycopg.rows import dict_row
                    from psycopg_pool import ConnectionPool

                    self._pool = ConnectionPool(
                        self.url, min_size=1, max_size=self._pool_size, open=True,
                        kwargs={"row_factory": dict_row, "connect_timeout": 5,
                                "options": SESSION_LIMITS},
                        timeout=10, name="relous",
                    )
                    self._pool_pid = os.getpid()
        return self._pool

    @contextmanager
    def _sqlite_transaction(self) -> Iterator[Transaction]:
        """A write transaction on this thread's connection. The threads of one process take
        turns through a lock: left to SQLite's busy handler, a waiting writer sleeps up to
        100 ms at a time and the demo's inbound batches starve behind its sends."""
        path = sqlite_path(self.url)
        with write_lock(path):
            conn = connection(path)
            try:
                conn.execute("BEGIN IMMEDIATE")
            except BaseException:
                forget_connection(path)
                raise
            try:
                yield SqliteTransaction(conn)
            except BaseException:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    forget_connection(path)
                raise
            try:
                conn.execute("COMMIT")
            except BaseException:
                forget_connection(path)
                raise


@cache
def database_for(url: str) -> Database:
    """This process's database for `url` (its psycopg pool opens on first use, after any
    fork)."""
    return Database(url)


def sqlite_path(url: str) -> str:
    """`sqlite:///relous.db` -> `relous.db`; `sqlite:////tmp/x.db` -> `/tmp/x.db`."""
    path = urlparse(url).path
    return path[1:] if path.startswith("/") else path or ":memory:"


class _PostgresTransaction:
    dialect = "postgresql"

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Mapping[str, Any] | None = None) -> Cursor:
        return self._conn.execute(sql, params)

    def executemany(self, sql: str, rows: Sequence[Mapping[str, Any]]) -> None:
        with self._conn.cursor() as cur:
            cur.executemany(sql, rows)


# --- migrations -------------------------------------------------------------------------

# `NNNN_name.sql` runs on every dialect; `NNNN_name.postgresql.sql` and `NNNN_name.sqlite.sql`
# are one version written twice, for what only one dialect has (partitions: 0008).
_MIGRATION_FILE = re.compile(r"^(\d{4})_[a-z0-9_]+(?:\.(postgresql|sqlite))?\.sql$")
_DIALECT_WORDS = {
    "postgresql": {"{{pk}}": "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
                   # the same key as workers/inbound.py's text_key
                   "{{fingerprint_hash}}":
                       "left(encode(sha256(convert_to(fingerprint, 'UTF8')), 'hex'), 32)"},
    # SQLite has no sha256: the embedded default's old keys are cleared (a day of
    # repetition counts starts again).
    "sqlite": {"{{pk}}": "INTEGER PRIMARY KEY AUTOINCREMENT", "{{fingerprint_hash}}": "''"},
}


def migrations(dialect: str = "postgresql") -> list[tuple[int, str, str]]:
    """(version, name, sql) of every numbered migration shipped in shared/store/migrations
    for `dialect`: the common files and that dialect's own."""
    folder = resources.files("shared.store") / "migrations"
    found = []
    for entry in folder.iterdir():
        match = _MIGRATION_FILE.match(entry.name)
        if match and match.group(2) in (None, dialect):
            found.append((int(match.group(1)), entry.name, entry.read_text()))
    versions = [version for version, _, _ in found]
    if len(versions) != len(set(versions)):
        raise RuntimeError(f"two {dialect} migrations share a version: {sorted(found)}")
    return sorted(found)


def pending_migrations(db: Database) -> list[str]:
    """Names of the shipped migrations not applied to `db` yet."""
    with db.transaction() as tx:
        if tx.dialect == "postgresql":
            present = tx.execute("SELECT to_regclass('schema_migrations') IS NOT NULL AS ok")
        else:
            present = tx.execute("SELECT COUNT(*) > 0 AS ok FROM sqlite_master"
                                 " WHERE type = 'table' AND name = 'schema_migrations'")
        applied = set()
        if present.fetchone()["ok"]:
            applied = {row["version"] for row in
                       tx.execute("SELECT version FROM schema_migrations").fetchall()}
    return [name for version, name, _ in migrations(db.dialect) if version not in applied]


def upgrade(db: Database, up_to: int | None = None) -> list[str]:
    """Apply the migrations not yet applied (up to version `up_to`, when given: the upgrade
    tests build an older schema), each in its own transaction; return their names.

    On PostgreSQL every transaction first takes one advisory lock, before anything else:
    two `release` processes at once run one after the other (creating
    `schema_migrations` itself raced), the second seeing what the first applied. SQLite's
    write transactions already run one at a time.
    """
    applied_now = []
    with db.transaction() as tx:
        _lock_migrations(tx)
        tx.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL)"
        )
    for version, name, sql in migrations(db.dialect):
        if up_to is not None and version > up_to:
            break
        with db.transaction() as tx:
            _lock_migrations(tx)
            done = tx.execute(
                "SELECT 1 FROM schema_migrations WHERE version = %(version)s", {"version": version}
            ).fetchone()
            if done:
                continue
            for word, replacement in _DIALECT_WORDS[db.dialect].items():
                sql = sql.replace(word, replacement)
            for statement in _statements(sql):
                tx.execute(statement)
            tx.execute(
                "INSERT INTO schema_migrations (version, name, applied_at)"
                " VALUES (%(version)s, %(name)s, %(now)s)",
                {"version": version, "name": name, "now": datetime.now(UTC)},
            )
            applied_now.append(name)
    return applied_now


# The advisory lock of `relous db upgrade` ("relous" in ASCII): one key for every database.
_MIGRATION_LOCK = 0x72656C6F7573


def _lock_migrations(tx: Transaction) -> None:
    if tx.dialect == "postgresql":
        tx.execute("SELECT pg_advisory_xact_lock(%(key)s)", {"key": _MIGRATION_LOCK})


def _statements(sql: str) -> list[str]:
    """The statements of a migration: split at semicolons, except inside a `$$`-quoted
    body (a PostgreSQL `DO` block)."""
    lines = (line for line in sql.splitlines() if not line.strip().startswith("--"))
    statements, current = [], ""
    for index, chunk in enumerate("\n".join(lines).split("$$")):
        if index % 2:  # inside $$ … $$: kept whole
            current += "$$" + chunk + "$$"
            continue
        first, *rest = chunk.split(";")
        current += first
        for piece in rest:
            statements.append(current)
            current = piece
    statements.append(current)
    return [part.strip() for part in statements if part.strip()]


def ensure_sqlite_folder(url: str) -> None:
    """Create the folder of an embedded database file."""
    if url.startswith("sqlite:"):
        Path(sqlite_path(url)).parent.mkdir(parents=True, exist_ok=True)
