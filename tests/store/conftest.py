"""Fixtures of the partitioned-storage tests: a PostgreSQL database of the module's own (its
tests create months that other tests' "now" may need), emptied before each test, with one
campaign (id 1) created at NOW."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal

import psycopg
import pytest

from shared.store.campaigns import add_campaign
from shared.store.db import Database, upgrade
from tests.helpers import ADMIN_DATABASE_URL, database_url

NOW = datetime(2026, 11, 25, 20, 0, tzinfo=UTC)
CAMPAIGN = "33700000001"
RESET = ("TRUNCATE inbound_messages, inbound_parts, inbound_dedup, evidence_messages, evidence,"
         " replies, senders, parked_messages, campaigns RESTART IDENTITY CASCADE")


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    name = f"relous_partitions_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(ADMIN_DATABASE_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = database_url(name)
    database = Database(url, pool_size=1)
    upgrade(database)
    database.close()
    yield url
    with psycopg.connect(ADMIN_DATABASE_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def pg(pg_url) -> Iterator[Database]:
    """The module's PostgreSQL database, emptied, with one campaign (id 1)."""
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(RESET)
    database = Database(pg_url, pool_size=3)
    add_test_campaign(database)
    yield database
    database.close()


def add_test_campaign(database: Database) -> None:
    with database.transaction() as tx:
        add_campaign(tx, CAMPAIGN, "Stop.", delay_seconds=0, window_seconds=86400,
                     price_per_segment=Decimal("0.08"), allow_multipart=False, now=NOW)
