"""Run `relous storm SCENARIO` against the whole local stack, from this checkout.

Starts the fake Vonage, a database and a RabbitMQ virtual host of its own, the Procfile's
`web`, `worker` and `beat`, creates the campaign, replays the scenario, prints the report
and writes the chart; then stops everything and drops what it created.

    .venv/bin/python bench/storm_local.py octobre-2017 --speed 1200 --chart docs/storm.png
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg
import requests
from cryptography.fernet import Fernet

ROOT = Path(__file__).resolve().parent.parent
ADMIN_DB = os.environ.get("RELOUS_TEST_ADMIN_DATABASE_URL",
                          "postgresql://postgres@127.0.0.1:5432/postgres")
CAMPAIGN = "33700000001"
REPLY = "Cette personne ne souhaite pas vous parler. Merci de la laisser tranquille."


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait(predicate, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            sys.exit(f"{what} did not come up within {seconds:.0f}s")
        time.sleep(0.2)


def start(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=log.open("w"),
                            stderr=subprocess.STDOUT, start_new_session=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("scenario")
    parser.add_argument("--speed", type=float, default=1200)
    parser.add_argument("--chart", default=None)
    parser.add_argument("--total-cap", default="60")
    parser.add_argument("--worker-concurrency", default="4")
    args = parser.parse_args()

    run = secrets.token_hex(4)
    folder = Path(tempfile.mkdtemp(prefix="relous-storm-"))
    database, vhost = f"relous_storm_{run}", f"relous_storm_{run}"
    with psycopg.connect(ADMIN_DB, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{database}"')
    subprocess.run(["rabbitmqctl", "-q", "add_vhost", vhost], check=True)
    subprocess.run(["rabbitmqctl", "-q", "set_permissions", "-p", vhost, "guest", ".*", ".*",
                    ".*"], check=True)
    bin_dir = str(Path(sys.executable).parent)
    fake_port, web_port = free_port(), free_port()
    ca = folder / "fake-ca.pem"
    env = dict(os.environ, PATH=bin_dir + os.pathsep + os.environ["PATH"],
               DATABASE_URL=f"{ADMIN_DB.rsplit('/', 1)[0]}/{database}",
               BROKER_URL=f"amqp://guest:guest@127.0.0.1:5672/{vhost}",
               SMS_PROVIDER="vonage", VONAGE_API_KEY="fake-key",
               VONAGE_API_SECRET="fake-secret",  # noqa: S106 (the fake provider's)
               VONAGE_REST_HOST=f"127.0.0.1:{fake_port}", REQUESTS_CA_BUNDLE=str(ca),
               VONAGE_SIGNATURE_SECRET="storm-" + run, RELOUS_SECRET_KEY=secrets.token_hex(16),
               RELOUS_EVIDENCE_KEY=Fernet.generate_key().decode(), PORT=str(web_port),
               WEB_CONCURRENCY="2", WORKER_CONCURRENCY=args.worker_concurrency,
               BEAT_SCHEDULE_FILE=str(folder / "beat"), LOG_LEVEL="WARNING",
               PROMETHEUS_MULTIPROC_DIR=str(folder / "metrics"))
    env.pop("METRICS_TOKEN", None)
    processes = [start([sys.executable, "-m", "tests.fake_vonage", "--port", str(fake_port),
                        "--ca-out", str(ca)], env, folder / "fake.log")]
    try:
        wait(ca.exists, 30, "the fake Vonage")
        relous = [sys.executable, "-m", "workers.cli"]
        subprocess.run([*relous, "db", "upgrade"], env=env, cwd=ROOT, check=True)
        subprocess.run([*relous, "campaign", "add", CAMPAIGN, "--reply", REPLY, "--delay", "0",
                        "--price-per-segment", "0.0333"], env=env, cwd=ROOT, check=True)
        subprocess.run([*relous, "budget", "set", CAMPAIGN, "--total", args.total_cap], env=env,
                       cwd=ROOT, check=True)
        procfile = dict(re.findall(r"^([a-z]+):\s*(.+)$", (ROOT / "Procfile").read_text(),
                                   re.MULTILINE))
        for name in ("web", "worker", "beat"):
            processes.append(start(["bash", "-c", procfile[name]], env, folder / f"{name}.log"))

        def ready() -> bool:
            try:
                return requests.get(f"http://127.0.0.1:{web_port}/readyz", timeout=2).ok
            except requests.ConnectionError:
                return False

        wait(ready, 60, "the web process")
        storm = [*relous, "storm", args.scenario, "--target", f"http://127.0.0.1:{web_port}",
                 "--speed", str(args.speed), "--provider-log",
                 f"https://127.0.0.1:{fake_port}/_fake/sent", "--to", CAMPAIGN]
        if args.chart:
            storm += ["--chart", args.chart]
        subprocess.run(storm, env=env, cwd=ROOT, check=True)
        subprocess.run([*relous, "status"], env=env, cwd=ROOT, check=True)
    finally:
        for process in reversed(processes):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
        subprocess.run(["rabbitmqctl", "-q", "delete_vhost", vhost], check=False)
        with psycopg.connect(ADMIN_DB, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        print(f"logs: {folder}")


if __name__ == "__main__":
    main()
