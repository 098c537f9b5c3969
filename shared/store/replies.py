"""Replies: queued by the inbound use case, claimed with a budget reservation, sent at
most once (`claimed` -> `sending` -> `sent`/`failed`/`unknown`), repaired after crashes.

See the README, "At most once", for what each status promises.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from shared.metrics import PROVIDER_ERRORS, REPLIES
from shared.rules.budget import estimate_cost
from shared.rules.messages import SendResult, SentPart
from shared.rules.ratelimit import refill, wait_for_token
from shared.store.budgets import lock_budget, reserve, settle
from shared.store.campaigns import campaign_by_id, campaign_numbers, observe_price
from shared.store.counters import count
from shared.store.db import Transaction

# A reply in `sending` for longer than this was lost with its worker (the HTTP call times
# out after 10 s): it is marked `unknown`, never resent (see README, at most once).
SENDING_STALE_AFTER = timedelta(minutes=10)
# A reply `claimed` (reserved, not yet handed to the provider) for longer than this was
# left by a dead worker: it goes back to `pending`.
CLAIMED_STALE_AFTER = timedelta(minutes=2)


@dataclass(frozen=True)
class ClaimedReply:
    id: int
    to_number: str
    text: str
    campaign_id: int
    campaign_number: str
    attempts: int
    reserved: Decimal


def queue_replies(tx: Transaction, replies: Sequence[dict[str, Any]]) -> None:
    """Insert pending replies (`campaign`, `sender`, `inbound`, `to`, `text`, `due`,
    `expires`, `now`) in one round trip."""
    if replies:
        tx.executemany(
            "INSERT INTO replies (campaign_id, sender, inbound_message_id, to_number,"
            " text, due_at, expires_at, created_at, updated_at)"
            " VALUES (%(campaign)s, %(sender)s, %(inbound)s, %(to)s, %(text)s, %(due)s,"
            " %(expires)s, %(now)s, %(now)s)", replies)


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
    numbers = campaign_numbers(tx)
    for row in rows:
        count(tx, REPLIES, numbers[row["campaign_id"]], "expired")
    return len(rows)


def claim_batch(tx: Transaction, campaign_id: int, now: datetime,
                limit: int) -> list[ClaimedReply]:
    """Claim up to `limit` due replies of a campaign, reserving their estimated cost.

    The campaign's budget row is locked first, so concurrent claimers queue on it: what
    one reserves, the next sees. Replies that do not fit wait (pushed to when room can
    appear) until they expire; they are never dropped silently.
    """
    campaign = campaign_by_id(tx, campaign_id)
    if campaign is None or campaign.paused:
        return []
    budget = lock_budget(tx, campaign_id, now)
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
    reserve(tx, campaign_id, budget, sum(costs[:fitting], Decimal(0)))
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
    add_reply_parts(tx, reply.id, result.parts, now)
    if result.outcome != "sent" or result.error:
        count(tx, PROVIDER_ERRORS, "", result.reason or result.outcome)
    if status in ("sent", "failed"):
        count(tx, REPLIES, reply.campaign_number, status)
    if status == "sent":
        settle(tx, reply.id, result.price)
        if result.segments:
            observe_price(tx, reply.campaign_id, result.price / result.segments)
    elif status != "unknown":
        settle(tx, reply.id, Decimal(0))
    return status


def add_reply_parts(tx: Transaction, reply_id: int, parts: Sequence[SentPart],
                    now: datetime) -> int:
    """Record the provider's message ids of a reply's parts; how many were new."""
    if not parts:
        return 0
    rows = [{"message_id": part.message_id, "reply": reply_id, "price": part.price,
             "now": now} for part in parts]
    added = 0
    for row in rows:
        added += tx.execute(
            "INSERT INTO reply_parts (provider_message_id, reply_id, price, updated_at)"
            " VALUES (%(message_id)s, %(reply)s, %(price)s, %(now)s)"
            " ON CONFLICT (provider_message_id) DO NOTHING", row).rowcount
    return added


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
        settle(tx, row["id"], Decimal(0))
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
