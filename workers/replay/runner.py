"""`relous storm`: replay a scenario's webhooks against a running service, then report.

Webhooks are posted at the scenario's times divided by `speed`, signed like Vonage's when
a secret is given. Replies are counted at the provider: the fake Vonage's `/_fake/sent`
log (run `python -m tests.fake_vonage` and point the service at it). The report is a
table per sender class and a PNG chart.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import requests

from shared.rules.budget import day_start, hour_start
from shared.rules.phones import default_time_zone
from shared.vonage.webhooks import expected_signature
from workers.replay.scenarios import LEGITIMATE, TimedWebhook, is_malicious

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
    replies: list[dict] = field(default_factory=list)      # from the provider's log
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


def read_caps(result: StormResult, target: str, campaign: str, token: str | None) -> None:
    """The campaign's caps from the service's /metrics (none if not exposed), and the time
    zone its days start in (its number's, as the service's default)."""
    from prometheus_client.parser import text_string_to_metric_families

    result.zone = default_time_zone(campaign)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        text = requests.get(target.rstrip("/") + "/metrics", headers=headers, timeout=20).text
    except requests.RequestException:
        return
    for family in text_string_to_metric_families(text):
        if family.name == "relous_budget_cap_euros":
            for sample in family.samples:
                if sample.labels.get("campaign") == campaign:
                    result.caps[sample.labels["period"]] = sample.value


@dataclass(frozen=True)
class ClassFigures:
    """One class of senders in a replay: what it sent, and what answering it cost."""

    senders: int
    messages: int
    webhooks: int
    acked: int
    replies: int
    spend: Decimal
    once: int     # senders answered exactly once
    never: int    # senders never answered
    waiting: int  # of those, the ones whose reply was queued but never went out

    @property
    def per_message(self) -> Decimal:
        return self.spend / self.messages if self.messages else Decimal(0)


def class_figures(result: StormResult) -> dict[str, ClassFigures]:
    """Per class of sender (replies are matched to senders by the `to` of each SMS)."""
    per_sender = Counter(sms["to"] for sms in result.replies)
    spend: dict[str, Decimal] = defaultdict(Decimal)
    for sms in result.replies:
        spend[result.senders.get(sms["to"], "?")] += Decimal(sms["price"])
    figures = {}
    for role in sorted(set(result.senders.values())):
        numbers = [number for number, kind in result.senders.items() if kind == role]
        never = [number for number in numbers if not per_sender[number]]
        figures[role] = ClassFigures(
            len(numbers), result.messages[role], result.delivered[role], result.acked[role],
            sum(per_sender[number] for number in numbers), spend[role],
            sum(1 for number in numbers if per_sender[number] == 1), len(never),
            sum(1 for number in never if number in result.unsent))
    return figures


def cap_overshoot(result: StormResult) -> tuple[Decimal, str]:
    """The largest spend beyond a cap in any one hour, day (in the campaign's zone) or in
    all, by the time each SMS was sent, and where it was; (0, "") when none."""
    worst, where = Decimal(0), ""
    zone = ZoneInfo(result.zone or "UTC")
    for period, start_of in (("hour", hour_start), ("day", day_start), ("total", None)):
        if result.caps.get(period) is None:
            continue
        spent: dict[str, Decimal] = defaultdict(Decimal)
        for sms in result.replies:
            at = datetime.fromtimestamp(sms["at"], UTC)
            key = f"{start_of(at, result.zone).astimezone(zone):%Y-%m-%d %H:%M %Z}" \
                if start_of else "all"
            spent[key] += Decimal(sms["price"])
        for key, amount in spent.items():
            excess = amount - Decimal(str(result.caps[period]))
            if excess > worst:
                worst, where = excess, f"{period} {key}"
    return worst, where


def summary(result: StormResult) -> tuple[list[list[str]], list[str]]:
    """The table (one row per class, then all) and the summary lines."""
    figures = class_figures(result)
    rows = [["class", "senders", "messages", "webhooks", "acked", "replies", "spend EUR",
             "answered once", "never answered", "EUR per message"]]
    for role, chosen in [*((role, [figures[role]]) for role in figures),
                         ("all", list(figures.values()))]:
        total = ClassFigures(*(sum(getattr(one, column.name) for one in chosen)
                               for column in fields(ClassFigures)))
        rows.append([role, str(total.senders), str(total.messages), str(total.webhooks),
                     str(total.acked), str(total.replies), f"{total.spend:.4f}",
                     str(total.once), str(total.never), f"{total.per_message:.5f}"])
    malicious = [one for role, one in figures.items() if is_malicious(role)]
    malicious_messages = sum(one.messages for one in malicious)
    malicious_spend = sum((one.spend for one in malicious), Decimal(0))
    lines = [f"replayed in {result.finished - result.started:.0f} s at speed x{result.speed:g}"]
    if malicious_messages:
        lines.append(f"spend per malicious message: {malicious_spend / malicious_messages:.5f}"
                     f" EUR (2017: {PRICE_2017} EUR)")
    legitimate = {role: one for role, one in figures.items() if role in LEGITIMATE}
    for role, one in legitimate.items():
        lines.append(f"{role} senders answered exactly once: {one.once}/{one.senders} "
                     f"({100 * one.once / one.senders:.1f}%)")
    if legitimate:
        never = sum(one.never - one.waiting for one in legitimate.values())
        waiting = sum(one.waiting for one in legitimate.values())
        lines.append(f"legitimate senders suppressed (never answered, false positives): "
                     f"{never}" + (f"; {waiting} more queued but never sent (caps or a halt)"
                                   if waiting else ""))
    if malicious_messages:
        lines.append(f"malicious messages answered: {sum(one.replies for one in malicious)}"
                     f" of {malicious_messages}")
    total_spend = sum((one.spend for one in figures.values()), Decimal(0))
    caps = ", ".join(f"{period} {value:g} EUR" for period, value in sorted(result.caps.items()))
    lines.append(f"spend: {total_spend:.4f} EUR; caps: {caps or 'none'}")
    overshoot, where = cap_overshoot(result)
    lines.append(f"cap overshoot: {overshoot:.4f} EUR" + (f" ({where})" if where else ""))
    return rows, lines


def format_table(rows: list[list[str]]) -> str:
    widths = [max(len(row[col]) for row in rows) for col in range(len(rows[0]))]
    return "\n".join("  ".join(cell.rjust(width) if col else cell.ljust(width)
                               for col, (cell, width) in enumerate(zip(row, widths,
                                                                       strict=True)))
                     for row in rows)


def chart(result: StormResult, path: str, title: str) -> None:
    """Inbound rate by class; replies and cumulative spend over time; caps as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hours = [at / 3600 for at, _ in result.sent_at] or [0.0]
    span = max(hours) or 1.0
    bins = 72 if span > 6 else 60
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(11, 7), sharex=True)
    for role in sorted({role for _, role in result.sent_at}):
        top.hist([at / 3600 for at, kind in result.sent_at if kind == role], bins=bins,
                 range=(0, span), histtype="step", label=role, linewidth=1.5)
    top.set_ylabel(f"inbound webhooks per {60 * span / bins:.0f} min")
    top.set_yscale("log")
    top.legend()
    top.set_title(title)
    reply_hours = sorted((sms["at"] - result.started) * result.speed / 3600
                         for sms in result.replies)
    spend = []
    total = Decimal(0)
    for sms in sorted(result.replies, key=lambda sms: sms["at"]):
        total += Decimal(sms["price"])
        spend.append(float(total))
    bottom.plot(reply_hours, range(1, len(reply_hours) + 1), label="replies (cumulative)")
    bottom.set_ylabel("replies")
    bottom.set_xlabel("scenario time (hours)")
    money = bottom.twinx()
    money.plot(reply_hours, spend, color="tab:red", label="spend EUR (cumulative)")
    for period, value in sorted(result.caps.items()):
        money.axhline(value, linestyle="--", color="tab:gray", linewidth=1)
        money.annotate(f"{period} cap {value:g} EUR", (0, value), fontsize=8,
                       color="tab:gray", va="bottom")
    money.set_ylabel("EUR")
    lines = bottom.get_legend_handles_labels()
    more = money.get_legend_handles_labels()
    bottom.legend(lines[0] + more[0], lines[1] + more[1], loc="upper left")
    figure.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
