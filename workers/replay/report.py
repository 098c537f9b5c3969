"""The storm report: a table per sender class, the summary lines and the PNG chart, from a
replay's `StormResult` (relous storm, relous demo --storm, bench/cost.py).

Per-class replies need per-sender data (a provider's log or the service's records); with
only the service's totals, the table says `?` and the lines give the totals, never
"0 answered" for a replay nobody counted.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from shared.rules.budget import day_start, hour_start
from shared.rules.money import euros
from workers.replay.runner import PRICE_2017, StormResult
from workers.replay.scenarios import LEGITIMATE, is_malicious


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
    replies = result.replies or []
    per_sender = Counter(sms["to"] for sms in replies)
    spend: dict[str, Decimal] = defaultdict(Decimal)
    for sms in replies:
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
        for sms in result.replies or []:
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
    known = result.replies is not None
    rows = [["class", "senders", "messages", "webhooks", "acked", "replies", "spend EUR",
             "answered once", "never answered", "EUR per message"]]
    for role, chosen in [*((role, [figures[role]]) for role in figures),
                         ("all", list(figures.values()))]:
        total = ClassFigures(*(sum(getattr(one, column.name) for one in chosen)
                               for column in fields(ClassFigures)))
        answers = [str(total.replies), euros(total.spend), str(total.once), str(total.never),
                   euros(total.per_message, 5)] if known else ["?"] * 5
        rows.append([role, str(total.senders), str(total.messages), str(total.webhooks),
                     str(total.acked), *answers])
    lines = [f"replayed in {result.finished - result.started:.0f} s at speed x{result.speed:g}"]
    lines += _answer_lines(result, figures) if known else _totals_lines(result)
    return rows, lines


def _answer_lines(result: StormResult, figures: dict[str, ClassFigures]) -> list[str]:
    malicious = [one for role, one in figures.items() if is_malicious(role)]
    malicious_messages = sum(one.messages for one in malicious)
    malicious_spend = sum((one.spend for one in malicious), Decimal(0))
    lines = []
    if malicious_messages:
        lines.append(f"spend per malicious message: "
                     f"{euros(malicious_spend / malicious_messages, 5)} EUR "
                     f"(2017: {PRICE_2017} EUR)")
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
    lines.append(f"spend: {euros(total_spend)} EUR; caps: {_caps(result)}")
    overshoot, where = cap_overshoot(result)
    lines.append(f"cap overshoot: {euros(overshoot)} EUR" + (f" ({where})" if where else ""))
    return lines


def _totals_lines(result: StormResult) -> list[str]:
    """Without per-sender data: what the service itself counted, or that nothing was."""
    lines = ["replies per class: unknown (no --provider-log to count them per sender)"]
    if result.service_totals is None:
        lines.append("the service's /metrics could not be read: no reply figures at all")
    else:
        sent, spend = result.service_totals
        lines.append(f"the service counted {sent} replies sent and {euros(spend)} EUR spent "
                     f"during the replay (its /metrics); caps: {_caps(result)}")
    return lines


def _caps(result: StormResult) -> str:
    return ", ".join(f"{period} {value:g} EUR"
                     for period, value in sorted(result.caps.items())) or "none"


def format_table(rows: list[list[str]]) -> str:
    widths = [max(len(row[col]) for row in rows) for col in range(len(rows[0]))]
    return "\n".join("  ".join(cell.rjust(width) if col else cell.ljust(width)
                               for col, (cell, width) in enumerate(zip(row, widths,
                                                                       strict=True)))
                     for row in rows)


def write_chart(result: StormResult, path: str, title: str) -> str:
    """Write the chart; the line to print about it."""
    try:
        chart(result, path, title)
    except ImportError:  # matplotlib is a dependency: only a broken install lacks it
        return "no chart: matplotlib is missing (pip install -e .)"
    return f"chart: {path}"


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
    if result.replies is None:  # nobody counted them per sender: draw nothing, say so
        bottom.text(0.5, 0.5, "replies per sender unknown (no --provider-log): "
                    "see the report's totals", ha="center", va="center",
                    transform=bottom.transAxes)
        bottom.set_xlabel("scenario time (hours)")
    else:
        _replies_and_spend(result, bottom)
    figure.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _replies_and_spend(result: StormResult, bottom: Any) -> None:
    """Cumulative replies, and spend against the caps, over the scenario's time."""
    reply_hours = sorted((sms["at"] - result.started) * result.speed / 3600
                         for sms in result.replies or [])
    spend = []
    total = Decimal(0)
    for sms in sorted(result.replies or [], key=lambda sms: sms["at"]):
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
