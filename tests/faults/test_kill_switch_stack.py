"""The kill switch on the real stack (issue 12): the Procfile's `web` and two `worker`
processes send a campaign's replies through a slow provider (the fake Vonage's `delay`);
an operator runs `relous sending stop` while sends are in flight (the real command, through
click's runner so that it returns right after its commit; `status` and `start` run as
subprocesses).

The bound asserted: each Celery pool process sends one reply at a time, and
`start_sending` refuses a claimed reply once the switch is on, so after the stop returned
the fake Vonage records at most one SMS per pool process, the one that process had already
marked `sending`: WORKERS x CONCURRENCY = 4 here. That is within the issue's "one send
batch per worker process" (WORKERS x SEND_BATCH = 60), and far below what a stop checked
only when claiming would let through (the batches already claimed, up to SEND_BATCH per
pool process). The rest of every claimed batch goes back to `pending`. While stopped,
webhooks are answered 200, recorded and decided, their replies wait; beat's flush sends
nothing. After `relous sending start`, every reply goes out exactly once.
"""

from __future__ import annotations

import os
import random
import subprocess
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner
from psycopg.rows import DictRow

from tests.fake_vonage import Behaviour, FakeVonage
from tests.faults.audit import Audit, audit
from tests.faults.stack import (
    Stack,
    create_campaign,
    random_text,
    scenario_seed,
    sender_numbers,
)
from tests.helpers import broker_url, inbound, sign, venv_bin, wait_for, wait_until_idle
from tests.processes import Process
from workers.cli import main
from workers.sending import SEND_BATCH

pytestmark = [pytest.mark.faults, pytest.mark.e2e]
WORKERS = 2  # Procfile `worker` processes
CONCURRENCY = 2  # pool processes of each
POOL = WORKERS * CONCURRENCY  # replies that can be in `sending` at one time
SLOW_SEND = 0.3  # seconds the fake Vonage takes per SMS until the operator starts again
CAP = Decimal("20.00")  # room for every reply: only the switch holds them back
Rows = psycopg.Connection[DictRow]  # the `db` fixture's connection
SENT_LINE = "status=sent"  # a worker's log line for each SMS it sent


class TwoWorkerStack(Stack):
    """`web` and WORKERS separate `worker` processes of the Procfile, on one broker."""

    def start(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.web = self._start("web")
        self.workers = [self._start("worker") for _ in range(WORKERS)]
        self.worker = self.workers[0]
        wait_for(self._web_ready, timeout=90, interval=0.2, message="gunicorn ready")
        for worker in self.workers:
            wait_for(partial(_ready, worker), timeout=90, interval=0.1,
                     message=f"{worker.name} ready")

    def sends_by_worker(self) -> list[int]:
        return [worker.output.count(SENT_LINE) for worker in self.workers]


def _ready(worker: Process) -> bool:
    if worker.popen.poll() is not None:
        pytest.fail(f"{worker.name} exited with {worker.popen.returncode}: "
                    f"{worker.output[-2000:]}")
    return " ready." in worker.output


@pytest.fixture
def two_workers(vhost, stack) -> Callable[[], TwoWorkerStack]:
    """Start the stack on this test's vhost and database; stopped at the end."""

    def start() -> TwoWorkerStack:
        running = stack(broker_url(vhost), os.environ["DATABASE_URL"],
                        concurrency=CONCURRENCY, kind=TwoWorkerStack)
        assert isinstance(running, TwoWorkerStack)
        return running

    return start


def relous(*args: str) -> str:
    """Run the real `relous` command with the run's environment (DATABASE_URL included);
    its output, after checking it succeeded."""
    done = subprocess.run([str(Path(venv_bin()) / "relous"), *args], env=dict(os.environ),
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, f"relous {args[:2]}: {done.stdout}{done.stderr}"
    return done.stdout


def first_messages(rng: random.Random, numbers: list[str], campaign: str,
                   tag: str) -> list[dict[str, str]]:
    """One signed first message to `campaign` from each number."""
    return [sign(inbound(msisdn=number, to=campaign, text=random_text(rng),
                         message_id=f"K{tag}{index:05d}{rng.randrange(16**4):04X}"))
            for index, number in enumerate(numbers)]


def post_all(stack: Stack, webhooks: list[dict[str, str]]) -> Counter[int]:
    """POST the webhooks from 8 threads; the HTTP statuses."""
    with ThreadPoolExecutor(8) as pool:
        return Counter(pool.map(stack.post, webhooks))


def sms_of(fake: FakeVonage, campaign: str) -> int:
    """SMS the fake has sent (answered) for `campaign` so far."""
    return sum(sms.sender == campaign for sms in list(fake.sent))


def statuses(db: Rows, campaign: str) -> Counter[str]:
    return Counter({row["status"]: row["n"] for row in db.execute(
        "SELECT r.status, count(*) AS n FROM replies r JOIN campaigns c"
        " ON c.id = r.campaign_id WHERE c.number = %s GROUP BY r.status",
        (campaign,)).fetchall()})


def settle(vhost: str, db: Rows, fake: FakeVonage) -> None:
    """Wait until no task is left (tasks acknowledge after they ran and queued any
    follow-up), no request is at the fake and no reply is claimed or sending."""
    wait_until_idle(vhost, timeout=60)

    def in_between() -> int:
        row = db.execute("SELECT count(*) AS n FROM replies"
                         " WHERE status IN ('claimed', 'sending')").fetchone()
        return row["n"] if row else 0

    wait_for(lambda: fake.in_flight == 0 and in_between() == 0, timeout=30,
             message="sends in flight to end")


def stop_while_sending(stack: TwoWorkerStack, fake: FakeVonage, campaign: str,
                       sent_first: int, *scope: str) -> dict[str, int]:
    """Once both workers sent and `sent_first` SMS of `campaign` went out, stop sending
    (`scope`: `--campaign NUMBER` or nothing); the fake's counts when the stop returned.

    The stop runs the real `relous` command in this process (click's runner), so that it
    returns right after its commit: a subprocess would return only once its interpreter
    exited, and the sends of that while would count as before the stop."""
    wait_for(lambda: sms_of(fake, campaign) >= sent_first and all(stack.sends_by_worker()),
             timeout=60, interval=0.01, message="both workers sending")
    stopped = CliRunner().invoke(main, ["sending", "stop", *scope,
                                        "--reason", "integration test"])
    at_stop = {"requests": fake.requests, "sms": sms_of(fake, campaign),
               "in_flight": fake.in_flight}
    assert stopped.exit_code == 0 and "sending stopped for" in stopped.output
    return at_stop


def assert_recorded_and_waiting(db: Rows, webhooks: list[dict[str, str]]
                                ) -> None:
    """Each webhook is recorded with its verdict, and its reply waits (`pending`)."""
    keys = [params["messageId"] for params in webhooks]

    def rows() -> list[dict[str, Any]]:
        return db.execute(
            "SELECT i.verdict, r.status FROM inbound_messages i LEFT JOIN replies r"
            " ON r.inbound_message_id = i.id WHERE i.dedup_key = ANY(%s)", (keys,)).fetchall()

    wait_for(lambda: len(rows()) == len(keys), timeout=60,
             message="webhooks posted while stopped to be recorded")
    assert Counter((row["verdict"], row["status"]) for row in rows()) == \
        Counter({("reply", "pending"): len(keys)}), "decided, the reply waiting"


def test_the_global_stop_halts_two_workers_within_one_reply_each(
        vhost, db, fake_vonage, two_workers, capsys):
    seed = scenario_seed()
    rng = random.Random(seed)
    number = create_campaign(os.environ["DATABASE_URL"], delay=0, total_cap=CAP)
    running = two_workers()
    numbers = sender_numbers(rng, 220)
    webhooks = first_messages(rng, numbers[:200], number, "A")
    fake_vonage.default = Behaviour(delay=SLOW_SEND)
    assert post_all(running, webhooks) == Counter({200: 200})

    at_stop = stop_while_sending(running, fake_vonage, number, 30)
    held = statuses(db, number)
    settle(vhost, db, fake_vonage)
    sms_after = sms_of(fake_vonage, number) - at_stop["sms"]
    requests_after = fake_vonage.requests - at_stop["requests"]
    assert at_stop["sms"] + POOL < len(webhooks), "the stop came with replies still to send"
    assert sms_after <= POOL < WORKERS * SEND_BATCH, \
        "only the reply each pool process had already marked `sending` went out"
    assert requests_after <= POOL
    assert statuses(db, number)["pending"] >= held["pending"] + held["claimed"], \
        "claimed replies went back to waiting"

    # Stopped: inbound is recorded and decided, beat's flush and the hand-overs send nothing.
    quiet = fake_vonage.requests
    late = first_messages(rng, numbers[200:], number, "B")
    assert post_all(running, late) == Counter({200: len(late)})
    assert_recorded_and_waiting(db, late)
    running.flush()
    settle(vhost, db, fake_vonage)
    while_stopped = fake_vonage.requests - quiet
    assert while_stopped == 0, "nothing reached the provider while stopped"
    assert "every campaign: STOPPED" in relous("sending", "status")

    fake_vonage.default = Behaviour()
    assert "sending started" in relous("sending", "start")
    running.flush()  # as beat does every minute
    wait_for(lambda: statuses(db, number) == Counter({"sent": len(numbers)}), timeout=60,
             message="every reply sent after the start")
    settle(vhost, db, fake_vonage)

    result = audit(db, fake_vonage, webhooks + late, number, running.logs(), numbers)
    result.extra.update(
        workers=WORKERS, bound=POOL, batch_bound=WORKERS * SEND_BATCH,
        sms_at_stop=at_stop["sms"], in_flight_at_stop=at_stop["in_flight"],
        claimed_at_stop=held["claimed"], sending_at_stop=held["sending"],
        pending_at_stop=held["pending"], sms_after_stop=sms_after,
        requests_after_stop=requests_after, posted_while_stopped=len(late),
        requests_while_stopped=while_stopped,
        sends_by_worker="/".join(map(str, running.sends_by_worker())))
    result.report(capsys, "kill-switch-global", seed)
    result.check()
    assert result.sms == result.acked == len(numbers), "every reply sent exactly once"


def test_a_campaign_stop_halts_that_campaign_while_the_other_keeps_sending(
        vhost, db, fake_vonage, two_workers, capsys):
    seed = scenario_seed()
    rng = random.Random(seed)
    database_url = os.environ["DATABASE_URL"]
    stopped = create_campaign(database_url, delay=0, total_cap=CAP, number="33700000001")
    other = create_campaign(database_url, delay=0, total_cap=CAP, number="33700000002")
    running = two_workers()
    numbers = sender_numbers(rng, 210)
    to_stopped = first_messages(rng, numbers[:100], stopped, "S")
    to_other = first_messages(rng, numbers[100:200], other, "O")
    fake_vonage.default = Behaviour(delay=SLOW_SEND)
    mixed = [params for pair in zip(to_stopped, to_other, strict=True) for params in pair]
    assert post_all(running, mixed) == Counter({200: len(mixed)})

    at_stop = stop_while_sending(running, fake_vonage, stopped, 15, "--campaign", stopped)
    held = statuses(db, stopped)
    other_at_stop = sms_of(fake_vonage, other)
    assert at_stop["sms"] + POOL < len(to_stopped), "the stop came with replies to send"
    assert other_at_stop + POOL < len(to_other), "and the other campaign too"
    late = first_messages(rng, numbers[200:], stopped, "L")
    assert post_all(running, late) == Counter({200: len(late)})
    wait_for(lambda: statuses(db, other) == Counter({"sent": len(to_other)}), timeout=60,
             message="the other campaign's replies sent while this one is stopped")
    settle(vhost, db, fake_vonage)
    sms_after = sms_of(fake_vonage, stopped) - at_stop["sms"]
    assert sms_after <= POOL, "one reply per pool process at most, once stopped"
    assert_recorded_and_waiting(db, late)
    assert statuses(db, stopped)["sent"] == sms_of(fake_vonage, stopped)
    assert f"campaign {stopped}: STOPPED" in relous("sending", "status")

    fake_vonage.default = Behaviour()
    assert "sending started" in relous("sending", "start", "--campaign", stopped)
    running.flush()
    total = len(to_stopped) + len(late)
    wait_for(lambda: statuses(db, stopped) == Counter({"sent": total}), timeout=60,
             message="the stopped campaign's replies sent after the start")
    settle(vhost, db, fake_vonage)

    result = campaign_audit(db, fake_vonage, to_stopped + late, stopped, running, numbers)
    other_result = campaign_audit(db, fake_vonage, to_other, other, running, numbers)
    result.extra.update(
        bound=POOL, sms_at_stop=at_stop["sms"],
        in_flight_at_stop=at_stop["in_flight"], claimed_at_stop=held["claimed"],
        pending_at_stop=held["pending"], sms_after_stop=sms_after,
        posted_while_stopped=len(late), other_sms_at_stop=other_at_stop,
        other_sms_while_stopped=len(to_other) - other_at_stop,
        sends_by_worker="/".join(map(str, running.sends_by_worker())))
    result.report(capsys, "kill-switch-campaign", seed)
    result.check()
    other_result.check()
    assert result.sms == total and other_result.sms == len(to_other), "each reply once"


def campaign_audit(db: psycopg.Connection[Any], fake: FakeVonage, acked: list[dict[str, str]],
                   campaign: str, stack: Stack, numbers: list[str]) -> Audit:
    """`audit` of one campaign of two: its `recorded_unsent` counted over this campaign's
    replies only (`audit` takes every reply recorded as sent for one of its SMS)."""
    result = audit(db, fake, acked, campaign, stack.logs(), numbers)
    refs = {sms.client_ref for sms in list(fake.sent) if sms.sender == campaign}
    sent = db.execute("SELECT r.id FROM replies r JOIN campaigns c ON c.id = r.campaign_id"
                      " WHERE c.number = %s AND r.status IN ('sent', 'delivered')",
                      (campaign,)).fetchall()
    return replace(result, recorded_unsent=sum(str(row["id"]) not in refs for row in sent))
