"""`relous demo --storm SCENARIO`: replay a scenario against the demo itself, then report.

The webhooks are posted over HTTP by a process of their own (the demo's web, worker and
beat keep this one), exactly as `relous storm` posts them. Replies and spend are counted
from the service's own records (workers/replay/records.py): no fake provider is needed.
"""

from __future__ import annotations

import math
import os
import signal
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from multiprocessing import get_context

import click

from shared.broker import INBOUND_QUEUE, create_publisher
from shared.rules.phones import default_time_zone
from shared.settings import Settings
from shared.store.budgets import set_budget
from shared.store.campaigns import find_campaign, update_campaign
from shared.store.db import Database
from shared.store.reports import pipeline_progress
from workers.cli.demo import DEMO_CAMPAIGN_NUMBER
from workers.replay.records import read_records
from workers.replay.report import format_table, summary, write_chart
from workers.replay.runner import StormResult, run_storm
from workers.replay.scenarios import load_scenario, timeline

# The scenario's day runs in seconds here, so hourly and daily caps (real hours) would bind
# at once: the replay gets one total cap, the scenario's daily cap times its days.
DEFAULT_DAILY_CAP = Decimal(400)
# A replay whose queues are empty and whose figures have not moved for this long is done
# (replies that do not fit the cap stay pending: waiting longer would change nothing).
STALL_SECONDS = 20.0
SETTLE_DEADLINE_SECONDS = 900.0


@dataclass
class StormPlan:
    scenario: str
    speed: float
    seed: int
    chart: str
    failed: bool = False


def start_storm(plan: StormPlan, settings: Settings, target: str) -> None:
    """Replay in a thread; when the report is printed, stop the demo (SIGTERM: Celery's
    warm shutdown)."""

    def run() -> None:
        try:
            replay_and_report(plan, settings, target)
        except Exception as error:  # the demo must stop and say why, not hang
            plan.failed = True
            click.echo(f"error: the storm replay failed ({type(error).__name__}: {error})",
                       err=True)
        finally:
            os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=run, name="storm", daemon=True).start()


def replay_and_report(plan: StormPlan, settings: Settings, target: str) -> None:
    spec = load_scenario(plan.scenario)
    webhooks = timeline(spec, DEMO_CAMPAIGN_NUMBER, plan.seed)
    database = Database(settings.database_url, pool_size=1)
    daily = Decimal(str(spec.get("budget", {}).get("daily") or DEFAULT_DAILY_CAP))
    total = daily * math.ceil(spec["duration_hours"] / 24)
    with database.transaction() as tx:
        set_budget(tx, DEMO_CAMPAIGN_NUMBER, datetime.now(UTC), hourly=None, daily=None,
                   total=total)
        campaign = find_campaign(tx, DEMO_CAMPAIGN_NUMBER)
        assert campaign is not None  # the demo created it
        # Ten real minutes are days of the scenario: the spend-rate trip, which judges
        # real minutes, would halt the replay's ordinary replies. The cap still binds.
        update_campaign(tx, campaign.id, reply_text=None, delay_seconds=None,
                        window_seconds=None, price_per_segment=campaign.price_per_segment,
                        allow_multipart=campaign.allow_multipart,
                        rules=campaign.rules.with_changes(
                            {"spend_trip_floor_euros": str(total)}))
    click.echo(f"{plan.scenario}: {len(webhooks)} webhooks over {spec['duration_hours']} h, "
               f"replayed at x{plan.speed:g} (about "
               f"{spec['duration_hours'] * 3600 / plan.speed:.0f} s); total cap {total} EUR")
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as poster:
        result: StormResult = poster.submit(run_storm, webhooks, target, plan.speed).result()
    wait_until_settled(settings, database)
    read_records(result, database, DEMO_CAMPAIGN_NUMBER, settings.secret_key)
    result.caps = {"total": float(total)}
    result.zone = default_time_zone(DEMO_CAMPAIGN_NUMBER)
    rows, lines = summary(result)
    click.echo(format_table(rows))
    for line in lines:
        click.echo(line)
    click.echo(write_chart(result, plan.chart,
                           f"relous demo --storm {plan.scenario} (x{plan.speed:g})"))


def wait_until_settled(settings: Settings, database: Database) -> None:
    """Until every acknowledged webhook is recorded and every due reply is sent (or, with
    the queue empty, nothing has moved for STALL_SECONDS)."""
    publisher = create_publisher(settings)
    deadline = time.monotonic() + SETTLE_DEADLINE_SECONDS
    last, since = None, time.monotonic()
    while time.monotonic() < deadline:
        queued = publisher.queue_depths()[INBOUND_QUEUE]
        with database.transaction() as tx:
            progress = pipeline_progress(tx, DEMO_CAMPAIGN_NUMBER, datetime.now(UTC))
        if (queued, progress) != last:
            last, since = (queued, progress), time.monotonic()
        if queued == 0 and (progress["due"] == 0
                            or time.monotonic() - since > STALL_SECONDS):
            return
        time.sleep(0.5)  # polling the service's own progress at a human pace
    click.echo("warning: the demo had not settled after 15 minutes; reporting as is",
               err=True)
