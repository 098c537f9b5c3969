"""Provider faults: the fake Vonage answers throttled (status 1), internal error (status 5),
HTTP 5xx and 429, times out (answers after the SDK's 10 s time-out, the SMS still going
out), hangs (no answer, nothing sent) or hangs up mid-request, in a seeded random order,
to the Procfile's processes.

After the retries and recovery: no reply was sent twice, every reply is sent or in a
documented final state, the cap held, and once Vonage's delivery receipts came back, the
spend recorded equals what the fake charged.
"""

from __future__ import annotations

import os
import random
from collections import Counter
from collections.abc import Callable
from decimal import Decimal

import pytest
import requests

from shared.vonage.sms import SEND_TIMEOUT_SECONDS
from tests.fake_vonage import Behaviour
from tests.faults.audit import FINAL, audit
from tests.faults.stack import (
    Stack,
    create_campaign,
    new_senders,
    recover,
    scenario_seed,
    sender_numbers,
)
from tests.helpers import broker_url, receipt, sign, wait_for, wait_until_idle

pytestmark = [pytest.mark.faults, pytest.mark.e2e]
LATE = SEND_TIMEOUT_SECONDS + 0.5  # an answer after the SDK gave up
FAULTS = {
    "throttled": [Behaviour(status="1")] * 3,
    "internal_error": [Behaviour(status="5")],
    "http_5xx": [Behaviour(http_status=503, retry_after="1")],
    # A 5xx that may follow processing (an edge proxy after the request reached Vonage).
    "http_ambiguous": [Behaviour(http_status=500), Behaviour(http_status=502),
                       Behaviour(http_status=504)],
    "http_429": [Behaviour(http_status=429)],
    "timeout": [Behaviour(delay=LATE)] * 2,  # the SMS goes out; the client never knows
    "hang": [Behaviour(delay=LATE, drop="unsent")],  # no answer at all, nothing sent
    # The connection closes after the request left, before the answer: the SMS went out
    # or not, the client cannot tell (the vonage SDK would retry the POST: see providers).
    "hang_up_sent": [Behaviour(drop="sent")],
    "hang_up_unsent": [Behaviour(drop="unsent")],
}
MAYBE_SENT = ("timeout", "hang", "hang_up_sent", "hang_up_unsent", "http_ambiguous")  # unknown
NEVER_SENT = ("hang", "hang_up_unsent", "http_ambiguous")  # unknown for good: no receipt
SENDERS = 30
CAP = Decimal("0.80")  # 24 replies at the fake's price: 6 senders wait for budget


def test_throttled_5xx_timeouts_and_hangs_send_nothing_twice(
        vhost, db, fake_vonage, stack: Callable[..., Stack], capsys):
    seed = scenario_seed()
    rng = random.Random(seed)
    database_url = os.environ["DATABASE_URL"]
    number = create_campaign(database_url, delay=0, total_cap=CAP)
    running = stack(broker_url(vhost), database_url)
    script = [behaviour for faults in FAULTS.values() for behaviour in faults]
    script += [Behaviour()] * 10
    rng.shuffle(script)
    fake_vonage.script(*script)
    numbers = sender_numbers(rng, SENDERS)
    webhooks = [params for [params] in new_senders(rng, numbers)]
    for params in webhooks:
        assert running.post(params) == 200

    def retries_done() -> bool:
        """One round of beat's flush, with every back-off cut short."""
        wait_until_idle(vhost, timeout=90)
        backing_off = db.execute(
            "UPDATE replies SET due_at = now() WHERE status = 'pending'"
            " AND error IS DISTINCT FROM 'waiting for budget' RETURNING id").fetchall()
        if backing_off:
            running.flush()
        return not backing_off

    wait_for(retries_done, timeout=240, interval=0.1, message="every retry made")
    wait_for(lambda: fake_vonage.in_flight == 0, timeout=30, message="late answers")
    returned, lost = recover(running, lambda: wait_until_idle(vhost, timeout=90))
    assert (returned, lost) == (0, 0), "the workers settled every send themselves"
    assert fake_vonage.requests >= len(script), "every scripted answer was given"
    unknown_before = db.execute("SELECT count(*) AS n FROM replies"
                                " WHERE status = 'unknown'").fetchone()["n"]

    # Vonage's delivery receipts, for every SMS that went out (client-ref = the reply id).
    for sms in list(fake_vonage.sent):
        for message_id in sms.message_ids:
            params = receipt(message_id, status="delivered",
                             price=f"{fake_vonage.price_per_part:.8f}", msisdn=sms.to,
                             to=number, **{"client-ref": sms.client_ref or ""})
            assert running.post(sign(params), "/webhooks/status") == 200
    wait_until_idle(vhost)

    result = audit(db, fake_vonage, webhooks, number, running.logs(), numbers)
    recorded_spend = db.execute(
        "SELECT COALESCE(sum(COALESCE(final_price, price)), 0) AS spend FROM replies"
        " WHERE status IN ('sent', 'delivered', 'failed')").fetchone()["spend"]
    settled = db.execute("SELECT spent FROM budgets").fetchone()["spent"]
    attempts = Counter(row["attempts"] for row in db.execute(
        "SELECT attempts FROM replies WHERE attempts > 1").fetchall())
    result.extra.update(
        **{kind: len(faults) for kind, faults in FAULTS.items()},
        requests=fake_vonage.requests, retried=sum(attempts.values()),
        unknown_before_receipts=unknown_before, recorded_spend=Decimal(recorded_spend),
        settled_spend=Decimal(settled))
    result.report(capsys, "provider-faults", seed)
    result.check()
    assert set(result.statuses) <= FINAL | {"pending"}
    verdicts = db.execute("SELECT verdict, reasons, COUNT(*) AS n FROM inbound_messages"
                          " GROUP BY verdict, reasons").fetchall()
    assert result.statuses["pending"] == SENDERS - int(CAP / Decimal("0.0333")), \
        f"only the senders beyond the cap wait, for budget; inbound {verdicts}"
    assert unknown_before == sum(len(FAULTS[kind]) for kind in MAYBE_SENT)
    assert result.statuses["unknown"] == sum(len(FAULTS[kind]) for kind in NEVER_SENT), \
        "a receipt settled each unknown send that went out; the others stay unknown"
    assert result.sms == int(CAP / Decimal("0.0333")) - result.statuses["unknown"]
    assert Decimal(recorded_spend) == result.spend, "recorded spend = what the fake charged"
    assert result.reserved >= result.spend, "the budget counted every SMS that went out"
    assert _spend_metric(running, number) == Decimal(settled) == result.spend, \
        "a receipt's price for an `unknown` send is counted as spend"


def _spend_metric(running: Stack, campaign: str) -> Decimal:
    """`relous_spend_euros_total` of the campaign, scraped from the web's /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    text = requests.get(f"{running.base}/metrics", timeout=30).text
    [value] = [sample.value for family in text_string_to_metric_families(text)
               for sample in family.samples
               if sample.name == "relous_spend_euros_total"
               and sample.labels.get("campaign") == campaign]
    return Decimal(str(value)).quantize(Decimal("0.0001"))
