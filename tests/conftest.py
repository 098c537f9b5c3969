"""Test set-up: a PostgreSQL database and RabbitMQ virtual hosts of this run's own, the fake
Vonage over HTTPS, and Celery workers started in-process (no Docker).

The environment is set here, before any test imports `workers.app`, so that the Celery app
and every process the tests start read the same configuration as production would.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from cryptography.fernet import Fernet

from tests.fake_vonage import FakeVonageServer

ROOT = Path(__file__).resolve().parent.parent
RUN_ID = uuid.uuid4().hex[:8]
ADMIN_DATABASE_URL = os.environ.get(
    "RELOUS_TEST_ADMIN_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
BROKER_HOST = os.environ.get("RELOUS_TEST_BROKER_HOST", "127.0.0.1:5672")
TEST_DATABASE = f"relous_test_{RUN_ID}"
VHOSTS = {name: f"relous_{name}_{RUN_ID}" for name in ("test", "idle", "e2e", "honcho", "budget")}
SIGNATURE_SECRET = "test-signature-secret"
SECRET_KEY = "test-secret-key-0123456789"


def database_url(name: str) -> str:
    base = ADMIN_DATABASE_URL.rsplit("/", 1)[0]
    return f"{base}/{name}"


def broker_url(vhost: str, host: str = BROKER_HOST) -> str:
    return f"amqp://guest:guest@{host}/{vhost}"


def wait_for(predicate: Callable[[], object], timeout: float = 30.0,
             interval: float = 0.05, message: str = "condition") -> object:
    """Poll until `predicate()` is truthy; fail after `timeout` seconds (no blind sleeps)."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


FAKE_VONAGE = FakeVonageServer()

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
    try:
        with psycopg.connect(ADMIN_DATABASE_URL, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{TEST_DATABASE}"')
    except psycopg.OperationalError as error:
        pytest.exit(f"PostgreSQL is not reachable at {ADMIN_DATABASE_URL} ({error}); "
                    "start it or run `bash .ci/run`", returncode=3)
    if shutil.which("rabbitmqctl") is None:
        pytest.exit("rabbitmqctl not found: the tests need a local RabbitMQ; run `bash .ci/run`",
                    returncode=3)
    for vhost in VHOSTS.values():
        _rabbitmqctl("add_vhost", vhost)
        _rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    FAKE_VONAGE.start()
    from shared.db import Database, upgrade

    upgrade(Database(os.environ["DATABASE_URL"], pool_size=1))


def pytest_unconfigure(config: pytest.Config) -> None:
    if hasattr(config, "workerinput"):
        return
    from workers.tasks import database

    database(os.environ["DATABASE_URL"]).close()
    FAKE_VONAGE.stop()
    for vhost in VHOSTS.values():
        subprocess.run(["rabbitmqctl", "-q", "delete_vhost", vhost], capture_output=True,
                       timeout=60, check=False)
    with psycopg.connect(ADMIN_DATABASE_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{TEST_DATABASE}" WITH (FORCE)')


TABLES = ("delivery_receipts", "reply_parts", "replies", "inbound_parts", "senders",
          "inbound_messages", "budgets", "evidence", "campaigns", "sender_lists",
          "rate_buckets", "metric_counters")


@pytest.fixture
def db() -> Iterator[psycopg.Connection]:
    """A clean test database (tables emptied), as a plain autocommit connection."""
    with psycopg.connect(os.environ["DATABASE_URL"], autocommit=True,
                         row_factory=psycopg.rows.dict_row) as conn:
        conn.execute(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE")
        yield conn


@pytest.fixture
def fake_vonage() -> Iterator:
    FAKE_VONAGE.fake.reset()
    yield FAKE_VONAGE.fake
    FAKE_VONAGE.fake.reset()


@pytest.fixture(scope="session")
def celery_app():
    from workers.app import app

    return app


@pytest.fixture(scope="session")
def worker(celery_app) -> Iterator:
    """A real Celery worker in this process, consuming the run's RabbitMQ queues."""
    from celery.contrib.testing.worker import start_worker

    from workers.app import INBOUND_QUEUE, REPLIES_QUEUE

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

    from shared import store
    from workers.tasks import database

    def create(number: str = "33700000001", reply: str = "Laissez-la tranquille.",
               delay: int = 0, window: int = 30 * 86400) -> str:
        with database(os.environ["DATABASE_URL"]).transaction() as tx:
            store.add_campaign(tx, number, reply, delay_seconds=delay, window_seconds=window,
                               price_per_segment=Decimal("0.0333"), allow_multipart=False,
                               now=datetime.now(UTC))
        return number

    return create


def venv_bin() -> str:
    """Folder of this interpreter's scripts (gunicorn, celery, relous)."""
    return str(Path(sys.executable).parent)


def rabbitmqctl(*args: str) -> str:
    """Output of `rabbitmqctl ARGS` against the shared RabbitMQ node."""
    return subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, text=True,
                          timeout=60).stdout


def broker_messages(vhost: str, ctl: Callable[..., str] = rabbitmqctl) -> int:
    """Messages in the vhost's queues, ready plus unacknowledged: 0 means all work is done
    (tasks acknowledge late, after they ran and queued any follow-up). `ctl` runs
    rabbitmqctl against another node (the fault tests' private one)."""
    out = ctl("-q", "list_queues", "-p", vhost, "--no-table-headers", "messages_ready",
              "messages_unacknowledged")
    return sum(int(n) for line in out.splitlines() for n in line.split())


def wait_until_idle(vhost: str, timeout: float = 60.0,
                    ctl: Callable[..., str] = rabbitmqctl) -> None:
    """Wait until the broker holds no message of `vhost`, twice in a row."""
    wait_for(lambda: broker_messages(vhost, ctl) == 0 and broker_messages(vhost, ctl) == 0,
             timeout=timeout, interval=0.2, message=f"queues of {vhost} to drain")
