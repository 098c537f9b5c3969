"""The 2017 attack replayed over the real stack (signed webhooks -> RabbitMQ -> worker ->
PostgreSQL -> the real vonage SDK -> the fake Vonage): 5 flooders x 1,000 messages, a raid
of 300 new numbers x 4 slogans, 500 ordinary senders x 1-3 messages, 3% webhooks retried."""

from __future__ import annotations

import time
from collections import Counter
from decimal import Decimal

from ingest import create_app
from shared.settings import Settings
from tests.helpers import VHOSTS, sign, wait_until_idle
from workers import tasks
from workers.replay.scenarios import replay_2017

VHOST = VHOSTS["test"]


def test_replay_of_2017_every_real_sender_answered_once_attackers_almost_never(
        db, campaign, fake_vonage, worker):
    number = campaign("33700000001", reply="Cette personne ne veut pas vous parler.")
    scenario = replay_2017(number)
    client = create_app(Settings.from_env(), configure_logs=False).test_client()
    started = time.monotonic()
    for position, webhook in enumerate(scenario.webhooks):
        assert client.post("/webhooks/inbound", data=sign(webhook)).status_code == 200
        if position == len(scenario.webhooks) // 2:
            tasks.evaluate_storm_mode.delay()
    posted = time.monotonic()
    wait_until_idle(VHOST, timeout=240)
    print(f"posting took {posted - started:.1f}s, draining {time.monotonic() - posted:.1f}s")
    tasks.flush_due_replies.delay()
    wait_until_idle(VHOST, timeout=120)

    replies = Counter(sms.to for sms in fake_vonage.sent)
    ordinary = scenario.numbers("ordinary")
    assert [number for number in ordinary if replies[number] != 1] == []
    assert all(replies[number] <= 1 for number in scenario.numbers("flooder"))
    raiders_answered = sum(replies[number] for number in scenario.numbers("raider"))
    assert raiders_answered <= 30, f"{raiders_answered} of 300 raiders answered"

    distinct = len({webhook["messageId"] for webhook in scenario.webhooks})
    recorded = db.execute("SELECT COUNT(*) AS n FROM inbound_messages").fetchone()["n"]
    assert recorded == distinct, "every inbound recorded, once"
    spent = db.execute("SELECT SUM(price) AS s FROM replies").fetchone()["s"]
    assert spent == fake_vonage.total_price
    assert db.execute("SELECT spent FROM budgets").fetchone()["spent"] == spent
    assert spent <= Decimal("0.0333") * (len(ordinary) + 5 + 30)
    rows = db.execute("SELECT verdict, COUNT(*) AS n FROM inbound_messages GROUP BY verdict")
    verdicts = {row["verdict"]: row["n"] for row in rows.fetchall()}
    assert verdicts["block"] > 4000, verdicts
    assert db.execute("SELECT storm_mode FROM campaigns").fetchone()["storm_mode"]
    print(f"replay: {len(scenario.webhooks)} webhooks, verdicts {verdicts}, "
          f"{len(fake_vonage.sent)} SMS, raiders answered {raiders_answered}, spent {spent}")
