"""PostgreSQL ceilings of the pipeline (deploy/SCALING.md), each against a baseline measured
in the same run on a scratch database:

- commits: one connection committing one small insert at a time (what a worker process does
  once per batch of up to 100 inbound messages), against the same inserts in one commit;
- the shared send-rate row: `--threads` connections taking send tokens from the one
  `rate_buckets` row (each send takes one, `FOR UPDATE`), against the same connections
  running a transaction of the same shape on a row each.

    .venv/bin/python bench/ceilings.py [--seconds 10] [--threads 8]
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.scratch import scratch_stack
from shared.store.db import Database
from shared.store.replies import take_send_token

RATE = 1e9  # tokens never run out: the row's own ceiling is measured


def commits_per_second(db: Database, seconds: float, one_transaction: bool) -> float:
    with db.transaction() as tx:
        tx.execute("CREATE TABLE IF NOT EXISTS bench_commits (n BIGINT)")
    done, deadline = 0, time.monotonic() + seconds
    if one_transaction:
        with db.transaction() as tx:
            while time.monotonic() < deadline:
                tx.execute("INSERT INTO bench_commits VALUES (%(n)s)", {"n": done})
                done += 1
    else:
        while time.monotonic() < deadline:
            with db.transaction() as tx:
                tx.execute("INSERT INTO bench_commits VALUES (%(n)s)", {"n": done})
            done += 1
    return done / seconds


def tokens_per_second(db: Database, seconds: float, threads: int, shared_row: bool) -> float:
    counts = [0] * threads
    deadline = time.monotonic() + seconds

    def take(index: int) -> None:
        name = "bench" if shared_row else f"bench-{index}"
        while time.monotonic() < deadline:
            with db.transaction() as tx:
                take_send_token(tx, name, RATE, datetime.now(UTC))
            counts[index] += 1

    workers = [threading.Thread(target=take, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return sum(counts) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args()
    with scratch_stack() as env:
        db = Database(env["DATABASE_URL"], pool_size=args.threads)
        batched = commits_per_second(db, args.seconds, one_transaction=True)
        single = commits_per_second(db, args.seconds, one_transaction=False)
        own_rows = tokens_per_second(db, args.seconds, args.threads, shared_row=False)
        shared = tokens_per_second(db, args.seconds, args.threads, shared_row=True)
        db.close()
    print(f"inserts, one commit each:      {single:>8.0f} /s")
    print(f"inserts, all in one commit:    {batched:>8.0f} /s")
    print(f"ratio commit each / one commit: {single / batched:.2f}")
    print(f"send tokens, one shared row:   {shared:>8.0f} /s ({args.threads} connections)")
    print(f"send tokens, a row each:       {own_rows:>8.0f} /s")
    print(f"ratio shared row / a row each: {shared / own_rows:.2f}")


if __name__ == "__main__":
    main()
