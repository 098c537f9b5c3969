"""Cost benchmark: what a scenario costs under anti-relous's rules, against the two 2017
policies on the same traffic (reply to every message; reply to each sender's first 5).

The scenario is fed to the real decision code (`workers.inbound.judge_batch`, the abuse
rules, storm mode) on a SQLite database with the scenario's own clock, so that rates are
judged at their real pace (a time-compressed replay would make every sender look 1,000
times faster). Each decided reply is priced at one segment.

    .venv/bin/python bench/cost.py octobre-2017 [--price 0.08]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from cryptography.fernet import Fernet

from shared.rules.abuse import load_lexicon
from shared.rules.phones import pseudonym
from shared.store.campaigns import add_campaign
from shared.store.db import Database, upgrade
from shared.vonage.webhooks import parse_inbound
from workers.housekeeping import evaluate_storm_mode
from workers.inbound import Keys, judge_batch
from workers.replay.scenarios import load_scenario, timeline

CAMPAIGN = "33700000001"
KEY = "bench-secret-key-0123456789"
STORM_EVERY = timedelta(seconds=15)
BATCH = 500


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("scenario", nargs="?", default="octobre-2017")
    parser.add_argument("--price", default="0.08", help="EUR per SMS (2017: 0.08 single)")
    parser.add_argument("--seed", type=int, default=2017)
    args = parser.parse_args()
    price = Decimal(args.price)

    start = datetime(2017, 10, 1, tzinfo=UTC)
    webhooks = timeline(load_scenario(args.scenario), CAMPAIGN, args.seed, start)
    database = Database(f"sqlite:///{Path(tempfile.mkdtemp()) / 'cost.db'}")
    upgrade(database)
    with database.transaction() as tx:
        add_campaign(tx, CAMPAIGN, "Stop.", delay_seconds=0, window_seconds=30 * 86400,
                     price_per_segment=price, allow_multipart=False, now=start)
    lexicon, keys = load_lexicon(), Keys(KEY, Fernet.generate_key().decode())
    began = time.perf_counter()
    next_storm = start
    for first in range(0, len(webhooks), BATCH):
        with database.transaction() as tx:
            for webhook in webhooks[first:first + BATCH]:
                now = start + timedelta(seconds=webhook.at)
                if now >= next_storm:
                    evaluate_storm_mode(tx, now)
                    next_storm = now + STORM_EVERY
                judge_batch(tx, [parse_inbound(webhook.params)], keys, now, lexicon)
    elapsed = time.perf_counter() - began

    role_of = {pseudonym(w.params["msisdn"], KEY): w.role for w in webhooks}
    with database.transaction() as tx:
        replies = tx.execute("SELECT sender FROM replies").fetchall()
    ours = Counter(role_of[row["sender"]] for row in replies)
    messages: dict[str, set[str]] = {}
    per_sender: Counter = Counter()
    seen: set[str] = set()
    for webhook in webhooks:
        if webhook.params["messageId"] in seen:
            continue
        seen.add(webhook.params["messageId"])
        messages.setdefault(webhook.role, set()).add(webhook.params["messageId"])
        per_sender[(webhook.role, webhook.params["msisdn"])] += 1
    every = {role: len(ids) for role, ids in messages.items()}
    first5 = Counter()
    for (role, _), count in per_sender.items():
        first5[role] += min(count, 5)
    senders = Counter(role for role, _ in per_sender)

    print(f"{args.scenario}: {len(seen)} messages ({len(webhooks)} webhooks), "
          f"decided in {elapsed:.1f} s; price {price} EUR per SMS")
    print(f"{'class':<10}{'senders':>9}{'messages':>10}{'reply-all':>11}{'first-5':>9}"
          f"{'ours':>7}")
    for role in sorted(every):
        print(f"{role:<10}{senders[role]:>9}{every[role]:>10}{every[role]:>11}"
              f"{first5[role]:>9}{ours[role]:>7}")
    malicious = sum(every.get(role, 0) for role in ("flooder", "raider"))
    for name, counts in (("reply to every message (2017)", every),
                         ("reply to each sender's first 5 (2017 follow-up)", first5),
                         ("anti-relous", ours)):
        spend = price * sum(counts.values())
        bad = price * sum(counts.get(role, 0) for role in ("flooder", "raider"))
        per = bad / malicious if malicious else Decimal(0)
        print(f"{name:<50} spend {spend:>9.2f} EUR, per malicious message {per:.5f} EUR, "
              f"ratio to reply-all {spend / (price * sum(every.values())):.4f}")
    ordinary = senders.get("ordinary", 0)
    print(f"ordinary senders answered: {ours.get('ordinary', 0)}/{ordinary}")


if __name__ == "__main__":
    main()
