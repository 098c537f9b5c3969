"""Crashes: SIGKILL the Celery worker (a pool process, sometimes the whole worker) at
random points, at least 20 times per run, while it processes a stream of inbound SMS, and
while it sends a batch of replies through a slow provider.

After recovery (beat's tasks, run without waiting for their time limits), every webhook
answered 2xx is recorded exactly once, no number received two SMS, no reply is left
claimed or sending, and the budget cap held. Each scenario prints its counts and seed
(RELOUS_FAULTS_SEED=<seed> replays its random choices).
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from decimal import Decimal

import pytest

from tests.fake_vonage import Behaviour
from tests.faults.audit import audit
from tests.faults.stack import (
    PRICE,
    Poster,
    Stack,
    create_campaign,
    inbound_stream,
    new_senders,
    recover,
    retry_like_vonage,
    scenario_seed,
    sender_numbers,
)
from tests.helpers import broker_url, wait_for, wait_until_idle

pytestmark = [pytest.mark.faults, pytest.mark.e2e]
KILLS = 24
WHOLE_WORKER_KILLS = 4  # of KILLS: main process and pool together, then a restart
SLOW_SEND = 0.25  # seconds the fake Vonage takes per SMS while the kills go on
WAVE = 3  # new senders before each kill of the reply scenario


def _strike(stack: Stack, rng: random.Random, whole: bool) -> None:
    # A random instant after the trigger, so that kills land inside transactions and
    # HTTP calls, not only between them: a point of the fault, not a synchronisation.
    time.sleep(rng.uniform(0, SLOW_SEND))
    if whole:
        stack.kill_worker()
    else:
        stack.kill_pool_process(rng)


def _kill_plan(rng: random.Random) -> set[int]:
    """Which of the KILLS take the whole worker down."""
    return set(rng.sample(range(KILLS), WHOLE_WORKER_KILLS))


def test_worker_kills_while_processing_inbound(vhost, db, fake_vonage,
                                               stack: Callable[..., Stack], capsys):
    seed = scenario_seed()
    rng = random.Random(seed)
    database_url = os.environ["DATABASE_URL"]
    number = create_campaign(database_url, delay=0, total_cap=Decimal("3.00"))
    running = stack(broker_url(vhost), database_url)
    numbers = sender_numbers(rng, 150)
    poster = Poster(running, inbound_stream(rng, numbers, concat_share=0.08),
                    rate=25).start()

    def progress() -> int:
        return db.execute("SELECT (SELECT count(*) FROM inbound_messages)"
                          " + (SELECT count(*) FROM inbound_parts) AS n").fetchone()["n"]

    whole = _kill_plan(rng)
    try:
        for kill in range(KILLS):
            target = progress() + rng.randint(2, 10)
            wait_for(lambda target=target: progress() >= target, timeout=120,
                     interval=0.02, message="the worker processing inbound SMS")
            _strike(running, rng, kill in whole)
    finally:
        poster.finish()
    refused = poster.refused()
    retry_like_vonage(running, refused)
    returned, lost = recover(running, lambda: wait_until_idle(vhost, timeout=180))

    result = audit(db, fake_vonage, [params for params, _ in poster.answers], number,
                   running.logs(), numbers)
    result.extra.update(kills=sum(running.kills.values()), pool=running.kills["pool"],
                        whole=running.kills["worker"], refused=len(refused),
                        returned=returned, unknown_after_crash=lost)
    result.report(capsys, "worker-kills-inbound", seed)
    assert sum(running.kills.values()) >= 20
    assert result.acked >= 200 and result.sms > 0
    result.check()


def test_worker_kills_while_sending_replies(vhost, db, fake_vonage,
                                            stack: Callable[..., Stack], capsys):
    seed = scenario_seed()
    rng = random.Random(seed)
    database_url = os.environ["DATABASE_URL"]
    # 90 replies at the fake's price: the waves during the kills stay below (each must be
    # sent for the next kill to come), the last wave goes beyond.
    cap = Decimal("3.00")
    number = create_campaign(database_url, delay=0, total_cap=cap)
    running = stack(broker_url(vhost), database_url)
    numbers = sender_numbers(rng, KILLS * WAVE + 40)
    waves = new_senders(rng, numbers)
    fake_vonage.default = Behaviour(delay=SLOW_SEND)
    acked: list[dict[str, str]] = []
    refused: list[dict[str, str]] = []

    def post_wave(size: int) -> None:
        for _ in range(size):
            [params] = next(waves)
            (acked if running.post(params) == 200 else refused).append(params)

    whole = _kill_plan(rng)
    for kill in range(KILLS):
        post_wave(WAVE)
        target = fake_vonage.requests + rng.randint(1, WAVE)
        wait_for(lambda target=target: fake_vonage.requests >= target, timeout=120,
                 interval=0.01, message="replies being sent")
        _strike(running, rng, kill in whole)
    fake_vonage.default = Behaviour()
    post_wave(40)  # more demand than the cap allows
    retry_like_vonage(running, refused)
    wait_for(lambda: fake_vonage.in_flight == 0, timeout=30, message="the fake's last answers")
    returned, lost = recover(running, lambda: wait_until_idle(vhost, timeout=180))

    result = audit(db, fake_vonage, acked + refused, number, running.logs(), numbers)
    result.extra.update(kills=sum(running.kills.values()), pool=running.kills["pool"],
                        whole=running.kills["worker"], returned=returned,
                        unknown_after_crash=lost)
    result.report(capsys, "worker-kills-replies", seed)
    assert sum(running.kills.values()) >= 20
    assert result.acked == len(numbers)
    result.check()
    assert result.statuses["pending"] > 0, "the cap left some senders waiting for budget"
    waiting = db.execute("SELECT count(*) AS n FROM replies WHERE status = 'pending'"
                         " AND error = 'waiting for budget'").fetchone()["n"]
    assert waiting == result.statuses["pending"]
    assert result.statuses["sent"] + result.statuses["unknown"] == int(cap / PRICE), \
        "the whole cap was used, kills notwithstanding (unknown sends keep theirs)"
