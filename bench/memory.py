"""Memory benchmark: RSS of the `worker` processes while they drain a flood of inbound
messages from 10,000 senders, and of the `web` processes before and after `wrk` floods
them with signed webhooks. Flat means: not growing with senders or messages.

    .venv/bin/python bench/memory.py [--messages 1000000] [--senders 10000] [--web-seconds 60]

The baseline is each process's own RSS once warmed up (after the first 5% of the flood).
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
from bench.ingest import free_port, run_wrk, serve, signed_body, stop
from bench.pipeline import fill
from bench.scratch import scratch_stack

ROOT = Path(__file__).resolve().parent.parent


def rss_mb(root_pid: int) -> dict[int, float]:
    """RSS in MB of a process and its children (a gunicorn or celery tree)."""
    pids = [root_pid]
    children = Path(f"/proc/{root_pid}/task/{root_pid}/children")
    if children.exists():
        pids += [int(pid) for pid in children.read_text().split()]
    sizes = {}
    for pid in pids:
        status = Path(f"/proc/{pid}/status")
        if status.exists():
            match = re.search(r"VmRSS:\s+(\d+) kB", status.read_text())
            if match:
                sizes[pid] = int(match.group(1)) / 1024
    return sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--senders", type=int, default=10_000)
    parser.add_argument("--web-seconds", type=int, default=60)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="relous-memory-"))
    secret = "bench-memory-secret"  # noqa: S105 (signs the benchmark's own webhooks)
    with scratch_stack(VONAGE_SIGNATURE_SECRET=secret) as env:
        vhost, url = env["RELOUS_BENCH_VHOST"], env["DATABASE_URL"]
        # web: RSS before and after a wrk flood of signed webhooks
        port = free_port()
        web = serve("ingest:create_app()", env, port, folder / "web.log")
        try:
            run_wrk(f"http://127.0.0.1:{port}/webhooks/inbound", signed_body(secret), 5, 16,
                    folder)
            web_before = sum(rss_mb(web.pid).values())
            flood = run_wrk(f"http://127.0.0.1:{port}/webhooks/inbound", signed_body(secret),
                            args.web_seconds, 16, folder)
            web_after = sum(rss_mb(web.pid).values())
        finally:
            stop(web)
        subprocess.run(["rabbitmqctl", "-q", "purge_queue", "-p", vhost, "relous.inbound"],
                       check=False)
        # worker: RSS while draining the flood
        payloads = [({"message_id": f"M{index:08d}", "msisdn": f"336{index % args.senders:08d}",
                      "to": "33700000001", "text": f"Réponds {index % 7}", "type": "text",
                      "keyword": "REPONDS", "message_timestamp": None, "concat_ref": None,
                      "concat_part": None, "concat_total": None},)
                    for index in range(args.messages)]
        fill(env, "relous.process_inbound", payloads)
        del payloads
        procfile = dict(re.findall(r"^([a-z]+):\s*(.+)$", (ROOT / "Procfile").read_text(),
                                   re.MULTILINE))
        worker = subprocess.Popen(["bash", "-c", procfile["worker"]], cwd=ROOT, env=env,
                                  stdout=(folder / "worker.log").open("w"),
                                  stderr=subprocess.STDOUT, start_new_session=True)
        samples = []
        started = time.monotonic()
        try:
            next_mark = 0.05
            while True:
                with psycopg.connect(url) as conn:
                    done = conn.execute("SELECT COUNT(*) FROM inbound_messages").fetchone()[0]
                if done / args.messages >= next_mark or done >= args.messages:
                    samples.append((done, sum(rss_mb(worker.pid).values())))
                    next_mark += 0.1
                if done >= args.messages:
                    break
                time.sleep(1)  # sampling pace
        finally:
            os.killpg(worker.pid, signal.SIGTERM)
            worker.wait(60)
        elapsed = time.monotonic() - started
    print(f"web: RSS {web_before:.1f} MB before, {web_after:.1f} MB after "
          f"{flood['rate'] * args.web_seconds:.0f} signed webhooks "
          f"(ratio {web_after / web_before:.2f})")
    print(f"worker: {args.messages} messages from {args.senders} senders in {elapsed:.0f} s")
    for done, size in samples:
        print(f"  after {done:>8} messages: RSS {size:.1f} MB (all worker processes)")
    print(f"worker RSS ratio last / first sample: {samples[-1][1] / samples[0][1]:.2f}")


if __name__ == "__main__":
    main()
