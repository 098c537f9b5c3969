"""`relous storm`: replay a scenario's webhooks against a running service, then report.

Webhooks are posted at the scenario's times divided by `speed`, signed like Vonage's when
a secret is given. Replies are counted per sender at the provider (the fake Vonage's
`/_fake/sent` log) or in the service's own records (`relous demo --storm`, records.py);
without either, only the service's totals from its `/metrics` are known, and the report
says so instead of counting nobody as answered. The report is a table per sender class
and a PNG chart.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal

import requests

from shared.rules.phones import default_time_zone
from shared.vonage.webhooks import expected_signature
from workers.replay.scenarios import TimedWebhook

# What the 2017 service paid per answered SMS (two segments, then one: 0.16 then 0.08).
PRICE_2017 = Decimal("0.16")


@dataclass
class StormResult:
    speed: float
    started: float
    finished: float = 0.0
    acked: Counter = field(default_factory=Counter)        # role -> 2xx answers
    refused: Counter = field(default_factory=Counter)      # role -> other answers
    delivered: Counter = field(default_factory=Counter)    # role -> webhooks posted
    messages: Counter = field(default_factory=Counter)     # role -> distinct messages
    senders: dict[str, str] = field(default_factory=dict)  # number -> role
    sent_at: list[tuple[float, str]] = field(default_factory=list)  # scenario s, role
    # Per SMS sent (to, price, at), from the provider's log or the service's records;
    # None when neither was read: per-class replies are unknown.
    replies: list[dict] | None = None
    # The service's own count of replies sent and EUR spent during the replay, from the
    # difference of two /metrics scrapes (None when not read).
    service_totals: tuple[int, Decimal] | None = None
    caps: dict[str, float] = field(default_factory=dict)   # period -> EUR
    # Senders whose reply was queued but never went out (caps, a halt); only a replay
    # that reads the database knows them (bench/cost.py): the others count as suppressed.
    unsent: set[str] = field(default_factory=set)
    zone: str | None = None                                # the campaign's days, for caps


def run_storm(webhooks: list[TimedWebhook], target: str, speed: float, *,
              secret: str | None = None, method: str = "sha256", concurrency: int = 16,
              progress: bool = True) -> StormResult:
    """Post every webhook at its compressed time; return what was sent and answered."""
    result = StormResult(speed=speed, started=time.time())
    seen: set[str] = set()
    for webhook in webhooks:
        result.senders[webhook.params["msisdn"]] = webhook.role
        if webhook.params["messageId"] not in seen:
            seen.add(webhook.params["messageId"])
            result.messages[webhook.role] += 1
    lock = threading.Lock()
    local = threading.local()
    url = target.rstrip("/") + "/webhooks/inbound"

    def post(webhook: TimedWebhook) -> None:
        session = getattr(local, "session", None) or requests.Session()
        local.session = session
        params = dict(webhook.params)
        if secret:
            params["timestamp"] = str(int(time.time()))
            params["sig"] = expected_signature(params, secret, method)
        try:
            ok = session.post(url, data=params, timeout=20).status_code < 300
        except requests.RequestException:
            ok = False
        with lock:
            (result.acked if ok else result.refused)[webhook.role] += 1

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        last_report = 0.0
        for index, webhook in enumerate(webhooks):
            due = result.started + webhook.at / speed
            wait = due - time.time()
            if wait > 0:
                time.sleep(wait)  # pacing to the scenario's clock
            pool.submit(post, webhook)
            result.delivered[webhook.role] += 1
            result.sent_at.append((webhook.at, webhook.role))
            if progress and time.time() - last_report > 0.5:
                last_report = time.time()
                _progress(index + 1, len(webhooks), sum(result.refused.values()))
    if progress:
        _progress(len(webhooks), len(webhooks), sum(result.refused.values()))
        print(file=sys.stderr)
    result.finished = time.time()
    return result


def _progress(done: int, total: int, refused: int) -> None:
    width = 40
    filled = int(width * done / max(total, 1))
    print(f"\r[{'#' * filled}{'-' * (width - filled)}] {done}/{total} webhooks, "
          f"{refused} refused", end="", file=sys.stderr, flush=True)


def collect_replies(result: StormResult, provider_log: str, settle_seconds: float,
                    verify: str | bool = True) -> None:
    """Read the provider's log until it stops growing for `settle_seconds`."""
    last_count, stable_since = -1, time.time()
    while True:
        sent = requests.get(provider_log, timeout=20, verify=verify).json()["sent"]
        ours = [sms for sms in sent if sms["to"] in result.senders
                and sms["at"] >= result.started]
        if len(ours) != last_count:
            last_count, stable_since = len(ours), time.time()
        elif time.time() - stable_since >= settle_seconds:
            result.replies = ours
            return
        time.sleep(1)  # polling an external log at a human pace


def read_metrics(target: str, campaign: str, token: str | None
                 ) -> tuple[dict[str, float], tuple[int, Decimal]] | None:
    """The campaign's caps, and its replies sent and spend so far, from the service's
    /metrics; None when it cannot be read."""
    from prometheus_client.parser import text_string_to_metric_families

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        response = requests.get(target.rstrip("/") + "/metrics", headers=headers, timeout=20)
        response.raise_for_status()
    except requests.RequestException:
        return None
    caps: dict[str, float] = {}
    replies, spend = 0, Decimal(0)
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            if sample.labels.get("campaign") != campaign:
                continue
            if family.name == "relous_budget_cap_euros":
                caps[sample.labels["period"]] = sample.value
            elif sample.name == "relous_replies_total" and \
                    sample.labels.get("status") == "sent":  # a receipt adds `delivered`
                # to a reply already counted `sent`: counting both would count it twice
                replies += int(sample.value)
            elif sample.name == "relous_spend_euros_total":
                spend += Decimal(str(sample.value))
    return caps, (replies, spend)


def wait_for_quiet(target: str, campaign: str, token: str | None,
                   settle_seconds: float) -> None:
    """Wait until the service's replies and spend stop changing for `settle_seconds`."""
    last, stable_since = read_metrics(target, campaign, token), time.time()
    while time.time() - stable_since < settle_seconds:
        time.sleep(1)  # polling an external service at a human pace
        now = read_metrics(target, campaign, token)
        if now != last:
            last, stable_since = now, time.time()


def read_caps(result: StormResult, target: str, campaign: str, token: str | None,
              before: tuple[int, Decimal] | None = None) -> None:
    """The campaign's caps from the service's /metrics (none if not exposed), the time
    zone its days start in (its number's, as the service's default) and, given the totals
    read `before` the replay, what the service counted during it."""
    result.zone = default_time_zone(campaign)
    read = read_metrics(target, campaign, token)
    if read is None:
        return
    result.caps, (replies, spend) = read
    if before is not None:
        result.service_totals = (replies - before[0], spend - before[1])
