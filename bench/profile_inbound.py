"""Where the inbound path's time goes: `record_inbound_batch` in one process, cProfile'd.

    .venv/bin/python bench/profile_inbound.py [--messages 4000] [--batch 100]

Prints the rate per 1,000 messages (flat means nothing grows with the senders) and the
top of the profile, sorted by cumulative time. `--batch 1` is a transaction per message.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.scratch import scratch_stack
from shared.rules.abuse import load_lexicon
from shared.store.db import Database
from shared.vonage.webhooks import parse_inbound
from workers.inbound import Keys, judge_batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=4000)
    parser.add_argument("--batch", type=int, default=100)
    args = parser.parse_args()
    with scratch_stack() as env:
        database = Database(env["DATABASE_URL"], pool_size=1)
        lexicon, key = load_lexicon(), env["RELOUS_SECRET_KEY"]

        def run(count: int, offset: int) -> None:
            for first in range(offset, offset + count, args.batch):
                messages = [parse_inbound({
                    "msisdn": f"336{index:08d}", "to": "33700000001", "messageId": f"P{index}",
                    "text": f"Salut Julie tu viens {index} ?", "type": "text"})
                    for index in range(first, min(first + args.batch, offset + count))]
                with database.transaction() as tx:
                    judge_batch(tx, messages, Keys(key), datetime.now(UTC), lexicon)

        for batch in range(args.messages // 1000):
            began = time.perf_counter()
            run(1000, batch * 1000)
            print(f"messages {batch * 1000:>6}-{batch * 1000 + 999}: "
                  f"{1000 / (time.perf_counter() - began):.0f}/s")
        profile = cProfile.Profile()
        profile.runcall(run, 500, args.messages)
        database.close()
    pstats.Stats(profile).sort_stats("cumulative").print_stats(15)


if __name__ == "__main__":
    main()
