"""The alert webhook (ALERT_WEBHOOK_URL): what people who run no Alertmanager are told,
and how it reaches them.

`watch` turns what is true now into alerts in the outbox (shared/store/alerts.py), each
once, by a dedupe key; `deliver` POSTs `{"text": …}` (the shape Slack, Mattermost,
Discord's `/slack` endpoint and Matrix hookshot accept) outside any transaction, with
short timeouts, and retries with back-off. Storm mode's alerts are raised by
`workers/housekeeping.py` when it switches; the spend-rate trip shows as a halt.

Texts name campaigns by their number, never a sender (no number, no pseudonym), and the
webhook's URL is never logged or stored: it usually holds the webhook's secret.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import requests
from requests.adapters import HTTPAdapter

from shared.metrics import PRICE_OVERRUNS
from shared.rules.budget import estimate_cost
from shared.rules.campaign import Campaign
from shared.store import alerts as outbox
from shared.store.budgets import budget_of
from shared.store.campaigns import EVERY_CAMPAIGN, list_campaigns
from shared.store.counters import counter_totals
from shared.store.db import Database, Transaction

log = logging.getLogger(__name__)

# Back-off: the n-th failed attempt waits RETRY_FIRST_SECONDS × 2^(n-1), at most
# RETRY_MAX_SECONDS: 30 s, 1, 2, 4, 8, 16, 32 min, 1 h, 1 h. The 10th failure
# (MAX_ATTEMPTS) gives the alert up, about 3 h after its first try, logged as an error.
RETRY_FIRST_SECONDS = 30
RETRY_MAX_SECONDS = 3600
MAX_ATTEMPTS = 10
# A POST connects within 3 s and gets each read within 5 s, or it failed (retried: the
# webhook may have got it; a duplicate alert is better than a lost one).
CONNECT_TIMEOUT_SECONDS = 3.0
READ_TIMEOUT_SECONDS = 5.0
# A claimed alert whose worker died mid-POST is due again after this (> one POST).
LEASE_SECONDS = 60
# One `deliver` sends at most this many alerts and starts no POST after RUN_SECONDS, and
# it stops at the first failure: a dead webhook costs one time-out per run, not one per
# alert. Bound of one run: RUN_SECONDS + one POST's time-outs, about 18 s.
MAX_PER_RUN = 20
RUN_SECONDS = 10.0
# Alerts not delivered this long after they were raised are given up unsent (raised while
# no webhook was set, or left by dying workers); longer than the whole retry schedule.
STALE_AFTER = timedelta(hours=6)
# Delivered and given-up alerts are deleted after this, except the ones the watchers still
# compare with (see `purge`).
RETENTION = timedelta(days=30)
# A cap's alert levels, in % of the cap; 100 means "no further reply fits".
CAP_WARNING = Decimal("0.8")
PERIOD_NAMES = {"hour": "hourly", "day": "daily", "total": "total"}


@dataclass(frozen=True)
class Alert:
    key: str
    text: str


def watch(tx: Transaction, now: datetime) -> list[str]:
    """Raise an alert for each event not yet alerted: caps at 80 % and 100 % (per budget
    period), halts (per campaign and global), new parked messages, price overruns.
    Returns the keys raised now. Safe to run twice, or at once: the keys decide."""
    return [alert.key for alert in _events(tx, now)
            if outbox.raise_alert(tx, alert.key, alert.text, now)]


def purge(tx: Transaction, now: datetime) -> int:
    """Delete finished alerts older than RETENTION, keeping those whose condition still
    holds (a total cap still full, a halt still on) and the latest parked and overrun
    marks: deleted, they would be raised again."""
    keep = {alert.key for alert in _events(tx, now)}
    keep |= {row["dedupe_key"] for row in
             [outbox.latest_alert(tx, "parked:"),
              *(outbox.latest_alert(tx, f"overrun:{campaign.number}:")
                for campaign in list_campaigns(tx))] if row}
    return outbox.purge_alerts(tx, now - RETENTION, keep)


def deliver(db: Database, url: str, now: datetime) -> dict[str, int]:
    """POST the due alerts to `url`, one at a time: claimed (with a lease) in a short
    transaction, posted outside any, then marked delivered or put back with back-off.
    Bounded: see MAX_PER_RUN and RUN_SECONDS. Returns counts by outcome."""
    counts = {"delivered": 0, "retrying": 0, "given_up": 0, "stale": 0}
    with db.transaction() as tx:
        counts["stale"] = outbox.give_up_stale(tx, now - STALE_AFTER, now)
    if counts["stale"]:
        log.error("%s alerts given up unsent: raised over %s ago", counts["stale"], STALE_AFTER)
    deadline = time.monotonic() + RUN_SECONDS
    with requests.Session() as session:
        # One POST per attempt: no transport retry behind our back (STYLE.md, "Traps").
        session.mount("http://", HTTPAdapter(max_retries=0))
        session.mount("https://", HTTPAdapter(max_retries=0))
        for _ in range(MAX_PER_RUN):
            if time.monotonic() > deadline:
                break
            with db.transaction() as tx:
                claimed = outbox.claim_due(tx, now, now + timedelta(seconds=LEASE_SECONDS),
                                           MAX_ATTEMPTS)
            if claimed is None:
                break
            error = _post(session, url, claimed["text"])
            outcome = _settle(db, claimed["id"], claimed["attempts"], error, now)
            counts[outcome] += 1
            if error:
                break  # the webhook is failing: the other alerts wait for their next run
    return counts


def retry_delay(attempts: int) -> timedelta:
    """How long an alert waits after its `attempts`-th failed attempt."""
    return timedelta(seconds=min(RETRY_FIRST_SECONDS * 2 ** (attempts - 1), RETRY_MAX_SECONDS))


def _post(session: requests.Session, url: str, text: str) -> str:
    """POST one alert; '' when the webhook took it (2xx), else what failed. The error
    names a status or an exception class, never the URL (it holds the webhook's secret)."""
    try:
        # stream: the status is all we need; a body is never read (however slow it comes)
        with session.post(url, json={"text": text}, allow_redirects=False, stream=True,
                          timeout=(CONNECT_TIMEOUT_SECONDS, READ_TIMEOUT_SECONDS)) as answer:
            return "" if 200 <= answer.status_code < 300 else f"HTTP {answer.status_code}"
    except requests.RequestException as failure:
        return type(failure).__name__


def _settle(db: Database, alert_id: int, attempts: int, error: str, now: datetime) -> str:
    with db.transaction() as tx:
        if not error:
            outbox.mark_delivered(tx, alert_id, now)
            log.info("alert %s delivered (attempt %s)", alert_id, attempts)
            return "delivered"
        if attempts >= MAX_ATTEMPTS:
            outbox.give_up(tx, alert_id, attempts, error, now)
            log.error("alert %s given up after %s attempts: %s", alert_id, attempts, error)
            return "given_up"
        delay = retry_delay(attempts)
        outbox.schedule_retry(tx, alert_id, attempts, error, now + delay)
    log.warning("alert %s not delivered (%s), attempt %s of %s: next in %s", alert_id, error,
                attempts, MAX_ATTEMPTS, delay)
    return "retrying"


# --- the watchers ------------------------------------------------------------------------

def _events(tx: Transaction, now: datetime) -> list[Alert]:
    """The alerts of what is true now (raised or not yet)."""
    campaigns = list_campaigns(tx)
    found = [alert for campaign in campaigns for alert in _caps(tx, campaign, now)]
    found += _halts(tx)
    found += _parked(tx)
    found += _overruns(tx)
    return found


def _caps(tx: Transaction, campaign: Campaign, now: datetime) -> list[Alert]:
    """The highest level each cap reached in its current period: 100 % once no further
    reply fits (what is left is below one reply's estimate), else 80 % of the cap used.
    The key holds the period's start and the cap, so a new period or a raised cap alerts
    again."""
    budget = budget_of(tx, campaign.id, now, campaign.time_zone)
    if budget is None:
        return []
    one_reply = estimate_cost(campaign.reply_text, campaign.price_per_segment,
                              campaign.observed_price_per_segment)
    periods = {"hour": (budget.hourly_cap, budget.hour_used, budget.hour_start.isoformat()),
               "day": (budget.daily_cap, budget.day_used, budget.day_start.isoformat()),
               "total": (budget.total_cap, budget.total_used, "all")}
    found = []
    for period, (cap, used, start) in periods.items():
        if cap is None or cap <= 0:
            continue
        name, figures = PERIOD_NAMES[period], f"{used:.4f} of {cap:.4f} EUR used"
        key = f"cap:{campaign.number}:{period}:{cap}:{start}"
        if cap - used < max(one_reply, Decimal("0.00000001")):
            wait = ("until the cap is raised (`relous budget set`)" if period == "total"
                    else f"for the next {period}")
            found.append(Alert(f"{key}:100", f"anti-relous: campaign {campaign.number} "
                               f"reached its {name} cap ({figures}): replies wait {wait}."))
        elif used >= cap * CAP_WARNING:
            found.append(Alert(f"{key}:80", f"anti-relous: campaign {campaign.number} "
                               f"used 80 % of its {name} cap ({figures})."))
    return found


def _halts(tx: Transaction) -> list[Alert]:
    """Each halt in force; its time is in the key, so a new trip after a restart alerts
    again."""
    found = []
    for halt in outbox.current_halts(tx):
        at = halt["halted_at"].astimezone(UTC).isoformat() if halt["halted_at"] else "unknown"
        reason = str(halt["reason"])[:300]
        if halt["scope"] == EVERY_CAMPAIGN:
            text = (f"anti-relous: sending HALTED for every campaign since {at}: {reason}."
                    " `relous sending start` resumes it.")
        else:
            text = (f"anti-relous: sending HALTED for campaign {halt['scope']} since {at}:"
                    f" {reason}. `relous sending start --campaign {halt['scope']}` resumes it.")
        found.append(Alert(f"halt:{halt['scope']}:{at}", text))
    return found


def _parked(tx: Transaction) -> list[Alert]:
    """Messages parked since the last parked alert (its key holds the highest id seen)."""
    last = outbox.latest_alert(tx, "parked:")
    seen = int(last["dedupe_key"].rsplit(":", 1)[1]) if last else 0
    new = outbox.parked_after(tx, seen)
    if not new["by_kind"]:
        return []
    kinds = ", ".join(f"{kind}: {n}" for kind, n in sorted(new["by_kind"].items()))
    return [Alert(f"parked:{new['last_id']}",
                  f"anti-relous: {sum(new['by_kind'].values())} new message(s) parked"
                  f" ({kinds}); {new['waiting']} waiting for an operator: `relous parked"
                  " list`.")]


def _overruns(tx: Transaction) -> list[Alert]:
    """Campaigns whose price-overrun counter rose since their last overrun alert (its key
    holds the count it reported)."""
    found = []
    for row in counter_totals(tx):
        if row["metric"] != PRICE_OVERRUNS or not row["campaign"]:
            continue
        number, total = row["campaign"], int(row["value"])
        last = outbox.latest_alert(tx, f"overrun:{number}:")
        before = int(last["dedupe_key"].rsplit(":", 1)[1]) if last else 0
        if total > before:
            found.append(Alert(
                f"overrun:{number}:{total}",
                f"anti-relous: price overrun on campaign {number}: {total - before} send(s)"
                f" billed above their reservation ({total} in all); its sending is halted"
                f" until `relous sending start --campaign {number}`."))
    return found
