"""Pipeline benchmark: inbound messages fully processed (deduplicated, scored, recorded,
reply decided) per second by the Procfile's `worker` draining a pre-filled queue, against
the same worker draining as many no-op tasks in the same run.

    .venv/bin/python bench/pipeline.py [--messages 100000] [--traffic raid|ordinary]
                                       [--campaigns N]

Replies are scheduled an hour later, so that the figure is the inbound path's alone.
`raid` (the default): one block of consecutive numbers sending one slogan with a counter,
which every raid signal computes on. `ordinary`: numbers scattered over the country's
mobile ranges sending varied texts. `--campaigns N` spreads the messages over N campaigns
(a campaign's batches are recorded one after the other; campaigns run in parallel).
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


ORDINARY_TEXTS = ("Salut c'est Karim on s'est vus samedi", "Tu fais quoi ce soir ?",
                  "Coucou, c'est bien ton numéro ?", "On se voit demain au café ?",
                  "Bonne nuit, à demain", "T'as bien reçu mon message ?",
                  "Je passe vers 18h ça te va", "Tu m'as donné ton 06 hier soir")


def payloads_for(traffic: str, count: int, campaigns: int) -> list[tuple[dict, ...]]:
    payloads = []
    for index in range(count):
        if traffic == "raid":
            sender = f"336{index % (count * 4 // 5):08d}"  # 20% from returning senders
            text = f"Salut Julie, tu viens {index} ?"
        else:
            spread = (index * 7_919_993 + 12_345) % 90_000_000  # scattered, distinct
            sender = f"33{6 + index % 2}{10_000_000 + spread:08d}"
            text = f"{ORDINARY_TEXTS[index % len(ORDINARY_TEXTS)]} {index % 97}"
        payloads.append(({"message_id": f"B{index:08d}", "msisdn": sender,
                          "to": campaign_number(index % campaigns), "text": text,
                          "type": "text", "keyword": text.split()[0].upper(),
                          "message_timestamp": None, "concat_ref": None,
                          "concat_part": None, "concat_total": None},))
    return payloads


def campaign_number(index: int) -> str:
    return f"337{index + 1:08d}"


def add_campaigns(env: dict[str, str], campaigns: int) -> None:
    for index in range(1, campaigns):  # scratch_stack made the first
        subprocess.run([sys.executable, "-m", "workers.cli", "campaign", "add",
                        campaign_number(index), "--reply", "Stop.", "--delay", "3600"],
                       env=env, cwd=ROOT, check=True, capture_output=True)


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
    parser.add_argument("--traffic", choices=("raid", "ordinary"), default="raid")
    parser.add_argument("--campaigns", type=int, default=1)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="relous-pipeline-"))
    count = args.messages
    with scratch_stack() as env:
        vhost, url = env["RELOUS_BENCH_VHOST"], env["DATABASE_URL"]
        add_campaigns(env, args.campaigns)
        payloads = payloads_for(args.traffic, count, args.campaigns)
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
          f"({count} messages, {args.traffic} traffic, {args.campaigns} campaign(s), "
          f"{env['WORKER_CONCURRENCY']} worker processes)")


if __name__ == "__main__":
    main()
