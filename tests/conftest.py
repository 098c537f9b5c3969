"""Fixtures: a PostgreSQL database and RabbitMQ virtual hosts of this run's own, the fake
Vonage over HTTPS, and Celery workers started in-process (no Docker).

`pytest_configure` sets the environment once, before any test module is imported, so that
the apps the tests build and the processes they start read what production would.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator

import psycopg
import pytest
from cryptography.fernet import Fernet

from tests.helpers import (
    ADMIN_DATABASE_URL,
    FAKE_VONAGE,
    QUORUM_TICK_EVAL,
    SECRET_KEY,
    SIGNATURE_SECRET,
    TABLES,
    TEST_DATABASE,
    VHOSTS,
    _rabbitmqctl,
    broker_url,
    database_url,
)


def _set_environment() -> None:
    os.environ.update({
        "DATABASE_URL": database_url(TEST_DATABASE),
        "BROKER_URL": broker_url(VHOSTS["test"]),
        "SMS_PROVIDER": "vonage",
        "VONAGE_API_KEY": FAKE_VONAGE.fake.api_key,
        "VONAGE_API_SECRET": FAKE_VONAGE.fake.api_secret,
        "VONAGE_REST_HOST": FAKE_VONAGE.host,
        "REQUESTS_CA_BUNDLE": str(FAKE_VONAGE.ca_bundle),
        "VONAGE_SIGNATURE_SECRET": SIGNATURE_SECRET,
        "VONAGE_SIGNATURE_METHOD": "sha256",
        "RELOUS_SECRET_KEY": SECRET_KEY,
        "RELOUS_EVIDENCE_KEY": Fernet.generate_key().decode(),
        "LOG_LEVEL": "INFO",
    })
    os.environ.pop("CLOUDAMQP_URL", None)
    os.environ.pop("METRICS_TOKEN", None)


def pytest_configure(config: pytest.Config) -> None:
    if hasattr(config, "workerinput"):
        return
    _set_environment()
    try:
        with psycopg.connect(ADMIN_DATABASE_URL, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{TEST_DATABASE}"')
    except psycopg.OperationalError as error:
        pytest.exit(f"PostgreSQL is not reachable at {ADMIN_DATABASE_URL} ({error}); "
                    "start it or run `bash .ci/run`", returncode=3)
    if shutil.which("rabbitmqctl") is None:
        pytest.exit("rabbitmqctl not found: the tests need a local RabbitMQ; run `bash .ci/run`",
                    returncode=3)
    _rabbitmqctl("eval", QUORUM_TICK_EVAL)  # before any queue of this run exists
    for vhost in VHOSTS.values():
        _rabbitmqctl("add_vhost", vhost)
        _rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    FAKE_VONAGE.start()
    from shared.store.db import Database, upgrade

    upgrade(Database(os.environ["DATABASE_URL"], pool_size=1))


def pytest_unconfigure(config: pytest.Config) -> None:
    if hasattr(config, "workerinput"):
        return
    from shared.store.db import database_for

    database_for(os.environ["DATABASE_URL"]).close()
    FAKE_VONAGE.stop()
    for vhost in VHOSTS.values():
        subprocess.run(["rabbitmqctl", "-q", "delete_vhost", vhost], capture_output=True,
                       timeout=60, check=False)
    with psycopg.connect(ADMIN_DATABASE_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{TEST_DATABASE}" WITH (FORCE)')


@pytest.fixture
def db() -> Iterator[psycopg.Connection]:
    """A clean test database (tables emptied), as a plain autocommit connection."""
    with psycopg.connect(os.environ["DATABASE_URL"], autocommit=True,
                         row_factory=psycopg.rows.dict_row) as conn:
        for attempt in range(5):
            try:
                conn.execute(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE")
                break
            except psycopg.errors.DeadlockDetected:
                # A previous test's work still running in the session worker (a send round)
                # took a table in another order: PostgreSQL chose this side; again.
                if attempt == 4:
                    raise
        yield conn


@pytest.fixture
def fake_vonage() -> Iterator:
    FAKE_VONAGE.fake.reset()
    yield FAKE_VONAGE.fake
    FAKE_VONAGE.fake.reset()


@pytest.fixture(scope="session", autouse=True)
def celery_app():
    """The workers' app, built from the environment the run set: the tasks run on it, in a
    test's worker or called directly."""
    from shared.settings import Settings
    from workers.app import create_celery

    return create_celery(Settings.from_env())


@pytest.fixture(scope="session")
def worker(celery_app) -> Iterator:
    """A real Celery worker in this process, consuming the run's RabbitMQ queues."""
    from celery.contrib.testing.worker import start_worker

    from shared.broker import INBOUND_QUEUE, REPLIES_QUEUE

    with start_worker(celery_app, pool="threads", concurrency=4, perform_ping_check=False,
                      queues=[INBOUND_QUEUE, REPLIES_QUEUE], loglevel="WARNING",
                      shutdown_timeout=30) as running:
        # An in-thread worker's event loop leaves deliveries already read from the socket
        # waiting until its next timer tick (~10 s; celery/celery#6941): a frequent no-op
        # tick keeps the test worker prompt. Production workers run as processes.
        running.consumer.timer.call_repeatedly(0.005, _tick)
        yield running


def _tick() -> None:
    """No-op timer entry (see `worker`)."""


@pytest.fixture
def campaign(db) -> Callable[..., str]:
    """Create a campaign: `campaign("33700000001", delay=0)` returns its number."""
    from datetime import UTC, datetime
    from decimal import Decimal

    from shared.store.campaigns import add_campaign
    from shared.store.db import database_for

    def create(number: str = "33700000001", reply: str = "Laissez-la tranquille.",
               delay: int = 0, window: int = 30 * 86400) -> str:
        with database_for(os.environ["DATABASE_URL"]).transaction() as tx:
            add_campaign(tx, number, reply, delay_seconds=delay, window_seconds=window,
                         price_per_segment=Decimal("0.0333"), allow_multipart=False,
                         now=datetime.now(UTC))
        return number

    return create


