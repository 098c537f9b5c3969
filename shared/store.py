"""Storage of the pipeline: every statement that reads or writes its tables.

Functions take an open transaction (`shared.db.Transaction`) and plain values. Idempotency
is decided by the database: unique keys (`ON CONFLICT DO NOTHING`) and conditional
updates whose row count says whether this process won.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from shared.abuse import (
    BLOCK,
    REPLY,
    CampaignRules,
    CampaignStats,
    SenderStats,
    block_until,
    fingerprint,
    lexicon_hits,
    next_storm_mode,
    raid_in_progress,
    raid_threshold,
    score_message,
)
from shared.budget import BudgetState, day_start, estimate_cost, hour_start
from shared.db import Transaction
from shared.metrics import INBOUND, PROVIDER_ERRORS, REPLIES, SPEND
from shared.phones import pseudonym
from shared.providers import SendResult
from shared.ratelimit import refill, wait_for_token
from shared.replies import Campaign, ReplyDecision, decide_reply
from shared.webhooks import DeliveryReceipt, InboundSms

COUNTER_SHARDS = 8
# Prefix clustering compares senders' numbers without their last digits (keyed, like the
# pseudonyms, so the prefix itself is not stored).
PREFIX_HIDDEN_DIGITS = 4

# A reply in `sending` for longer than this was lost with its worker (the HTTP call times
# out after 10 s): it is marked `unknown`, never resent (see README, at most once).
SENDING_STALE_AFTER = timedelta(minutes=10)
# A reply `claimed` (reserved, not yet handed to the provider) for longer than this was
# left by a dead worker: it goes back to `pending`.
CLAIMED_STALE_AFTER = timedelta(minutes=2)
FAILED_RECEIPT_STATUSES = {"expired", "failed", "rejected", "undelivered"}


@dataclass(frozen=True)
class InboundOutcome:
    """What happened to one inbound SMS; `due_at` is set when a reply was scheduled."""

    verdict: str
    campaign: str | None
    due_at: datetime | None = None
    campaign_id: int | None = None


# --- metric counters ----------------------------------------------------------------------

def count(tx: Transaction, metric: str, campaign: str, label: str,
          amount: Decimal | int = 1) -> None:
    """Add to a business counter in the caller's transaction (see shared.metrics)."""
    tx.execute(
        "INSERT INTO metric_counters (metric, campaign, label, shard, value)"
        " VALUES (%(metric)s, %(campaign)s, %(label)s, %(shard)s, %(amount)s)"
        " ON CONFLICT (metric, campaign, label, shard)"
        " DO UPDATE SET value = metric_counters.value + excluded.value",
        {"metric": metric, "campaign": campaign, "label": label,
         "shard": os.getpid() % COUNTER_SHARDS, "amount": amount},
    )


def counter_totals(tx: Transaction) -> list[dict[str, Any]]:
    return tx.execute(
        "SELECT metric, campaign, label, SUM(value) AS value FROM metric_counters"
        " GROUP BY metric, campaign, label"
    ).fetchall()


# --- campaigns ----------------------------------------------------------------------------

CAMPAIGN_COLUMNS = (
    "id, number, reply_text, reply_delay_seconds, reply_window_seconds, price_per_segment,"
    " allow_multipart, paused, rules, storm_mode, observed_price_per_segment"
)


def find_campaign(tx: Transaction, number: str) -> Campaign | None:
    row = tx.execute(
        f"SELECT {CAMPAIGN_COLUMNS} FROM campaigns WHERE number = %(number)s",  # noqa: S608
        {"number": number},
    ).fetchone()
    return Campaign.from_row(row) if row else None


def list_campaigns(tx: Transaction) -> list[Campaign]:
    rows = tx.execute(
        f"SELECT {CAMPAIGN_COLUMNS} FROM campaigns ORDER BY number"  # noqa: S608
    ).fetchall()
    return [Campaign.from_row(row) for row in rows]


def add_campaign(tx: Transaction, number: str, reply_text: str, *, delay_seconds: int,
                 window_seconds: int, price_per_segment: Decimal, allow_multipart: bool,
                 now: datetime) -> bool:
    """Create a campaign; False when one already answers on this number."""
    cur = tx.execute(
        "INSERT INTO campaigns (number, reply_text, reply_delay_seconds, reply_window_seconds,"
        " price_per_segment, allow_multipart, created_at)"
        " VALUES (%(number)s, %(text)s, %(delay)s, %(window)s, %(price)s, %(multipart)s, %(now)s)"
        " ON CONFLICT (number) DO NOTHING",
        {"number": number, "text": reply_text, "delay": delay_seconds, "window": window_seconds,
         "price": price_per_segment, "multipart": allow_multipart, "now": now},
    )
    return cur.rowcount == 1


def set_campaign_paused(tx: Transaction, number: str, paused: bool) -> bool:
    cur = tx.execute("UPDATE campaigns SET paused = %(paused)s WHERE number = %(number)s",
                     {"paused": paused, "number": number})
    return cur.rowcount == 1


def update_campaign(tx: Transaction, campaign_id: int, *, reply_text: str | None,
                    delay_seconds: int | None, window_seconds: int | None,
                    price_per_segment: Decimal, allow_multipart: bool,
                    rules: CampaignRules) -> None:
    """Change a campaign; None keeps a value. Pending replies keep the text they had."""
    tx.execute(
        "UPDATE campaigns SET reply_text = COALESCE(%(text)s, reply_text),"
        " reply_delay_seconds = COALESCE(%(delay)s, reply_delay_seconds),"
        " reply_window_seconds = COALESCE(%(window)s, reply_window_seconds),"
        " price_per_segment = %(price)s, allow_multipart = %(multipart)s, rules = %(rules)s"
        " WHERE id = %(id)s",
        {"text": reply_text, "delay": delay_seconds, "window": window_seconds,
         "price": price_per_segment, "multipart": allow_multipart, "rules": rules.to_json(),
         "id": campaign_id},
    )


def set_sender_list(tx: Transaction, sender: str, action: str, now: datetime) -> bool:
    """`block`/`allow` put a pseudonym on a list; `unblock`/`disallow` take it off (an
    unblock also lifts automatic blocks). False when there was nothing to change."""
    if action in ("block", "allow"):
        return tx.execute(
            "INSERT INTO sender_lists (sender, list, created_at)"
            " VALUES (%(sender)s, %(list)s, %(now)s)"
            " ON CONFLICT (sender) DO UPDATE SET list = excluded.list,"
            " created_at = excluded.created_at",
            {"sender": sender, "list": action, "now": now},
        ).rowcount == 1
    listed = "block" if action == "unblock" else "allow"
    removed = tx.execute("DELETE FROM sender_lists WHERE sender = %(sender)s AND list = %(list)s",
                         {"sender": sender, "list": listed}).rowcount
    lifted = 0
    if action == "unblock":
        lifted = tx.execute(
            "UPDATE senders SET blocked_until = NULL"
            " WHERE sender = %(sender)s AND blocked_until IS NOT NULL",
            {"sender": sender},
        ).rowcount
    return bool(removed or lifted)


def campaign_overview(tx: Transaction, now: datetime) -> list[dict[str, Any]]:
    """What `relous status` shows, per campaign."""
    overview = []
    for campaign in list_campaigns(tx):
        inbound = tx.execute(
            "SELECT verdict, COUNT(*) AS n FROM inbound_messages"
            " WHERE campaign_id = %(id)s AND received_at > %(since)s GROUP BY verdict",
            {"id": campaign.id, "since": now - timedelta(hours=1)},
        ).fetchall()
        replies = tx.execute(
            "SELECT status, COUNT(*) AS n FROM replies WHERE campaign_id = %(id)s"
            " GROUP BY status", {"id": campaign.id},
        ).fetchall()
        budget = budget_of(tx, campaign.id, now)
        caps = {"hour": (budget.hour_used, budget.hourly_cap) if budget else (Decimal(0), None),
                "day": (budget.day_used, budget.daily_cap) if budget else (Decimal(0), None),
                "total": (budget.total_used, budget.total_cap) if budget
                else (Decimal(0), None)}
        overview.append({
            "number": campaign.number, "paused": campaign.paused,
            "top_reasons": _top_reasons(tx, campaign.id, now - timedelta(days=1)),
            "storm_mode": campaign.storm_mode,
            "inbound": {row["verdict"]: row["n"] for row in inbound},
            "replies": {row["status"]: row["n"] for row in replies},
            "budget": caps,
        })
    return overview


def metric_gauges(tx: Transaction, now: datetime) -> dict[str, Any]:
    """The gauges of /metrics, per campaign: pending replies, storm mode, budget left."""
    campaigns = list_campaigns(tx)
    pending = {row["number"]: row["n"] for row in tx.execute(
        "SELECT c.number, COUNT(r.id) AS n FROM campaigns c"
        " LEFT JOIN replies r ON r.campaign_id = c.id AND r.status = 'pending'"
        " GROUP BY c.number").fetchall()}
    remaining, caps = {}, {}
    for campaign in campaigns:
        budget = budget_of(tx, campaign.id, now)
        if budget is not None:
            remaining[campaign.number] = budget.remaining()
            caps[campaign.number] = {"hour": budget.hourly_cap, "day": budget.daily_cap,
                                     "total": budget.total_cap}
    return {"campaigns": [campaign.number for campaign in campaigns], "pending": pending,
            "storm": {campaign.number: campaign.storm_mode for campaign in campaigns},
            "remaining": remaining, "caps": caps}


def _top_reasons(tx: Transaction, campaign_id: int, since: datetime,
                 limit: int = 3) -> list[tuple[str, int]]:
    """The most frequent reasons (their kind, before ':') of suppressed or blocked messages."""
    rows = tx.execute(
        "SELECT reasons, COUNT(*) AS n FROM inbound_messages WHERE campaign_id = %(id)s"
        " AND verdict IN ('suppress', 'block') AND received_at > %(since)s"
        " GROUP BY reasons ORDER BY n DESC LIMIT 200",
        {"id": campaign_id, "since": since},
    ).fetchall()
    kinds: dict[str, int] = {}
    for row in rows:
        first = (row["reasons"] or "no reason").split("; ")[0]
        kind = first.split(":")[0]
        kinds[kind] = kinds.get(kind, 0) + row["n"]
    return sorted(kinds.items(), key=lambda item: -item[1])[:limit]


# --- inbound ------------------------------------------------------------------------------

class _InboundBatch:
    """What one transaction of inbound messages looks up once rather than per message (the
    campaigns, the raid window's count of first-time senders, kept current as the batch
    adds senders), and what it writes at the end in a few round trips rather than one
    per message: verdicts, reply windows, replies and counters. Nothing the judging of a
    later message reads is deferred, except the reply windows, which the batch keeps."""

    def __init__(self, tx: Transaction, now: datetime) -> None:
        self.tx = tx
        self.now = now
        self._campaigns: dict[str, Campaign | None] = {}
        self._new_senders: dict[int, tuple[int, float]] = {}
        self._same_text: dict[tuple[int, str], set[str]] = {}
        self._prefix_senders: dict[tuple[int, str], int] = {}
        self.counts: dict[tuple[str, str, str], int] = {}
        self.verdicts: list[dict[str, Any]] = []
        self.windows: dict[tuple[int, str], datetime] = {}
        self.replies: list[dict[str, Any]] = []

    def campaign(self, number: str) -> Campaign | None:
        """The campaign answering on `number`, its row locked until commit: batches of one
        campaign are judged one after the other, each seeing all the senders and texts
        before it, as the raid signals need (concurrent batches would each miss the
        others' uncommitted messages)."""
        if number not in self._campaigns:
            row = self.tx.execute(
                f"SELECT {CAMPAIGN_COLUMNS} FROM campaigns WHERE number = %(number)s"  # noqa: S608
                " FOR NO KEY UPDATE",
                {"number": number},
            ).fetchone()
            self._campaigns[number] = Campaign.from_row(row) if row else None
        return self._campaigns[number]

    def new_sender_rates(self, campaign: Campaign) -> tuple[int, float]:
        """(first-time senders in the raid window, up to the raid threshold; usual number)."""
        if campaign.id not in self._new_senders:
            self._new_senders[campaign.id] = _new_sender_rates(
                self.tx, campaign, campaign.rules.raid_window, self.now)
        return self._new_senders[campaign.id]

    def first_contact(self, campaign_id: int, prefix_group: str) -> None:
        """A sender new to the campaign was added: the counts read before it go up."""
        if campaign_id in self._new_senders:
            recent, baseline = self._new_senders[campaign_id]
            self._new_senders[campaign_id] = (recent + 1, baseline)
        if (campaign_id, prefix_group) in self._prefix_senders:
            self._prefix_senders[(campaign_id, prefix_group)] += 1

    def same_text_senders(self, campaign: Campaign, text_key: str, sender: str) -> int:
        """Distinct senders of this text in the raid window, this one included: read once
        per text and batch (the latest SAME_TEXT_SAMPLE messages), then kept current."""
        key = (campaign.id, text_key)
        if key not in self._same_text:
            self._same_text[key] = {row["sender"] for row in self.tx.execute(
                "SELECT sender FROM inbound_messages WHERE campaign_id = %(campaign)s"
                " AND fingerprint = %(key)s AND received_at > %(since)s"
                " ORDER BY received_at DESC LIMIT %(rows)s",
                {"campaign": campaign.id, "key": text_key,
                 "since": self.now - campaign.rules.raid_window, "rows": SAME_TEXT_SAMPLE},
            ).fetchall()}
        self._same_text[key].add(sender)
        return len(self._same_text[key])

    def prefix_senders(self, campaign: Campaign, prefix_group: str) -> int:
        """First-time senders of this number prefix in the raid window (counted up to
        `prefix_cluster_senders`): read once per prefix and batch, then kept current."""
        key = (campaign.id, prefix_group)
        if key not in self._prefix_senders:
            self._prefix_senders[key] = self.tx.execute(
                "SELECT COUNT(*) AS n FROM (SELECT 1 FROM senders"
                " WHERE campaign_id = %(campaign)s AND prefix_group = %(prefix)s"
                " AND first_seen_at > %(since)s LIMIT %(enough)s) AS cluster",
                {"campaign": campaign.id, "prefix": prefix_group,
                 "since": self.now - campaign.rules.raid_window,
                 "enough": campaign.rules.prefix_cluster_senders},
            ).fetchone()["n"]
        return self._prefix_senders[key]

    def count(self, metric: str, campaign: str, label: str) -> None:
        key = (metric, campaign, label)
        self.counts[key] = self.counts.get(key, 0) + 1

    def write(self) -> None:
        """Write what the batch deferred (executemany: one pipelined round trip each)."""
        tx = self.tx
        if self.verdicts:
            tx.executemany(
                "UPDATE inbound_messages SET verdict = %(verdict)s, reasons = %(reasons)s,"
                " score = %(score)s WHERE id = %(id)s", self.verdicts)
        if self.windows:
            tx.executemany(
                "UPDATE senders SET reply_window_ends_at = %(ends)s"
                " WHERE campaign_id = %(campaign)s AND sender = %(sender)s",
                [{"ends": ends, "campaign": campaign_id, "sender": sender}
                 for (campaign_id, sender), ends in sorted(self.windows.items())])
        if self.replies:
            tx.executemany(
                "INSERT INTO replies (campaign_id, sender, inbound_message_id, to_number,"
                " text, due_at, expires_at, created_at, updated_at)"
                " VALUES (%(campaign)s, %(sender)s, %(inbound)s, %(to)s, %(text)s, %(due)s,"
                " %(expires)s, %(now)s, %(now)s)", self.replies)
        for (metric, campaign, label), amount in sorted(self.counts.items()):
            count(tx, metric, campaign, label, amount)


def record_inbound_batch(tx: Transaction, messages: list[InboundSms], secret_key: str,
                         now: datetime, lexicon: tuple[str, ...] = (),
                         evidence_key: str = "") -> list[InboundOutcome]:
    """Deduplicate, reassemble, record, score and decide inbound SMS in one transaction;
    the outcomes are in the order of `messages`.

    Messages are handled in the order of their campaign and sender (a sender's own
    messages keep their order), so that concurrent batches take sender locks in one order
    and cannot deadlock each other. With `evidence_key`, the number of a sender flagged
    abusive is kept, encrypted, for `relous evidence export`.
    """
    batch = _InboundBatch(tx, now)
    senders = [pseudonym(sms.msisdn, secret_key) for sms in messages]
    order = sorted(range(len(messages)), key=lambda i: (messages[i].to, senders[i]))
    outcomes: dict[int, InboundOutcome] = {}
    for index in order:
        sms = messages[index]
        outcome = _record_inbound(batch, sms, senders[index], secret_key, lexicon,
                                  evidence_key)
        if outcome.verdict != "partial":  # a concatenated SMS counts once, when complete
            batch.count(INBOUND, outcome.campaign or sms.to, outcome.verdict)
        outcomes[index] = outcome
    batch.write()
    return [outcomes[index] for index in range(len(messages))]


def record_inbound(tx: Transaction, sms: InboundSms, secret_key: str, now: datetime,
                   lexicon: tuple[str, ...] = (), evidence_key: str = "") -> InboundOutcome:
    """One inbound SMS: `record_inbound_batch` of one."""
    [outcome] = record_inbound_batch(tx, [sms], secret_key, now, lexicon, evidence_key)
    return outcome


def _record_inbound(batch: _InboundBatch, sms: InboundSms, sender: str, secret_key: str,
                    lexicon: tuple[str, ...], evidence_key: str) -> InboundOutcome:
    tx, now = batch.tx, batch.now
    campaign = batch.campaign(sms.to)
    if campaign is None:
        inbound_id = _insert_inbound(tx, sms.message_id, None, sms, sender, sms.text,
                                     now, "unroutable", "no campaign answers on this number")
        return InboundOutcome("unroutable" if inbound_id else "duplicate", None)

    prefix_group = pseudonym(sms.msisdn[:-PREFIX_HIDDEN_DIGITS], secret_key)
    if sms.concat_ref is None:
        inbound_id = _insert_inbound(tx, sms.message_id, campaign.id, sms, sender, sms.text,
                                     now, "pending", "")
        if inbound_id is None:
            return InboundOutcome("duplicate", campaign.number)
        state = _lock_sender(batch, campaign.id, sender, prefix_group)
        text = sms.text
    else:
        inserted = tx.execute(
            "INSERT INTO inbound_parts (provider_message_id, campaign_id, sender, concat_ref,"
            " part, total, text, received_at)"
            " VALUES (%(id)s, %(campaign)s, %(sender)s, %(ref)s, %(part)s, %(total)s,"
            " %(text)s, %(now)s)"
            " ON CONFLICT (provider_message_id) DO NOTHING",
            {"id": sms.message_id, "campaign": campaign.id, "sender": sender,
             "ref": sms.concat_ref, "part": sms.concat_part, "total": sms.concat_total,
             "text": sms.text, "now": now},
        ).rowcount
        if not inserted:
            return InboundOutcome("duplicate", campaign.number)
        # The sender's row lock serialises its parts: the last part to commit sees them all.
        state = _lock_sender(batch, campaign.id, sender, prefix_group)
        assembled = _assemble(tx, campaign.id, sender, sms, now)
        if assembled is None:
            return InboundOutcome("partial", campaign.number)
        inbound_id, text = assembled

    rules = campaign.rules
    text_key = fingerprint(text)
    window_ends_at = batch.windows.get((campaign.id, sender), state["reply_window_ends_at"])
    listed = state["listed"]
    blocked = state["blocked_until"] is not None and state["blocked_until"] > now
    if listed or blocked:
        sender_stats = SenderStats(0, 0, 0, 0, False, blocked=blocked, listed=listed)
        campaign_stats = CampaignStats(0, 0.0, 0, 0, campaign.storm_mode)
    else:
        sender_stats = _sender_stats(tx, campaign.id, sender, text_key, state, now)
        campaign_stats = _campaign_stats(batch, campaign, text_key, sender, prefix_group)
    verdict = score_message(rules, sender_stats, campaign_stats, lexicon_hits(text, lexicon))
    reasons = list(verdict.reasons)
    decision = None
    if evidence_key and verdict.score >= rules.suppress_score:
        _keep_evidence(tx, campaign.id, sender, sms.msisdn, verdict.reasons, evidence_key,
                       now)
    if verdict.verdict == BLOCK and not blocked and listed != "block":
        tx.execute(
            "UPDATE senders SET blocked_until = %(until)s"
            " WHERE campaign_id = %(campaign)s AND sender = %(sender)s",
            {"until": block_until(rules, now), "campaign": campaign.id, "sender": sender},
        )
    if verdict.verdict == REPLY:
        decision = decide_reply(campaign, window_ends_at, now)
        reasons.extend(decision.reasons)
    final = decision.verdict if decision else verdict.verdict
    batch.verdicts.append({"verdict": final, "reasons": "; ".join(reasons),
                           "score": verdict.score, "id": inbound_id})
    if decision is None or decision.verdict != "reply":
        return InboundOutcome(final, campaign.number)
    return _schedule_reply(batch, campaign, sender, sms.msisdn, inbound_id, decision)


def _keep_evidence(tx: Transaction, campaign_id: int, sender: str, msisdn: str,
                   reasons: tuple[str, ...], evidence_key: str, now: datetime) -> None:
    """Keep the encrypted number of a sender flagged abusive (once per campaign)."""
    from cryptography.fernet import Fernet

    tx.execute(
        "INSERT INTO evidence (campaign_id, sender, encrypted_number, flagged_at, reasons)"
        " VALUES (%(campaign)s, %(sender)s, %(number)s, %(now)s, %(reasons)s)"
        " ON CONFLICT (campaign_id, sender) DO NOTHING",
        {"campaign": campaign_id, "sender": sender,
         "number": Fernet(evidence_key).encrypt(msisdn.encode()).decode(), "now": now,
         "reasons": "; ".join(reasons)},
    )


def evidence_messages(tx: Transaction, campaign_id: int,
                      since: datetime) -> list[dict[str, Any]]:
    """Messages since `since` of the campaign's senders flagged abusive, with the encrypted
    number (decrypted only by `relous evidence export`)."""
    return tx.execute(
        "SELECT e.sender, e.encrypted_number, e.flagged_at, e.reasons AS flagged_for,"
        " m.received_at, m.provider_timestamp, m.text, m.verdict, m.reasons"
        " FROM evidence e JOIN inbound_messages m"
        " ON m.campaign_id = e.campaign_id AND m.sender = e.sender"
        " WHERE e.campaign_id = %(campaign)s AND m.received_at >= %(since)s"
        " ORDER BY m.received_at, m.id",
        {"campaign": campaign_id, "since": since},
    ).fetchall()


def purge(tx: Transaction, now: datetime, retention: timedelta,
          evidence_retention: timedelta) -> dict[str, int]:
    """Apply retention: evidence (encrypted numbers) past its retention is deleted; texts
    and raw numbers older than `retention` are erased, except the messages of senders
    still kept as evidence."""
    message_cutoff, evidence_cutoff = now - retention, now - evidence_retention
    evidence = tx.execute("DELETE FROM evidence WHERE flagged_at < %(cutoff)s",
                          {"cutoff": evidence_cutoff}).rowcount
    texts = tx.execute(
        "UPDATE inbound_messages SET text = '', keyword = '', fingerprint = ''"
        " WHERE received_at < %(cutoff)s AND (text <> '' OR keyword <> '' OR fingerprint <> '')"
        " AND NOT EXISTS (SELECT 1 FROM evidence e WHERE e.campaign_id ="
        " inbound_messages.campaign_id AND e.sender = inbound_messages.sender)",
        {"cutoff": message_cutoff},
    ).rowcount
    parts = tx.execute(
        "UPDATE inbound_parts SET text = '' WHERE received_at < %(cutoff)s AND text <> ''",
        {"cutoff": message_cutoff},
    ).rowcount
    numbers = tx.execute(
        "UPDATE replies SET to_number = NULL,"
        " status = CASE WHEN status = 'pending' THEN 'expired' ELSE status END"
        " WHERE created_at < %(cutoff)s AND to_number IS NOT NULL",
        {"cutoff": message_cutoff},
    ).rowcount
    return {"evidence": evidence, "texts": texts + parts, "numbers": numbers}


def _insert_inbound(tx: Transaction, dedup_key: str, campaign_id: int | None, sms: InboundSms,
                    sender: str, text: str, now: datetime, verdict: str, reasons: str,
                    parts: int = 1) -> int | None:
    row = tx.execute(
        "INSERT INTO inbound_messages (dedup_key, campaign_id, to_number, sender, text,"
        " message_type, keyword, parts, provider_timestamp, received_at, verdict, reasons,"
        " fingerprint)"
        " VALUES (%(key)s, %(campaign)s, %(to)s, %(sender)s, %(text)s, %(type)s, %(keyword)s,"
        " %(parts)s, %(provider_ts)s, %(now)s, %(verdict)s, %(reasons)s, %(fingerprint)s)"
        " ON CONFLICT (dedup_key) DO NOTHING RETURNING id",
        {"key": dedup_key, "campaign": campaign_id, "to": sms.to, "sender": sender,
         "text": text, "type": sms.type, "keyword": sms.keyword, "parts": parts,
         "provider_ts": _provider_timestamp(sms.message_timestamp), "now": now,
         "verdict": verdict, "reasons": reasons, "fingerprint": fingerprint(text)},
    ).fetchone()
    return row["id"] if row else None


def _lock_sender(batch: _InboundBatch, campaign_id: int, sender: str,
                 prefix_group: str) -> dict[str, Any]:
    """Create or touch the sender's row, holding its lock until commit; return its state,
    with `message_count` (1: its first message to the campaign) and the operators' list
    (`listed`: "allow", "block" or None)."""
    state = batch.tx.execute(
        "INSERT INTO senders (campaign_id, sender, first_seen_at, last_seen_at, message_count,"
        " prefix_group)"
        " VALUES (%(campaign)s, %(sender)s, %(now)s, %(now)s, 1, %(prefix)s)"
        " ON CONFLICT (campaign_id, sender) DO UPDATE SET"
        " last_seen_at = excluded.last_seen_at,"
        " message_count = senders.message_count + 1"
        " RETURNING reply_window_ends_at, blocked_until, message_count,"
        " (SELECT list FROM sender_lists WHERE sender_lists.sender = %(sender)s) AS listed",
        {"campaign": campaign_id, "sender": sender, "now": batch.now, "prefix": prefix_group},
    ).fetchone()
    if state["message_count"] == 1:
        batch.first_contact(campaign_id, prefix_group)
    return state


def _sender_stats(tx: Transaction, campaign_id: int, sender: str, text_key: str,
                  state: dict[str, Any], now: datetime) -> SenderStats:
    """The sender's counts, the message being judged included (it is already inserted,
    with its fingerprint)."""
    if state["message_count"] == 1:  # its first message: nothing else to count
        return SenderStats(1, 1, 1, 1 if text_key else 0, first_contact=True)
    row = tx.execute(
        "SELECT"
        " SUM(CASE WHEN received_at > %(minute)s THEN 1 ELSE 0 END) AS per_minute,"
        " SUM(CASE WHEN received_at > %(hour)s THEN 1 ELSE 0 END) AS per_hour,"
        " COUNT(*) AS per_day,"
        " SUM(CASE WHEN fingerprint = %(key)s AND %(key)s <> '' THEN 1 ELSE 0 END) AS same"
        " FROM inbound_messages"
        " WHERE campaign_id = %(campaign)s AND sender = %(sender)s AND received_at > %(day)s",
        {"minute": now - timedelta(minutes=1), "hour": now - timedelta(hours=1),
         "day": now - timedelta(days=1), "key": text_key, "campaign": campaign_id,
         "sender": sender},
    ).fetchone()
    return SenderStats(int(row["per_minute"] or 0), int(row["per_hour"] or 0),
                       int(row["per_day"] or 0), int(row["same"] or 0), first_contact=False)


def _campaign_stats(batch: _InboundBatch, campaign: Campaign, text_key: str, sender: str,
                    prefix_group: str) -> CampaignStats:
    """The raid signals; the counts include the message being judged and its sender."""
    rules = campaign.rules
    recent, baseline = batch.new_sender_rates(campaign)
    stats = CampaignStats(recent, baseline, 0, 0, campaign.storm_mode)
    if not raid_in_progress(rules, stats):
        return stats
    same = batch.same_text_senders(campaign, text_key, sender) if text_key else 0
    return CampaignStats(recent, baseline, same, batch.prefix_senders(campaign, prefix_group),
                         campaign.storm_mode)


# The usual rate of new senders (per raid window, over the last day) changes slowly:
# recomputed at most every BASELINE_TTL of the caller's clock, per process, since counting
# a day of senders for every message would grow with the traffic.
BASELINE_TTL = timedelta(seconds=60)
SAME_TEXT_SAMPLE = 200
_baselines: dict[int, tuple[datetime, float]] = {}


def _new_sender_rates(tx: Transaction, campaign: Campaign, window: timedelta,
                      now: datetime) -> tuple[int, float]:
    """(first-time senders in the raid window, up to the raid threshold; usual number)."""
    cached = _baselines.get(campaign.id)
    if cached is not None and timedelta(0) <= now - cached[0] < BASELINE_TTL:
        baseline = cached[1]
    else:
        earlier = tx.execute(
            "SELECT COUNT(*) AS n FROM senders WHERE campaign_id = %(campaign)s"
            " AND first_seen_at > %(day)s AND first_seen_at <= %(recent)s",
            {"campaign": campaign.id, "day": now - timedelta(days=1), "recent": now - window},
        ).fetchone()["n"]
        baseline = int(earlier) / max(timedelta(days=1) / window - 1, 1)
        _baselines[campaign.id] = (now, baseline)
    threshold = raid_threshold(campaign.rules, baseline)
    # Whether the recent count reaches the threshold is all that matters: stop there.
    recent = tx.execute(
        "SELECT COUNT(*) AS n FROM (SELECT 1 FROM senders WHERE campaign_id = %(campaign)s"
        " AND first_seen_at > %(recent)s LIMIT %(enough)s) AS recent",
        {"campaign": campaign.id, "recent": now - window, "enough": math.ceil(threshold)},
    ).fetchone()["n"]
    return int(recent), baseline


def _assemble(tx: Transaction, campaign_id: int, sender: str, sms: InboundSms,
              now: datetime) -> tuple[int, str] | None:
    """When every part of a concatenated SMS is here, record it once; else None."""
    rows = tx.execute(
        "SELECT provider_message_id, part, text FROM inbound_parts"
        " WHERE campaign_id = %(campaign)s AND sender = %(sender)s AND concat_ref = %(ref)s"
        " AND total = %(total)s AND inbound_message_id IS NULL"
        " ORDER BY part, received_at, provider_message_id",
        {"campaign": campaign_id, "sender": sender, "ref": sms.concat_ref,
         "total": sms.concat_total},
    ).fetchall()
    first_of_each: dict[int, dict[str, Any]] = {}
    for row in rows:
        first_of_each.setdefault(row["part"], row)
    if len(first_of_each) < (sms.concat_total or 0):
        return None
    parts = [first_of_each[number] for number in sorted(first_of_each)]
    text = "".join(part["text"] for part in parts)
    inbound_id = _insert_inbound(
        tx, "concat:" + parts[0]["provider_message_id"], campaign_id, sms, sender, text, now,
        "pending", "", parts=len(parts),
    )
    tx.executemany(
        "UPDATE inbound_parts SET inbound_message_id = %(inbound)s"
        " WHERE provider_message_id = %(id)s",
        [{"inbound": inbound_id, "id": row["provider_message_id"]} for row in rows],
    )
    assert inbound_id is not None  # parts are unique, so their whole is new
    return inbound_id, text


def _schedule_reply(batch: _InboundBatch, campaign: Campaign, sender: str, msisdn: str,
                    inbound_id: int, decision: ReplyDecision) -> InboundOutcome:
    """Open the sender's reply window and queue the reply (both written by the batch)."""
    assert decision.due_at is not None and decision.window_ends_at is not None
    batch.windows[(campaign.id, sender)] = decision.window_ends_at
    expires_at = decision.due_at + timedelta(seconds=campaign.rules.reply_freshness_seconds)
    batch.replies.append({"campaign": campaign.id, "sender": sender, "inbound": inbound_id,
                          "to": msisdn, "text": campaign.reply_text, "due": decision.due_at,
                          "expires": expires_at, "now": batch.now})
    return InboundOutcome("reply", campaign.number, decision.due_at, campaign.id)


def _provider_timestamp(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.strptime(value, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)


# --- replies ------------------------------------------------------------------------------

@dataclass(frozen=True)
class ClaimedReply:
    id: int
    to_number: str
    text: str
    campaign_id: int
    campaign_number: str
    attempts: int
    reserved: Decimal


def campaigns_with_due_replies(tx: Transaction, now: datetime) -> list[int]:
    """Campaigns (not paused) that have replies due now: beat's flush sends for each."""
    rows = tx.execute(
        "SELECT DISTINCT r.campaign_id FROM replies r JOIN campaigns c ON c.id = r.campaign_id"
        " WHERE r.status = 'pending' AND r.due_at <= %(now)s AND NOT c.paused",
        {"now": now},
    ).fetchall()
    return [row["campaign_id"] for row in rows]


def expire_replies(tx: Transaction, now: datetime) -> int:
    """Pending replies past their freshness limit are given up (and forget the number)."""
    rows = tx.execute(
        "UPDATE replies SET status = 'expired', to_number = NULL, updated_at = %(now)s,"
        " error = COALESCE(error, 'not sent within its freshness limit')"
        " WHERE status = 'pending' AND expires_at < %(now)s RETURNING campaign_id",
        {"now": now},
    ).fetchall()
    numbers = _campaign_numbers(tx)
    for row in rows:
        count(tx, REPLIES, numbers[row["campaign_id"]], "expired")
    return len(rows)


def _campaign_numbers(tx: Transaction) -> dict[int, str]:
    rows = tx.execute("SELECT id, number FROM campaigns").fetchall()
    return {row["id"]: row["number"] for row in rows}


def claim_batch(tx: Transaction, campaign_id: int, now: datetime,
                limit: int) -> list[ClaimedReply]:
    """Claim up to `limit` due replies of a campaign, reserving their estimated cost.

    The campaign's budget row is locked first, so concurrent claimers queue on it: what
    one reserves, the next sees. Replies that do not fit wait (pushed to when room can
    appear) until they expire; they are never dropped silently.
    """
    campaign = _campaign_by_id(tx, campaign_id)
    if campaign is None or campaign.paused:
        return []
    budget = _lock_budget(tx, campaign_id, now)
    rows = tx.execute(
        "SELECT id, to_number, text, attempts, expires_at FROM replies"
        " WHERE campaign_id = %(campaign)s AND status = 'pending' AND due_at <= %(now)s"
        " AND (expires_at IS NULL OR expires_at >= %(now)s)"
        " ORDER BY due_at, id LIMIT %(limit)s FOR UPDATE SKIP LOCKED",
        {"campaign": campaign_id, "now": now, "limit": limit},
    ).fetchall()
    if not rows:
        return []
    costs = [estimate_cost(row["text"], campaign.price_per_segment,
                           campaign.observed_price_per_segment) for row in rows]
    fitting = budget.fitting(costs)
    claimed = rows[:fitting]
    tx.executemany(
        "UPDATE replies SET status = 'claimed', claimed_at = %(now)s, updated_at = %(now)s,"
        " attempts = attempts + 1, reserved = %(cost)s, reserved_hour = %(hour)s,"
        " reserved_day = %(day)s WHERE id = %(id)s",
        [{"now": now, "cost": cost, "hour": budget.hour_start, "day": budget.day_start,
          "id": row["id"]} for row, cost in zip(claimed, costs, strict=False)],
    )
    reserved = sum(costs[:fitting], Decimal(0))
    tx.execute(
        "UPDATE budgets SET hour_start = %(hour)s, hour_used = %(hour_used)s,"
        " day_start = %(day)s, day_used = %(day_used)s, total_used = %(total_used)s"
        " WHERE campaign_id = %(campaign)s",
        {"hour": budget.hour_start, "hour_used": budget.hour_used + reserved,
         "day": budget.day_start, "day_used": budget.day_used + reserved,
         "total_used": budget.total_used + reserved, "campaign": campaign_id},
    )
    if fitting < len(rows):
        room_at = budget.next_room(now)
        tx.executemany(
            "UPDATE replies SET due_at = %(due)s, error = 'waiting for budget',"
            " updated_at = %(now)s WHERE id = %(id)s",
            [{"due": min(room_at, row["expires_at"]) if room_at and row["expires_at"]
              else (room_at or row["expires_at"] or now + timedelta(hours=1)),
              "now": now, "id": row["id"]} for row in rows[fitting:]],
        )
    return [ClaimedReply(row["id"], row["to_number"], row["text"], campaign_id,
                         campaign.number, row["attempts"] + 1, cost)
            for row, cost in zip(claimed, costs, strict=False)]


def start_sending(tx: Transaction, reply: ClaimedReply, now: datetime) -> bool:
    """`claimed` -> `sending`, committed just before the provider call: from here on a
    crash means "maybe sent", and the reply is never sent again."""
    return tx.execute(
        "UPDATE replies SET status = 'sending', claimed_at = %(now)s, updated_at = %(now)s"
        " WHERE id = %(id)s AND status = 'claimed'",
        {"now": now, "id": reply.id},
    ).rowcount == 1


def record_send(tx: Transaction, reply: ClaimedReply, result: SendResult, now: datetime,
                retry_at: datetime | None) -> str:
    """Store what the provider said, settle the reservation; return the new status.

    `sent` settles the reservation to the reported price; `retry` and `failed` give it
    back; `unknown` keeps it (the SMS may have been billed). `sent`, `failed` and
    `unknown` erase the raw number. `retry` puts the reply back to `pending` at
    `retry_at` (None: the attempts are used up, `failed`).
    """
    if result.outcome == "retry" and retry_at is not None:
        status = "pending"
        tx.execute(
            "UPDATE replies SET status = 'pending', due_at = %(due)s, claimed_at = NULL,"
            " error = %(error)s, updated_at = %(now)s WHERE id = %(id)s AND status = 'sending'",
            {"due": retry_at, "error": result.error, "now": now, "id": reply.id},
        )
    else:
        status = {"sent": "sent", "unknown": "unknown"}.get(result.outcome, "failed")
        tx.execute(
            "UPDATE replies SET status = %(status)s, to_number = NULL, sent_at = %(sent_at)s,"
            " provider_message_id = %(message_id)s, segments = %(segments)s,"
            " price = %(price)s, error = %(error)s, updated_at = %(now)s"
            " WHERE id = %(id)s AND status = 'sending'",
            {"status": status, "sent_at": now if status == "sent" else None,
             "message_id": result.parts[0].message_id if result.parts else None,
             "segments": result.segments if status == "sent" else None,
             "price": result.price if status == "sent" else None,
             "error": result.error or None, "now": now, "id": reply.id},
        )
    if result.parts:
        tx.executemany(
            "INSERT INTO reply_parts (provider_message_id, reply_id, price, updated_at)"
            " VALUES (%(message_id)s, %(reply)s, %(price)s, %(now)s)"
            " ON CONFLICT (provider_message_id) DO NOTHING",
            [{"message_id": part.message_id, "reply": reply.id, "price": part.price,
              "now": now} for part in result.parts],
        )
    if result.outcome != "sent" or result.error:
        count(tx, PROVIDER_ERRORS, "", result.reason or result.outcome)
    if status in ("sent", "failed"):
        count(tx, REPLIES, reply.campaign_number, status)
    if status == "sent":
        _settle(tx, reply.id, result.price)
        if result.segments:
            _observe_price(tx, reply.campaign_id, result.price / result.segments)
    elif status != "unknown":
        _settle(tx, reply.id, Decimal(0))
    return status


def recover_stale_claims(tx: Transaction, now: datetime) -> tuple[int, int]:
    """Repair what dead workers left: (claimed -> pending, sending -> unknown).

    `claimed` replies were never handed to the provider: they go back to `pending` and
    their reservation is returned. `sending` ones may have gone out: `unknown`, never
    resent, reservation kept (see README, at most once).
    """
    stale_claims = tx.execute(
        "SELECT id FROM replies WHERE status = 'claimed' AND claimed_at < %(stale)s",
        {"stale": now - CLAIMED_STALE_AFTER},
    ).fetchall()
    for row in stale_claims:
        _settle(tx, row["id"], Decimal(0))
    tx.executemany(
        "UPDATE replies SET status = 'pending', claimed_at = NULL, updated_at = %(now)s"
        " WHERE id = %(id)s AND status = 'claimed'",
        [{"now": now, "id": row["id"]} for row in stale_claims],
    )
    lost = tx.execute(
        "UPDATE replies SET status = 'unknown', to_number = NULL, updated_at = %(now)s,"
        " error = 'worker lost while sending; not resent (at most once)'"
        " WHERE status = 'sending' AND claimed_at < %(stale)s",
        {"now": now, "stale": now - SENDING_STALE_AFTER},
    ).rowcount
    return len(stale_claims), lost


def take_send_token(tx: Transaction, name: str, rate: float, now: datetime) -> float:
    """Take one token of the shared send rate; return 0, or the seconds to wait."""
    capacity = max(rate, 1.0)
    tx.execute(
        "INSERT INTO rate_buckets (name, tokens, updated_at) VALUES (%(name)s, %(tokens)s,"
        " %(now)s) ON CONFLICT (name) DO NOTHING",
        {"name": name, "tokens": capacity, "now": now},
    )
    row = tx.execute("SELECT tokens, updated_at FROM rate_buckets WHERE name = %(name)s"
                     " FOR UPDATE", {"name": name}).fetchone()
    available = refill(float(row["tokens"]), row["updated_at"], now, rate, capacity)
    wait = wait_for_token(available, rate)
    if wait == 0:
        available -= 1
    tx.execute("UPDATE rate_buckets SET tokens = %(tokens)s, updated_at = %(now)s"
               " WHERE name = %(name)s", {"tokens": available, "now": now, "name": name})
    return wait


def _campaign_by_id(tx: Transaction, campaign_id: int) -> Campaign | None:
    row = tx.execute(
        f"SELECT {CAMPAIGN_COLUMNS} FROM campaigns WHERE id = %(id)s",  # noqa: S608
        {"id": campaign_id},
    ).fetchone()
    return Campaign.from_row(row) if row else None


def _lock_budget(tx: Transaction, campaign_id: int, now: datetime) -> BudgetState:
    """The campaign's budget, locked until commit, as seen at `now`."""
    tx.execute(
        "INSERT INTO budgets (campaign_id, hour_start, day_start)"
        " VALUES (%(campaign)s, %(hour)s, %(day)s) ON CONFLICT (campaign_id) DO NOTHING",
        {"campaign": campaign_id, "hour": hour_start(now), "day": day_start(now)},
    )
    row = tx.execute("SELECT * FROM budgets WHERE campaign_id = %(campaign)s FOR UPDATE",
                     {"campaign": campaign_id}).fetchone()
    return _budget_state(row).rolled(now)


def _budget_state(row: dict[str, Any]) -> BudgetState:
    def money(value: Any) -> Decimal | None:
        return None if value is None else Decimal(str(value))

    return BudgetState(money(row["hourly_cap"]), money(row["daily_cap"]),
                       money(row["total_cap"]), row["hour_start"],
                       Decimal(str(row["hour_used"])), row["day_start"],
                       Decimal(str(row["day_used"])), Decimal(str(row["total_used"])))


def _settle(tx: Transaction, reply_id: int, actual: Decimal, *, extra: bool = False) -> None:
    """Replace a reply's reservation by what it actually cost (0 when nothing was sent).

    With `extra`, `actual` is a cost learnt later (a part adopted from its receipt): it
    replaces the reservation if the reply still holds one, else it adds to the spend.
    A period that has rolled over since the reservation is left alone: its counter
    already started again from zero.
    """
    row = tx.execute(
        "SELECT campaign_id, reserved, reserved_hour, reserved_day FROM replies"
        " WHERE id = %(id)s", {"id": reply_id},
    ).fetchone()
    if row is None or (row["reserved"] is None and not extra):
        return
    delta = actual - Decimal(str(row["reserved"] or 0))
    tx.execute(
        "UPDATE budgets SET"
        " hour_used = CASE WHEN hour_start = %(hour)s THEN hour_used + %(delta)s"
        " ELSE hour_used END,"
        " day_used = CASE WHEN day_start = %(day)s THEN day_used + %(delta)s ELSE day_used END,"
        " total_used = total_used + %(delta)s, spent = spent + %(actual)s"
        " WHERE campaign_id = %(campaign)s",
        {"hour": row["reserved_hour"], "day": row["reserved_day"], "delta": delta,
         "actual": actual, "campaign": row["campaign_id"]},
    )
    tx.execute("UPDATE replies SET reserved = NULL WHERE id = %(id)s", {"id": reply_id})
    if actual:
        number = tx.execute("SELECT number FROM campaigns WHERE id = %(id)s",
                            {"id": row["campaign_id"]}).fetchone()["number"]
        count(tx, SPEND, number, "", actual)


def _observe_price(tx: Transaction, campaign_id: int, per_segment: Decimal) -> None:
    """Remember the highest reported price per segment, so estimates never fall below it."""
    tx.execute(
        "UPDATE campaigns SET observed_price_per_segment = %(price)s"
        " WHERE id = %(id)s AND observed_price_per_segment < %(price)s",
        {"price": per_segment, "id": campaign_id},
    )


# --- budgets and storm mode (operators) ---------------------------------------------------

def set_budget(tx: Transaction, number: str, now: datetime, **caps: Decimal | None) -> bool:
    """Set some caps (`hourly`, `daily`, `total`; None removes one) of a campaign.

    False when no campaign answers on `number`.
    """
    campaign = find_campaign(tx, number)
    if campaign is None:
        return False
    _lock_budget(tx, campaign.id, now)
    for period, cap in caps.items():
        tx.execute(CAP_UPDATES[period], {"cap": cap, "campaign": campaign.id})
    return True


CAP_UPDATES = {
    period: f"UPDATE budgets SET {period}_cap = %(cap)s WHERE campaign_id = %(campaign)s"  # noqa: S608
    for period in ("hourly", "daily", "total")
}


def budget_of(tx: Transaction, campaign_id: int, now: datetime) -> BudgetState | None:
    row = tx.execute("SELECT * FROM budgets WHERE campaign_id = %(campaign)s",
                     {"campaign": campaign_id}).fetchone()
    return _budget_state(row).rolled(now) if row else None


def evaluate_storm_mode(tx: Transaction, now: datetime) -> list[tuple[str, bool, int]]:
    """Switch campaigns in and out of storm mode from their last minute of inbound.

    Returns (campaign, storm mode, messages in the last minute) for the ones that changed.
    """
    changed = []
    for campaign in list_campaigns(tx):
        per_minute = tx.execute(
            "SELECT COUNT(*) AS n FROM inbound_messages WHERE campaign_id = %(campaign)s"
            " AND received_at > %(since)s",
            {"campaign": campaign.id, "since": now - timedelta(minutes=1)},
        ).fetchone()["n"]
        storm = next_storm_mode(campaign.rules, campaign.storm_mode, per_minute)
        if storm != campaign.storm_mode:
            tx.execute(
                "UPDATE campaigns SET storm_mode = %(storm)s, storm_changed_at = %(now)s"
                " WHERE id = %(id)s", {"storm": storm, "now": now, "id": campaign.id},
            )
            changed.append((campaign.number, storm, per_minute))
    return changed


# --- delivery receipts --------------------------------------------------------------------

def apply_receipt(tx: Transaction, receipt: DeliveryReceipt, now: datetime) -> str:
    """Record a receipt once and fold it into its reply; return what happened."""
    part = tx.execute(
        "SELECT reply_id FROM reply_parts WHERE provider_message_id = %(id)s",
        {"id": receipt.message_id},
    ).fetchone()
    reply_id = part["reply_id"] if part else _reply_from_client_ref(tx, receipt, now)
    inserted = tx.execute(
        "INSERT INTO delivery_receipts (provider_message_id, status, err_code, price,"
        " client_ref, reply_id, received_at)"
        " VALUES (%(id)s, %(status)s, %(err)s, %(price)s, %(ref)s, %(reply)s, %(now)s)"
        " ON CONFLICT (provider_message_id, status, err_code) DO NOTHING",
        {"id": receipt.message_id, "status": receipt.status, "err": receipt.err_code,
         "price": Decimal(receipt.price) if receipt.price else None,
         "ref": receipt.client_ref, "reply": reply_id, "now": now},
    ).rowcount
    if not inserted:
        return "duplicate"
    if reply_id is None:
        return "unmatched"
    tx.execute(
        "UPDATE reply_parts SET status = %(status)s, err_code = %(err)s,"
        " price = COALESCE(%(price)s, price), updated_at = %(now)s"
        " WHERE provider_message_id = %(id)s",
        {"status": receipt.status, "err": receipt.err_code,
         "price": Decimal(receipt.price) if receipt.price else None, "now": now,
         "id": receipt.message_id},
    )
    return _settle_reply_status(tx, reply_id, now)


def _reply_from_client_ref(tx: Transaction, receipt: DeliveryReceipt,
                           now: datetime) -> int | None:
    """A receipt for a part we never recorded (worker lost mid-send): adopt it by client-ref."""
    if not (receipt.client_ref and receipt.client_ref.isdigit()):
        return None
    row = tx.execute("SELECT id FROM replies WHERE id = %(id)s",
                     {"id": int(receipt.client_ref)}).fetchone()
    if row is None:
        return None
    price = Decimal(receipt.price) if receipt.price else None
    adopted = tx.execute(
        "INSERT INTO reply_parts (provider_message_id, reply_id, price, updated_at)"
        " VALUES (%(message_id)s, %(reply)s, %(price)s, %(now)s)"
        " ON CONFLICT (provider_message_id) DO NOTHING",
        {"message_id": receipt.message_id, "reply": row["id"], "price": price, "now": now},
    ).rowcount
    if adopted and price:
        # It was billed: its price is spend (an `unknown` reply still held its reservation).
        _settle(tx, row["id"], price, extra=True)
    return row["id"]


def _settle_reply_status(tx: Transaction, reply_id: int, now: datetime) -> str:
    before = tx.execute(
        "SELECT r.status, c.number FROM replies r JOIN campaigns c ON c.id = r.campaign_id"
        " WHERE r.id = %(id)s", {"id": reply_id},
    ).fetchone()
    parts = tx.execute(
        "SELECT status, price FROM reply_parts WHERE reply_id = %(id)s", {"id": reply_id}
    ).fetchall()
    statuses = {part["status"] for part in parts}
    if statuses & FAILED_RECEIPT_STATUSES:
        status = "failed"
    elif statuses == {"delivered"}:
        status = "delivered"
    else:
        status = "sent"
    final_price = sum((Decimal(str(part["price"])) for part in parts if part["price"] is not None),
                      Decimal(0))
    tx.execute(
        "UPDATE replies SET status = %(status)s, final_price = %(price)s, updated_at = %(now)s,"
        " to_number = NULL"
        " WHERE id = %(id)s AND status IN ('sent', 'delivered', 'unknown')",
        {"status": status, "price": final_price, "now": now, "id": reply_id},
    )
    if status != before["status"] and status in ("delivered", "failed"):
        count(tx, REPLIES, before["number"], status)
    return status
