"""What a database failure means for the caller, decided by SQLSTATE, never by the driver's
exception class (psycopg classes "index row too large" as an OperationalError, just like
"connection lost").

- `DatabaseUnavailable`: the database cannot be used now (connection lost, shutting down,
  out of connections): give the work back and try later.
- `DatabaseContention` (a `DatabaseBusy`): another session got in the way (serialization
  failure, deadlock, lock wait timed out): the batch goes back to the queue; alone, a few
  more tries, then parked.
- `DatabaseBusy`: this statement timed out: a few more tries alone, then parked.
- `DatabaseRefused`: this input can never be stored as it is (too large for an index,
  invalid bytes, a constraint): park it at once, never requeue it.
"""

from __future__ import annotations

import sqlite3

import psycopg
import psycopg_pool

UNAVAILABLE_CLASSES = ("08", "53", "58")             # connection, resources, system I/O
UNAVAILABLE_CODES = ("57P01", "57P02", "57P03")      # admin or crash shutdown, starting up
CONTENTION_CODES = ("40001", "40P01", "55P03")       # serialization, deadlock, lock wait
BUSY_CODES = ("57014",)                              # statement timeout


class DatabaseError(RuntimeError):
    """A failure of the database, classified; the message names the SQLSTATE or class."""


class DatabaseUnavailable(DatabaseError):
    """The database could not be used now: try the same work again later."""


class DatabaseBusy(DatabaseError):
    """This transaction lost a race or timed out: a bounded number of tries, then parked."""


class DatabaseContention(DatabaseBusy):
    """Another session got in the way (a lock held too long, a deadlock, a serialization
    failure): nothing about this input; the whole batch may simply try again later."""


class DatabaseRefused(DatabaseError):
    """The database refuses this input for good: park it, do not requeue it."""


def classify(error: BaseException) -> DatabaseError | None:
    """The classified form of a driver's exception; None for anything else (a bug)."""
    if isinstance(error, psycopg_pool.PoolTimeout):
        return DatabaseUnavailable("PoolTimeout")
    if isinstance(error, psycopg.Error):
        state = error.sqlstate
        label = f"{type(error).__name__} {state or ''}".strip()
        if state is None:  # raised by the client: a lost connection, or bad input
            lost = isinstance(error, psycopg.OperationalError | psycopg.InterfaceError)
            return DatabaseUnavailable(label) if lost else DatabaseRefused(label)
        if state[:2] in UNAVAILABLE_CLASSES or state in UNAVAILABLE_CODES:
            return DatabaseUnavailable(label)
        if state in CONTENTION_CODES:
            return DatabaseContention(label)
        if state in BUSY_CODES:
            return DatabaseBusy(label)
        return DatabaseRefused(label)
    if isinstance(error, sqlite3.Error):
        text = str(error).lower()
        label = type(error).__name__
        if "locked" in text or "busy" in text:
            return DatabaseContention(label)
        if isinstance(error, sqlite3.OperationalError) and (
                "unable to open" in text or "disk i/o" in text):
            return DatabaseUnavailable(label)
        return DatabaseRefused(label)
    return None
