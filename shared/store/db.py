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
from decimal import Decimal
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

import psycopg
import psycopg_pool

# Fixed width, so that SQLite compares timestamps correctly as text.
SQLITE_TIMESTAMP = "%Y-%m-%d %H:%M:%S.%f+00:00"
_PARAM = re.compile(r"%\((\w+)\)s")
_ROW_LOCK = re.compile(r"\s+FOR (NO KEY )?UPDATE( OF \w+)?( SKIP LOCKED)?", re.IGNORECASE)


# The database was down, restarting, or a deadlock victim: worth another try later.
_TRANSIENT_ERRORS = (psycopg.OperationalError, psycopg_pool.PoolTimeout, sqlite3.OperationalError)


class DatabaseUnavailable(RuntimeError):
    """The database could not be used now (down, restarting, a deadlock): try again later.
    Callers see this, never a driver's exception class."""


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
        A transient failure of the database is raised as `DatabaseUnavailable`."""
        try:
            if self.dialect == "sqlite":
                with self._sqlite_transaction() as tx:
                    yield tx
            else:
                with self._postgres_pool().connection() as conn, conn.transaction():
                    yield _PostgresTransaction(conn)
        except _TRANSIENT_ERRORS as error:
            raise DatabaseUnavailable(type(error).__name__) from error

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
        except _TRANSIENT_ERRORS as error:
            raise DatabaseUnavailable(type(error).__name__) from error

    def _postgres_pool(self) -> Any:
        if self._pool is None or self._pool_pid != os.getpid():
            with self._lock:
                if self._pool is None or self._pool_pid != os.getpid():
                    from psycopg.rows import dict_row
                    from psycopg_pool import ConnectionPool

                    self._pool = ConnectionPool(
                        self.url, min_size=1, max_size=self._pool_size, open=True,
                        kwargs={"row_factory": dict_row, "connect_timeout": 5},
                        timeout=10, name="relous",
                    )
                    self._pool_pid = os.getpid()
        return self._pool

    @contextmanager
    def _sqlite_transaction(self) -> Iterator[Transaction]:
        path = sqlite_path(self.url)
        conn = sqlite3.connect(path, timeout=30, isolation_level=None,
                               detect_types=sqlite3.PARSE_DECLTYPES)
        conn.row_factory = _dict_factory
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield _SqliteTransaction(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        finally:
            conn.close()


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


class _SqliteTransaction:
    dialect = "sqlite"

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Mapping[str, Any] | None = None) -> Cursor:
        return self._conn.execute(_to_sqlite(sql), _sqlite_params(params))

    def executemany(self, sql: str, rows: Sequence[Mapping[str, Any]]) -> None:
        self._conn.executemany(_to_sqlite(sql), [_sqlite_params(row) for row in rows])


def _to_sqlite(sql: str) -> str:
    return _ROW_LOCK.sub("", _PARAM.sub(r":\1", sql))


def _sqlite_params(params: Mapping[str, Any] | None) -> dict[str, Any]:
    converted: dict[str, Any] = {}
    for key, value in (params or {}).items():
        if isinstance(value, datetime):
            value = value.astimezone(UTC).strftime(SQLITE_TIMESTAMP)
        elif isinstance(value, Decimal):
            value = str(value)
        converted[key] = value
    return converted


def _dict_factory(cursor: sqlite3.Cursor, row: tuple) -> dict[str, Any]:
    return {col[0]: value for col, value in zip(cursor.description, row, strict=True)}


def _parse_sqlite_timestamp(raw: bytes) -> datetime:
    return datetime.fromisoformat(raw.decode()).astimezone(UTC)


sqlite3.register_converter("TIMESTAMPTZ", _parse_sqlite_timestamp)
sqlite3.register_converter("NUMERIC", lambda raw: Decimal(raw.decode()))


# --- migrations -------------------------------------------------------------------------

_MIGRATION_FILE = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
_DIALECT_WORDS = {
    "postgresql": {"{{pk}}": "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY"},
    "sqlite": {"{{pk}}": "INTEGER PRIMARY KEY AUTOINCREMENT"},
}


def migrations() -> list[tuple[int, str, str]]:
    """(version, name, sql) of every numbered migration shipped in shared/store/migrations."""
    folder = resources.files("shared.store") / "migrations"
    found = []
    for entry in folder.iterdir():
        match = _MIGRATION_FILE.match(entry.name)
        if match:
            found.append((int(match.group(1)), entry.name, entry.read_text()))
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
    return [name for version, name, _ in migrations() if version not in applied]


def upgrade(db: Database) -> list[str]:
    """Apply the migrations not yet applied, each in its own transaction; return their names."""
    applied_now = []
    with db.transaction() as tx:
        tx.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL)"
        )
    for version, name, sql in migrations():
        with db.transaction() as tx:
            if tx.dialect == "postgresql":
                # Two `release` processes at once: the second waits, then sees the version.
                tx.execute("LOCK TABLE schema_migrations IN EXCLUSIVE MODE")
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


def _statements(sql: str) -> list[str]:
    lines = (line for line in sql.splitlines() if not line.strip().startswith("--"))
    without_comments = "\n".join(lines)
    return [part.strip() for part in without_comments.split(";") if part.strip()]


def ensure_sqlite_folder(url: str) -> None:
    """Create the folder of an embedded database file."""
    if url.startswith("sqlite:"):
        Path(sqlite_path(url)).parent.mkdir(parents=True, exist_ok=True)
