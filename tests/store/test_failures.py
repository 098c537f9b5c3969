"""Database failures are classed by SQLSTATE, not by the driver's exception class: psycopg
calls "index row too large" an OperationalError, like a lost connection."""

from __future__ import annotations

import sqlite3

import psycopg
import psycopg_pool
import pytest
from psycopg import errors

from shared.store.failures import (
    DatabaseBusy,
    DatabaseContention,
    DatabaseRefused,
    DatabaseUnavailable,
    classify,
)


@pytest.mark.parametrize(("error", "kind"), [
    (errors.ProgramLimitExceeded(), DatabaseRefused),      # 54000, an OperationalError
    (errors.CharacterNotInRepertoire(), DatabaseRefused),   # 22021
    (errors.UniqueViolation(), DatabaseRefused),
    (psycopg.DataError("NUL bytes"), DatabaseRefused),      # raised by the client
    (errors.AdminShutdown(), DatabaseUnavailable),          # 57P01
    (errors.CannotConnectNow(), DatabaseUnavailable),       # 57P03
    (errors.TooManyConnections(), DatabaseUnavailable),     # 53300
    (errors.ConnectionFailure(), DatabaseUnavailable),      # 08006
    (psycopg.OperationalError("server closed the connection"), DatabaseUnavailable),
    (psycopg_pool.PoolTimeout(), DatabaseUnavailable),
    (errors.SerializationFailure(), DatabaseContention),    # 40001
    (errors.DeadlockDetected(), DatabaseContention),        # 40P01
    (errors.LockNotAvailable(), DatabaseContention),        # 55P03, lock_timeout
    (errors.QueryCanceled(), DatabaseBusy),                 # 57014, statement_timeout
    (sqlite3.OperationalError("database is locked"), DatabaseContention),
    (sqlite3.OperationalError("unable to open database file"), DatabaseUnavailable),
    (sqlite3.IntegrityError("UNIQUE constraint failed"), DatabaseRefused),
])
def test_failures_are_classed_by_what_they_mean(error, kind):
    assert type(classify(error)) is kind


def test_a_program_limit_is_an_operational_error_to_psycopg_but_refused_here():
    """The trap itself: the exception class says 'operational', the SQLSTATE says 'this
    input can never be stored'."""
    assert isinstance(errors.ProgramLimitExceeded(), psycopg.OperationalError)
    assert isinstance(classify(errors.ProgramLimitExceeded()), DatabaseRefused)


def test_anything_else_is_not_a_database_failure():
    assert classify(ValueError("a bug")) is None
