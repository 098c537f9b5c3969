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

from shared.metrics import PRICE_OVERRUNS, PROVIDER_ERRORS, REPLIES
from shared.rules.budget import estimate_cost
from shared.rules.messages import SendResult, SentPart
from shared.rules.ratelimit import refill, wait_for_token
from shared.store.budgets import (
    CHARGE_COLUMNS,
    apply_charges,
    lock_budget,
    persist_roll,
    record_spend,
)
from shared.store.campaigns import (
    campaign_by_id,
    campaign_numbers,
    global_halt,
    halt_everything,
    halt_sending,
    observe_price,
)
from shared.store.counters import count
from shared.store.db import Transaction

# A reply in `sending` for longer than this was lost with its worker (the HTTP call times
# out after 10 s): it is marked `unknown`, never resent (see README, at most once).
SENDING_STALE_AFTER = timedelta(minutes=10)
# A reply `claimed` (reserved, not yet handed to the provider) for longer than this was
# left by a dead worker: it goes back to `pending`.
CLAIMED_STALE_AFTER = timedelta(minutes=2)
TOTAL_CAP_RECHECK = timedelta(minutes=5)
# Provider answers that stop the whole account (Vonage statuses 8 and 9): the kill switch
# trips itself, and a person lifts it (`relous sending start`).
ACCOUNT_STOPPED = {"status_8": "partner account barred (status 8)",
                   "status_9": "partner quota exceeded (status 9)"}


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
    `expires`, `window` (the end of the reply window it opened), `now`) in one round trip."""
    if replies:
        tx.executemany(
            "INSERT INTO replies (campaign_id, sender, inbound_message_id, to_number,"
            " text, due_at, expires_at, window_ends_at, created_at, updated_at)"
            " VALUES (%(campaign)s, %(sender)s, %(inbound)s, %(to)s, %(text)s, %(due)s,"
            " %(expires)s, %(window)s, %(now)s, %(now)s)", replies)


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
    rows = move(tx, "status = 'pending' AND expires_at < %(now)s", "expired", "0",
                {"now": now, "error": "not sent within its freshness limit"},
                ", to_number = NULL")
    reopen_windows(tx, rows)
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
    if campaign is None or campaign.paused or campaign.sending_halted or global_halt(tx):
        return []
    budget = lock_budget(tx, campaign_id, now, campaign.time_zone)
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
    persist_roll(tx, campaign_id, budget)
    claimed = []
    for row, cost in zip(rows[:fitting], costs, strict=False):
        if move(tx, "id = %(id)s AND status = 'pending'", "claimed", "%(cost)s",
                {"id": row["id"], "cost": cost, "hour": budget.hour_start,
                 "day": budget.day_start, "now": now},
                ", claimed_at = %(now)s, attempts = attempts + 1, reserved = %(cost)s,"
                " reserved_hour = %(hour)s, reserved_day = %(day)s"):
            claimed.append((row, cost))
    if fitting < len(rows):
        # The next hour or day brings room; when only the total cap blocks, an operator
        # may raise it at any time: look again every few minutes until the reply expires.
        room_at = budget.next_room(now, campaign.time_zone) or now + TOTAL_CAP_RECHECK
        tx.executemany(
            "UPDATE replies SET due_at = %(due)s, error = 'waiting for budget',"
            " updated_at = %(now)s WHERE id = %(id)s",
            [{"due": min(room_at, row["expires_at"]) if row["expires_at"] else room_at,
              "now": now, "id": row["id"]} for row in rows[fitting:]],
        )
    return [ClaimedReply(row["id"], row["to_number"], row["text"], campaign_id,
                         campaign.number, row["attempts"] + 1, cost) for row, cost in claimed]


def start_sending(tx: Transaction, reply: ClaimedReply, now: datetime) -> bool:
    """`claimed` -> `sending`, committed just before the provider call: from here on a
    crash means "maybe sent", and the reply is never sent again. Refused (False) when the
    campaign was paused or its sending halted, or the kill switch turned on, since the
    claim: the claim is then returned (`pending`, charge given back), so a stop takes
    effect within the batch a worker already claimed."""
    started = tx.execute(
        "UPDATE replies SET status = 'sending', claimed_at = %(now)s, updated_at = %(now)s"
        " WHERE id = %(id)s AND status = 'claimed' AND NOT EXISTS (SELECT 1 FROM campaigns c"
        " WHERE c.id = replies.campaign_id AND (c.paused OR c.sending_halted_reason IS NOT"
        " NULL)) AND NOT EXISTS (SELECT 1 FROM sending_halts)",
        {"now": now, "id": reply.id},
    ).rowcount == 1
    if not started:
        move(tx, "id = %(id)s AND status = 'claimed'", "pending", "0",
             {"id": reply.id, "now": now}, ", claimed_at = NULL")
    return started


def record_send(tx: Transaction, reply: ClaimedReply, result: SendResult, now: datetime,
                retry_at: datetime | None) -> str:
    """Store what the provider said and settle the reply's charge; return the new status.

    `sent` charges the reported price (the estimate where no price came back); `retry`
    and `failed` charge nothing; `unknown` keeps the estimate (it may have been billed).
    `sent`, `failed` and `unknown` erase the raw number. `retry` puts the reply back to
    `pending` at `retry_at` (None: the attempts are used up, `failed`). A price above the
    reservation is charged in full, counted, and halts the campaign's sending.
    """
    params = {"id": reply.id, "now": now, "error": result.error or None}
    if result.outcome == "retry" and retry_at is not None:
        status = "pending"
        move(tx, SENDING, status, "0", params | {"due": retry_at},
             ", due_at = %(due)s, claimed_at = NULL")
    elif result.outcome == "sent":
        status = "sent"
        charge = result.price if result.price_known else max(result.price, reply.reserved)
        sent = params | {"charge": charge, "message_id": result.parts[0].message_id,
                         "segments": result.segments, "price": result.price}
        columns = (", to_number = NULL, sent_at = %(now)s, provider_message_id ="
                   " %(message_id)s, segments = %(segments)s, price = %(price)s")
        # A late answer for a reply recovery already gave up on (`unknown`) settles it too.
        if move(tx, SENDING, status, "%(charge)s", sent, columns) or move(
                tx, "id = %(id)s AND status = 'unknown'", status, "%(charge)s", sent, columns):
            record_spend(tx, reply.campaign_id, charge, now)
            if result.segments and result.price_known:
                observe_price(tx, reply.campaign_id, result.price / result.segments)
            if charge > reply.reserved:
                count(tx, PRICE_OVERRUNS, reply.campaign_number, "")
                halt_sending(tx, reply.campaign_id, f"price overrun: reply {reply.id} cost "
                             f"{charge} EUR, {reply.reserved} EUR reserved", now)
    else:
        status = "unknown" if result.outcome == "unknown" else "failed"
        moved = move(tx, SENDING, status, "charged" if status == "unknown" else "0", params,
                     ", to_number = NULL")
        if status == "failed":  # refused, never sent: the sender may be answered later
            reopen_windows(tx, moved)
    add_reply_parts(tx, reply.id, result.parts, now)
    if result.reason in ACCOUNT_STOPPED:  # every campaign shares the account: stop them all
        halt_everything(tx, f"the provider answered {ACCOUNT_STOPPED[result.reason]}"
                        f" (reply {reply.id})", now)
    if result.outcome != "sent" or result.error:
        count(tx, PROVIDER_ERRORS, "", result.reason or result.outcome)
    if status in ("sent", "failed"):
        count(tx, REPLIES, reply.campaign_number, status)
    return status


SENDING = "id = %(id)s AND status = 'sending'"


def move(tx: Transaction, where: str, status: str, charged: str, params: dict[str, Any],
         columns: str = "") -> list[dict[str, Any]]:
    """Change the state of the replies matching `where` and their charge, in one statement,
    and move the budgets by what it returns (shared/store/budgets.py). `where`, `charged`
    (an SQL expression: a parameter, `0`, or `charged` to keep it) and `columns` are
    constants of the store. The rows moved; none when another process got there first."""
    rows: list[dict[str, Any]] = tx.execute(
        f"UPDATE replies SET status = %(new_status)s, charge_delta = {charged} - charged,"  # noqa: S608
        f" charged = {charged}, updated_at = %(now)s, error = COALESCE(%(error)s, error)"
        f"{columns} WHERE {where} RETURNING {CHARGE_COLUMNS}",
        {"error": None, **params, "new_status": status},
    ).fetchall()
    apply_charges(tx, rows)
    return rows


def reopen_windows(tx: Transaction, rows: list[dict[str, Any]]) -> None:
    """Replies given up before sending (rows RETURNING `CHARGE_COLUMNS`) reopen the reply
    window each opened, unless a later reply has opened another since: only a reply that
    went out, or may have, uses up its sender's window."""
    for row in rows:
        if row["window_ends_at"] is not None:
            tx.execute(
                "UPDATE senders SET reply_window_ends_at = NULL"
                " WHERE campaign_id = %(campaign)s AND sender = %(sender)s"
                " AND reply_window_ends_at = %(ends)s",
                {"campaign": row["campaign_id"], "sender": row["sender"],
                 "ends": row["window_ends_at"]})


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
    their charge is returned. `sending` ones may have gone out: `unknown`, never resent,
    charge kept (see README, at most once). Each is one conditional statement: a recovery
    running twice at once, or racing a live worker, moves each reply and its money once.
    """
    returned = move(tx, "status = 'claimed' AND claimed_at < %(stale)s", "pending", "0",
                    {"now": now, "stale": now - CLAIMED_STALE_AFTER}, ", claimed_at = NULL")
    lost = move(tx, "status = 'sending' AND claimed_at < %(stale)s", "unknown", "charged",
                {"now": now, "stale": now - SENDING_STALE_AFTER,
                 "error": "worker lost while sending; not resent (at most once)"},
                ", to_number = NULL")
    return len(returned), len(lost)


def take_send_token(tx: Transaction, name: str, rate: float, now: datetime) -> float:
    """Take one token of the shared send rate; return 0, or the seconds to wait. On
    PostgreSQL the bucket runs on the database's clock (workers' clocks drift apart);
    `now` serves the embedded default, one machine."""
    capacity = max(rate, 1.0)
    clock = "clock_timestamp()" if tx.dialect == "postgresql" else "%(now)s"
    tx.execute(
        "INSERT INTO rate_buckets (name, tokens, updated_at) VALUES (%(name)s, %(tokens)s,"  # noqa: S608
        f" {clock}) ON CONFLICT (name) DO NOTHING",
        {"name": name, "tokens": capacity, "now": now},
    )
    row = tx.execute(f"SELECT tokens, updated_at, {clock} AS now FROM rate_buckets"  # noqa: S608
                     " WHERE name = %(name)s FOR UPDATE", {"name": name, "now": now}).fetchone()
    at = row["now"] if tx.dialect == "postgresql" else now
    available = refill(float(row["tokens"]), row["updated_at"], at, rate, capacity)
    wait = wait_for_token(available, rate)
    if wait == 0:
        available -= 1
    tx.execute("UPDATE rate_buckets SET tokens = %(tokens)s, updated_at = %(at)s"
               " WHERE name = %(name)s", {"tokens": available, "at": at, "name": name})
    return wait
