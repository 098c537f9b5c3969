"""The SQLite dialect of shared/store/db.py (the embedded default): the same SQL after two
mechanical rewrites, a connection per thread, and one writer at a time per process.
"""

from __future__ import annotations

import os
import re
import sqlite3
import threading
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

# Fixed width, so that SQLite compares timestamps correctly as text.
SQLITE_TIMESTAMP = "%Y-%m-%d %H:%M:%S.%f+00:00"
_PARAM = re.compile(r"%\((\w+)\)s")
_ROW_LOCK = re.compile(r"\s+FOR (NO KEY )?UPDATE( OF \w+)?( SKIP LOCKED)?", re.IGNORECASE)

_sqlite_local = threading.local()
_sqlite_locks: dict[str, threading.RLock] = {}
_sqlite_locks_guard = threading.Lock()


def write_lock(path: str) -> threading.RLock:
    with _sqlite_locks_guard:
        return _sqlite_locks.setdefault(path, threading.RLock())


def connection(path: str) -> sqlite3.Connection:
    """This thread's connection to `path` (opened once per thread and process: opening one
    per transaction cost more than the transaction)."""
    connections = _sqlite_local.__dict__.setdefault("by_path", {})
    if getattr(_sqlite_local, "pid", None) != os.getpid():
        connections.clear()
        _sqlite_local.pid = os.getpid()
    conn = connections.get(path)
    if conn is None:
        conn = sqlite3.connect(path, timeout=30, isolation_level=None,
                               detect_types=sqlite3.PARSE_DECLTYPES, check_same_thread=True)
        conn.row_factory = _dict_factory
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA foreign_keys=ON")
        connections[path] = conn
    return conn


def forget_connection(path: str) -> None:
    conn = _sqlite_local.__dict__.get("by_path", {}).pop(path, None)
    if conn is not None:
        conn.close()


class SqliteTransaction:
    dialect = "sqlite"

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Mapping[str, Any] | None = None) -> sqlite3.Cursor:
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
