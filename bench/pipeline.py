"""Pipeline benchmark: inbound messages fully processed (deduplicated, scored, recorded,
reply decided) per second by the Procfile's `worker` draining a pre-filled queue, against
the same worker draining as many no-op tasks in the same run.

    .venv/bin/python bench/pipeline.py [--messages 100000]

Replies are scheduled an hour later, so that the figure is the inbound path's alone.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.scratch import scratch_stack

ROOT = Path(__file__).resolve().parent.parent


def queued(vhost: str) -> int:
    out = subprocess.run(["rabbitmqctl", "-q", "list_queues", "-p", vhost,
                          "--no-table-headers", "messages"], capture_output=True, text=True,
                         check=True).stdout
    return sum(int(value) for value in out.split())


def fill(env: dict[str, str], task: str, payloads: list) -> None:
    """Pre-fill the queue (setup, not measured): no confirms, one connection, so the
    queue's count is checked afterwards (a run that lost some would never finish)."""
    os.environ.update(env)
    from shared.broker import publisher_celery
    from shared.settings import Settings

    app = publisher_celery(Settings.from_env())

    vhost = env["RELOUS_BENCH_VHOST"]
    before = queued(vhost)
    app.conf.broker_transport_options = {}
    with app.connection_for_write() as conn, conn.Producer() as producer:
        for args in payloads:
            app.send_task(task, args=args, producer=producer, connection=conn)
    deadline = time.monotonic() + 60
    while queued(vhost) - before != len(payloads):
        if time.monotonic() > deadline:
            sys.exit(f"fill: {queued(vhost) - before} of {len(payloads)} messages queued; "
                     "run again")
        time.sleep(0.5)  # polling RabbitMQ's count at a fixed pace


def drain(env: dict[str, str], folder: Path, name: str, done) -> float:
    """Start the Procfile's worker; return messages per second between first and last."""
    procfile = dict(re.findall(r"^([a-z]+):\s*(.+)$", (ROOT / "Procfile").read_text(),
                               re.MULTILINE))
    worker = subprocess.Popen(["bash", "-c", procfile["worker"]], cwd=ROOT, env=env,
                              stdout=(folder / f"{name}.log").open("w"),
                              stderr=subprocess.STDOUT, start_new_session=True)
    try:
        first = None
        while True:
            remaining = done()
            now = time.monotonic()
            if first is None and remaining < total_of[name]:
                first = (now, remaining)
            if remaining == 0:
                break
            time.sleep(0.2)  # polling the broker or the database at a fixed pace
        started, at_start = first
        return at_start / (now - started)
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(60)


total_of: dict[str, int] = {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=100_000)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="relous-pipeline-"))
    count = args.messages
    with scratch_stack() as env:
        vhost, url = env["RELOUS_BENCH_VHOST"], env["DATABASE_URL"]
        payloads = []
        for index in range(count):
            sender = f"336{index % (count * 4 // 5):08d}"  # 20% from returning senders
            payloads.append(({"message_id": f"B{index:08d}", "msisdn": sender,
                              "to": "33700000001", "text": f"Salut Julie, tu viens {index} ?",
                              "type": "text", "keyword": "SALUT", "message_timestamp": None,
                              "concat_ref": None, "concat_part": None,
                              "concat_total": None},))
        fill(env, "relous.noop", [() for _ in range(count)])
        total_of["noop"] = queued(vhost)
        noop_rate = drain(env, folder, "noop", lambda: queued(vhost))
        fill(env, "relous.process_inbound", payloads)
        total_of["inbound"] = count

        def remaining() -> int:
            with psycopg.connect(url) as conn:
                done = conn.execute("SELECT COUNT(*) FROM inbound_messages").fetchone()[0]
            return count - done

        inbound_rate = drain(env, folder, "inbound", remaining)
    print(f"no-op tasks drained:        {noop_rate:>8.0f} /s")
    print(f"inbound messages processed: {inbound_rate:>8.0f} /s")
    print(f"ratio inbound / no-op: {inbound_rate / noop_rate:.2f} "
          f"({count} messages, {env['WORKER_CONCURRENCY']} worker processes)")


if __name__ == "__main__":
    main()
