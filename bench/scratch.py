"""A scratch PostgreSQL database and RabbitMQ virtual host for one benchmark run."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from cryptography.fernet import Fernet

ROOT = Path(__file__).resolve().parent.parent
ADMIN_DB = os.environ.get("RELOUS_TEST_ADMIN_DATABASE_URL",
                          "postgresql://postgres@127.0.0.1:5432/postgres")


@contextmanager
def scratch_stack(**extra_env: str) -> Iterator[dict[str, str]]:
    """The environment of a run with its own database and vhost (migrated, one campaign
    `33700000001` replying after an hour); both are dropped at the end."""
    run = secrets.token_hex(4)
    database = vhost = f"relous_bench_{run}"
    with psycopg.connect(ADMIN_DB, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{database}"')
    subprocess.run(["rabbitmqctl", "-q", "add_vhost", vhost], check=True)
    subprocess.run(["rabbitmqctl", "-q", "set_permissions", "-p", vhost, "guest", ".*", ".*",
                    ".*"], check=True)
    env = dict(os.environ, PATH=str(Path(sys.executable).parent) + os.pathsep
               + os.environ["PATH"], DATABASE_URL=f"{ADMIN_DB.rsplit('/', 1)[0]}/{database}",
               BROKER_URL=f"amqp://guest:guest@127.0.0.1:5672/{vhost}", SMS_PROVIDER="console",
               RELOUS_SECRET_KEY=secrets.token_hex(16),
               RELOUS_EVIDENCE_KEY=Fernet.generate_key().decode(), LOG_LEVEL="WARNING",
               WORKER_CONCURRENCY=os.environ.get("WORKER_CONCURRENCY", "4"),
               RELOUS_BENCH_VHOST=vhost, **extra_env)
    try:
        for command in (["db", "upgrade"], ["campaign", "add", "33700000001", "--reply",
                                             "Stop.", "--delay", "3600"]):
            subprocess.run([sys.executable, "-m", "workers.cli", *command], env=env, cwd=ROOT,
                           check=True, capture_output=True)
        yield env
    finally:
        subprocess.run(["rabbitmqctl", "-q", "delete_vhost", vhost], check=False)
        with psycopg.connect(ADMIN_DB, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
