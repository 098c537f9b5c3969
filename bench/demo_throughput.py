"""Embedded-default throughput: `relous demo` (SQLite + the embedded broker, one process)
taking a storm's webhooks as fast as a client can post them.

    .venv/bin/python bench/demo_throughput.py [--scenario octobre-2017] [--messages 20000]

Posts the scenario's first N webhooks (flooders, raiders, ordinary senders, Vonage's
resends; unsigned, as the demo runs) from 16 client threads in another process, with no
pacing, and measures webhooks acknowledged per second and messages recorded per second
(until every acknowledged message is in the database: the inbound path, end to end).
Baseline, measured in the same run against the same server: GET /healthz, the web's
bare round trip.
"""

from __future__ import annotations

import argparse
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.processes import free_port
from workers.cli.demo import DEMO_CAMPAIGN_NUMBER
from workers.replay.scenarios import load_scenario, timeline

CLIENTS = 16


def blast(url: str, payloads: list[dict[str, str]] | None, count: int) -> tuple[float, int]:
    """POST every payload (or GET `url` `count` times) from CLIENTS threads; seconds, 2xx."""
    local = threading.local()

    def one(index: int) -> bool:
        session = getattr(local, "session", None) or requests.Session()
        local.session = session
        if payloads is None:
            return session.get(url, timeout=30).ok
        return session.post(url, data=payloads[index], timeout=30).ok

    started = time.perf_counter()
    with ThreadPoolExecutor(CLIENTS) as pool:
        ok = sum(pool.map(one, range(count)))
    return time.perf_counter() - started, ok


def recorded(database: Path) -> int:
    with sqlite3.connect(database) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM inbound_messages").fetchone()[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", default="octobre-2017")
    parser.add_argument("--messages", type=int, default=20000)
    args = parser.parse_args()
    webhooks = timeline(load_scenario(args.scenario), DEMO_CAMPAIGN_NUMBER, 2017)
    payloads = [dict(webhook.params) for webhook in webhooks[:args.messages]]
    distinct = len({payload["messageId"] for payload in payloads})
    folder = Path(tempfile.mkdtemp(prefix="relous-demo-bench-"))
    port = free_port()
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("DATABASE_URL", "BROKER_URL", "VONAGE_", "RELOUS_"))}
    demo = subprocess.Popen([sys.executable, "-m", "workers.cli", "demo", "--port", str(port),
                             "--data-dir", str(folder)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(base + "/readyz", timeout=2).ok:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                sys.exit("the demo did not start")
            time.sleep(0.2)  # waiting for a process to start
        health_seconds, _ = blast(base + "/healthz", None, 5000)
        post_seconds, acked = blast(base + "/webhooks/inbound", payloads, len(payloads))
        started_to_recorded = post_seconds + drain_seconds(folder / "relous-demo.db",
                                                           distinct)
    finally:
        os.killpg(demo.pid, signal.SIGTERM)
        demo.wait(60)
    health_rate = 5000 / health_seconds
    print(f"scenario {args.scenario}: {len(payloads)} webhooks ({distinct} distinct messages),"
          f" {CLIENTS} clients, no pacing")
    print(f"baseline GET /healthz: {health_rate:.0f} requests/s")
    print(f"webhooks acknowledged: {acked}/{len(payloads)} in {post_seconds:.1f} s = "
          f"{acked / post_seconds:.0f}/s ({acked / post_seconds / health_rate:.2f} of baseline)")
    print(f"messages recorded (inbound path end to end): {distinct} in "
          f"{started_to_recorded:.1f} s = {distinct / started_to_recorded:.0f}/s "
          f"({distinct / started_to_recorded / health_rate:.2f} of baseline)")


def drain_seconds(database: Path, distinct: int) -> float:
    """Seconds from the end of posting until every distinct message is recorded."""
    started = time.perf_counter()
    deadline = started + 600
    while recorded(database) < distinct and time.perf_counter() < deadline:
        time.sleep(0.1)  # polling the demo's database
    return time.perf_counter() - started


if __name__ == "__main__":
    main()
