"""Cost benchmark (issue 12): what each scenario costs under anti-relous's rules and budget
guard, one row per scenario, judged against the issue's targets.

A scenario is fed to the real decision code (`workers.inbound.judge_batch`, the abuse
rules, storm mode) on a SQLite database with the scenario's own clock, so that rates are
judged at their real pace (a time-compressed replay would make every sender look 1,000
times faster). The sending side runs on the same clock: the campaign gets the scenario's
caps (its `budget`, else BUDGET below), beat's flush comes every 5 s (expiry, then a send
round per campaign with due replies), and a round is the real store path of
workers/sending.py: `claim_batch` (the reservation under the caps), `take_send_token`,
`start_sending`, the provider, `record_send`. The provider is in-process and bills the
campaign's price per segment. `send_due` itself cannot run on a scenario clock: it reads
the wall clock (`datetime.now`, a `time.monotonic` deadline, `time.sleep` for the rate), so
`send_round` below makes the same calls in the same order with the scenario's time (on
SQLite the token bucket runs on the `now` it is given).

    .venv/bin/python bench/cost.py [--all]      # every scenario, one Markdown table
    .venv/bin/python bench/cost.py octobre-2017  # one scenario in detail, with 2017's policies
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import shutil
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from cryptography.fernet import Fernet

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.scenario_clock import FLUSH_EVERY, Beat, BilledProvider
from shared.rules.abuse import load_lexicon
from shared.rules.budget import day_start
from shared.rules.phones import default_time_zone
from shared.store.budgets import set_budget
from shared.store.campaigns import add_campaign, find_campaign
from shared.store.db import Database, upgrade
from shared.vonage.webhooks import parse_inbound
from workers.inbound import Keys, judge_batch
from workers.replay.records import read_records
from workers.replay.report import cap_overshoot as overshoot_of
from workers.replay.report import class_figures, format_table, summary
from workers.replay.runner import StormResult
from workers.replay.scenarios import (
    LEGITIMATE,
    is_malicious,
    load_scenario,
    scenario_names,
    timeline,
)

CAMPAIGN = "33700000001"
KEY = "bench-secret-key-0123456789"
START = datetime(2017, 10, 1, tzinfo=UTC)
BATCH = 500
# Caps of a scenario file without a `budget`: 500 replies an hour, 5,000 a day at 0.08.
BUDGET = {"hourly": "40", "daily": "400", "total": None}
# tmpfs: the many small commits of the send path need no disk sync (mkdtemp makes a
# private folder in it).
MEMORY = Path("/dev/shm")  # noqa: S108
PERIOD_OF = {"hourly": "hour", "daily": "day", "total": "total"}  # as /metrics labels them
OLD = ("octobre-2017", "flood", "raid", "retry-storm", "viral")  # listed first, then the rest
# Targets of issue 12.
CHEAP = ("octobre-2017", "flood", "sim-farm", "obfuscated-raid")
MAX_PER_MALICIOUS = Decimal("0.001")
SURGE_ONCE = 0.99
OBFUSCATION_SLACK = 5.0  # points of raiders answered above the plain raid's share


@dataclass
class Replay:
    name: str
    result: StormResult
    seconds: float
    billed: Decimal
    caps_allow: Decimal | None
    webhooks: int
    halted: str | None  # why the kill switch stopped the campaign's sending, if it did


def replay(name: str, price: Decimal, seed: int) -> Replay:
    """Decide and send one scenario on its own clock, in a database of its own."""
    spec = load_scenario(name)
    webhooks = timeline(spec, CAMPAIGN, seed, START)
    folder = Path(tempfile.mkdtemp(dir=MEMORY if MEMORY.is_dir() else None))
    # Held open for the whole replay: otherwise each transaction's connection is the last
    # to close, and SQLite checkpoints and deletes its WAL every time (half the run time).
    keeper = sqlite3.connect(folder / "cost.db")
    try:
        keeper.execute("PRAGMA journal_mode=WAL")
        database = Database(f"sqlite:///{folder / 'cost.db'}")
        upgrade(database)
        caps = {period: None if value is None else Decimal(value)
                for period, value in {**BUDGET, **spec.get("budget", {})}.items()}
        with database.transaction() as tx:
            add_campaign(tx, CAMPAIGN, "Stop.", delay_seconds=0, window_seconds=30 * 86400,
                         price_per_segment=price, allow_multipart=False, now=START)
            set_budget(tx, CAMPAIGN, START, **caps)
        provider = BilledProvider(price)
        beat = Beat(database, provider, START)
        lexicon, keys = load_lexicon(), Keys(KEY, Fernet.generate_key().decode())
        began, index = time.perf_counter(), 0
        while index < len(webhooks):
            first = START + timedelta(seconds=webhooks[index].at)
            beat.beats_until(first)
            # Judge up to the next flush (and at most BATCH) in one transaction.
            flush = START + (math.floor((first - START) / FLUSH_EVERY) + 1) * FLUSH_EVERY
            with database.transaction() as tx:
                for webhook in webhooks[index:index + BATCH]:
                    now = START + timedelta(seconds=webhook.at)
                    if now >= flush:
                        break
                    beat.every_15s(tx, now)
                    judge_batch(tx, [parse_inbound(webhook.params)], keys, now, lexicon)
                    index += 1
                beat.refresh_due(tx)
        beat.beats_until(None)
        seconds = time.perf_counter() - began
        result = _result(database, webhooks, caps)
        end = max(beat.last_tick, START + timedelta(hours=spec["duration_hours"]))
        with database.transaction() as tx:
            halted = find_campaign(tx, CAMPAIGN)
        return Replay(name, result, seconds, provider.billed,
                      _caps_allow(caps, end, result.zone), len(webhooks),
                      halted.sending_halted_reason if halted else None)
    finally:
        keeper.close()
        shutil.rmtree(folder, ignore_errors=True)


def _result(database: Database, webhooks: list, caps: dict[str, Decimal | None]) -> StormResult:
    """The replay as the storm report reads it: replies what the
    provider billed, `unsent` the senders whose reply never went out."""
    result = StormResult(speed=1.0, started=START.timestamp(),
                         zone=default_time_zone(CAMPAIGN))
    seen: set[str] = set()
    for webhook in webhooks:
        result.senders[webhook.params["msisdn"]] = webhook.role
        result.delivered[webhook.role] += 1
        result.acked[webhook.role] += 1  # every webhook is judged (a resend as a duplicate)
        if webhook.params["messageId"] not in seen:
            seen.add(webhook.params["messageId"])
            result.messages[webhook.role] += 1
    read_records(result, database, CAMPAIGN, KEY)
    result.caps = {PERIOD_OF[period]: float(value) for period, value in caps.items()
                   if value is not None}
    return result


def _caps_allow(caps: dict[str, Decimal | None], end: datetime, zone: str | None
                ) -> Decimal | None:
    """The most the caps let the campaign spend from START to `end`: what bounds the
    spend whatever the rules let through."""
    periods = {"hourly": math.ceil((end - START) / timedelta(hours=1)) + 1,
               "daily": (day_start(end, zone) - day_start(START, zone)).days + 1, "total": 1}
    bounds = [cap * periods[period] for period, cap in caps.items() if cap is not None]
    return min(bounds) if bounds else None


def _raiders_share(replay: Replay) -> float | None:
    """Percentage of raiders answered at least once."""
    raiders = class_figures(replay.result).get("raider")
    return 100 * (raiders.senders - raiders.never) / raiders.senders if raiders else None


def _money(value: Decimal | None) -> str:
    return "no cap" if value is None else f"{value:.2f}"


HEADER = ("| scenario | messages | ordinary answered once | surge answered once | false "
          "positives | malicious messages answered | EUR per malicious SMS | spend EUR | "
          "caps allow EUR | cap overshoot EUR | verdict |\n"
          "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|")


def row(replay: Replay, plain_raiders: float | None) -> str:
    """One Markdown row: the figures, then the issue's targets that apply (✔, or what
    failed, with notes in brackets)."""
    figures = class_figures(replay.result)
    ordinary, surge = figures.get("ordinary"), figures.get("surge")
    legit = [one for role, one in figures.items() if role in LEGITIMATE]
    malicious = [one for role, one in figures.items() if is_malicious(role)]
    messages, answered = sum(one.messages for one in malicious), sum(one.replies
                                                                     for one in malicious)
    spend = sum((one.spend for one in malicious), Decimal(0))
    total = sum((one.spend for one in figures.values()), Decimal(0))
    suppressed = sum(one.never - one.waiting for one in legit)
    overshoot, where = overshoot_of(replay.result)
    checks = [  # (failed?, what)
        (suppressed > 0, f"{suppressed} legitimate senders suppressed"),
        (any(one.senders - one.once - one.never for one in legit),
         "legitimate senders answered twice"),
        (bool(surge and surge.once < SURGE_ONCE * surge.senders), "surge below 99%"),
        (replay.name in CHEAP and messages > 0 and spend / messages > MAX_PER_MALICIOUS,
         f"over {MAX_PER_MALICIOUS} EUR per malicious SMS"),
        (replay.name == "pumping" and (answered > 0 or spend > 0),
         f"pumpers got {answered} SMS"),
        (overshoot > 0, f"cap overshoot {overshoot} EUR ({where})"),
        (total != replay.billed, f"replies charged {total} EUR, provider billed "
                                 f"{replay.billed}")]
    failed = [text for bad, text in checks if bad]
    notes = []
    share = _raiders_share(replay)
    if replay.name == "obfuscated-raid" and share is not None and plain_raiders is not None:
        text = f"raiders answered {share:.1f}% vs {plain_raiders:.1f}% plain"
        (failed if share > plain_raiders + OBFUSCATION_SLACK else notes).append(text)
    if waiting := sum(one.waiting for one in legit):
        notes.append(f"{waiting:,} legitimate senders' replies never sent (caps or a halt)")
    if replay.name not in CHEAP and spend:
        notes.append(f"malicious spend bounded by the caps: at most {_money(replay.caps_allow)}"
                     " EUR in all")
    if replay.halted:
        notes.append(f"sending halted: {replay.halted}")
    verdict = ("✘ " + "; ".join(failed) if failed else "✔") + \
        (f" ({'; '.join(notes)})" if notes else "")
    return " | ".join([
        f"| {replay.name}", f"{sum(one.messages for one in figures.values()):,}",
        f"{ordinary.once:,}/{ordinary.senders:,}" if ordinary else "–",
        f"{100 * surge.once / surge.senders:.1f}%" if surge else "–", str(suppressed),
        f"{answered:,}/{messages:,}", f"{spend / messages:.5f}" if messages else "–",
        f"{total:.2f}", _money(replay.caps_allow), f"{overshoot:.2f}", verdict + " |"])


def table(results: list[Replay]) -> str:
    """One Markdown row per scenario (obfuscated-raid is compared with octobre-2017)."""
    plain = next((_raiders_share(replay) for replay in results
                  if replay.name == "octobre-2017"), None)
    return "\n".join([HEADER, *(row(replay, plain) for replay in results)])


def detail(replay: Replay, price: Decimal, seed: int) -> None:
    """One scenario: the storm report, and 2017's two policies on the same traffic."""
    distinct = {w.params["messageId"]: w for w in timeline(load_scenario(replay.name),
                                                            CAMPAIGN, seed, START)}
    per_sender = Counter((w.role, w.params["msisdn"]) for w in distinct.values())
    every, first5 = Counter(), Counter()
    for (role, _), count in per_sender.items():
        every[role] += count
        first5[role] += min(count, 5)
    malicious = sum(count for role, count in every.items() if is_malicious(role))
    print(f"{replay.name}: {len(distinct)} messages ({replay.webhooks} webhooks), decided "
          f"and sent in {replay.seconds:.1f} s; price {price} EUR per SMS")
    rows, lines = summary(replay.result)
    print(format_table(rows))
    for line in lines[1:]:
        print(line)
    for name, counts in (("reply to every message (2017)", every),
                         ("reply to each sender's first 5 (2017 follow-up)", first5)):
        bad = price * sum(count for role, count in counts.items() if is_malicious(role))
        print(f"{name:<50} spend {price * sum(counts.values()):>9.2f} EUR, per malicious"
              f" message {bad / malicious if malicious else 0:.5f} EUR")
    print(f"provider billed {replay.billed:.2f} EUR; caps allow {_money(replay.caps_allow)}")
    print(table([replay]))


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("scenario", nargs="?", help="one scenario in detail (default: all)")
    parser.add_argument("--all", action="store_true", help="every scenario, one table")
    parser.add_argument("--price", default="0.08", help="EUR per SMS (2017: 0.08 single)")
    parser.add_argument("--seed", type=int, default=2017)
    parser.add_argument("--jobs", type=int, default=2, help="scenarios replayed at once")
    args = parser.parse_args()
    price = Decimal(args.price)
    if args.scenario and not args.all:
        detail(replay(args.scenario, price, args.seed), price, args.seed)
        return
    # One process per scenario: nothing a process keeps (caches of the rules) leaks into
    # the next scenario's clock.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(args.jobs, mp_context=context, max_tasks_per_child=1) as pool:
        names = [*OLD, *(name for name in scenario_names() if name not in OLD)]
        futures = [pool.submit(replay, name, price, args.seed) for name in names]
        results = []
        for future in futures:
            results.append(future.result())
            print(f"{results[-1].name}: {results[-1].webhooks} webhooks in "
                  f"{results[-1].seconds:.1f} s", file=sys.stderr)
    caps = "/".join(str(value or "none") for value in BUDGET.values())
    print(f"price {price} EUR per SMS, seed {args.seed}, caps per hour/day/total: {caps} "
          "EUR unless the scenario sets its own")
    print(table(results))


if __name__ == "__main__":
    main()
