"""Storage of the pipeline: every statement that reads or writes its tables.

Functions take an open transaction (`shared.db.Transaction`) and plain values. Idempotency
is decided by the database: unique keys (`ON CONFLICT DO NOTHING`) and conditional
updates whose row count says whether this process won.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from shared.db import Transaction
from shared.phones import pseudonym
from shared.providers import SendResult
from shared.replies import Campaign, ReplyDecision, decide_reply
from shared.webhooks import DeliveryReceipt, InboundSms

# A reply claimed for sending longer ago than this was lost with its worker (the HTTP call
# times out after 10 s): it is marked `unknown`, never resent (see README, at-most-once).
SENDING_STALE_AFTER = timedelta(minutes=10)
# A due reply handed to the broker is not handed again before this, unless still pending.
REDISPATCH_AFTER = timedelta(minutes=2)
FAILED_RECEIPT_STATUSES = {"expired", "failed", "rejected", "undelivered"}


@dataclass(frozen=True)
class InboundOutcome:
    """What happened to one inbound SMS; `reply_id` is set when a reply was scheduled."""

    verdict: str
    campaign: str | None
    reply_id: int | None = None
    due_at: datetime | None = None


# --- campaigns ----------------------------------------------------------------------------

CAMPAIGN_COLUMNS = (
    "id, number, reply_text, reply_delay_seconds, reply_window_seconds, price_per_segment,"
    " allow_multipart, paused"
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


# --- inbound ------------------------------------------------------------------------------

def record_inbound(tx: Transaction, sms: InboundSms, secret_key: str,
                   now: datetime) -> InboundOutcome:
    """Deduplicate, reassemble, record and decide one inbound SMS (one transaction)."""
    campaign = find_campaign(tx, sms.to)
    sender = pseudonym(sms.msisdn, secret_key)
    if campaign is None:
        inbound_id = _insert_inbound(tx, sms.message_id, None, sms, sender, sms.text,
                                     now, "unroutable", "no campaign answers on this number")
        return InboundOutcome("unroutable" if inbound_id else "duplicate", None)

    if sms.concat_ref is None:
        inbound_id = _insert_inbound(tx, sms.message_id, campaign.id, sms, sender, sms.text,
                                     now, "pending", "")
        if inbound_id is None:
            return InboundOutcome("duplicate", campaign.number)
        window_ends_at = _lock_sender(tx, campaign.id, sender, now)
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
        window_ends_at = _lock_sender(tx, campaign.id, sender, now)
        inbound_id = _assemble(tx, campaign.id, sender, sms, now)
        if inbound_id is None:
            return InboundOutcome("partial", campaign.number)

    decision = decide_reply(campaign, window_ends_at, now)
    return _apply_decision(tx, campaign, sender, sms.msisdn, inbound_id, decision, now)


def _insert_inbound(tx: Transaction, dedup_key: str, campaign_id: int | None, sms: InboundSms,
                    sender: str, text: str, now: datetime, verdict: str, reasons: str,
                    parts: int = 1) -> int | None:
    row = tx.execute(
        "INSERT INTO inbound_messages (dedup_key, campaign_id, to_number, sender, text,"
        " message_type, keyword, parts, provider_timestamp, received_at, verdict, reasons)"
        " VALUES (%(key)s, %(campaign)s, %(to)s, %(sender)s, %(text)s, %(type)s, %(keyword)s,"
        " %(parts)s, %(provider_ts)s, %(now)s, %(verdict)s, %(reasons)s)"
        " ON CONFLICT (dedup_key) DO NOTHING RETURNING id",
        {"key": dedup_key, "campaign": campaign_id, "to": sms.to, "sender": sender,
         "text": text, "type": sms.type, "keyword": sms.keyword, "parts": parts,
         "provider_ts": _provider_timestamp(sms.message_timestamp), "now": now,
         "verdict": verdict, "reasons": reasons},
    ).fetchone()
    return row["id"] if row else None


def _lock_sender(tx: Transaction, campaign_id: int, sender: str,
                 now: datetime) -> datetime | None:
    """Create or touch the sender's row, holding its lock until commit; its reply window."""
    row = tx.execute(
        "INSERT INTO senders (campaign_id, sender, first_seen_at, last_seen_at, message_count)"
        " VALUES (%(campaign)s, %(sender)s, %(now)s, %(now)s, 1)"
        " ON CONFLICT (campaign_id, sender) DO UPDATE SET"
        " last_seen_at = excluded.last_seen_at,"
        " message_count = senders.message_count + 1"
        " RETURNING reply_window_ends_at",
        {"campaign": campaign_id, "sender": sender, "now": now},
    ).fetchone()
    return row["reply_window_ends_at"]


def _assemble(tx: Transaction, campaign_id: int, sender: str, sms: InboundSms,
              now: datetime) -> int | None:
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
    return inbound_id


def _apply_decision(tx: Transaction, campaign: Campaign, sender: str, msisdn: str,
                    inbound_id: int, decision: ReplyDecision, now: datetime) -> InboundOutcome:
    tx.execute(
        "UPDATE inbound_messages SET verdict = %(verdict)s, reasons = %(reasons)s"
        " WHERE id = %(id)s",
        {"verdict": decision.verdict, "reasons": "; ".join(decision.reasons), "id": inbound_id},
    )
    if decision.verdict != "reply":
        return InboundOutcome(decision.verdict, campaign.number)
    tx.execute(
        "UPDATE senders SET reply_window_ends_at = %(ends)s"
        " WHERE campaign_id = %(campaign)s AND sender = %(sender)s",
        {"ends": decision.window_ends_at, "campaign": campaign.id, "sender": sender},
    )
    row = tx.execute(
        "INSERT INTO replies (campaign_id, sender, inbound_message_id, to_number, text,"
        " due_at, created_at, updated_at)"
        " VALUES (%(campaign)s, %(sender)s, %(inbound)s, %(to)s, %(text)s, %(due)s,"
        " %(now)s, %(now)s) RETURNING id",
        {"campaign": campaign.id, "sender": sender, "inbound": inbound_id, "to": msisdn,
         "text": campaign.reply_text, "due": decision.due_at, "now": now},
    ).fetchone()
    return InboundOutcome("reply", campaign.number, row["id"], decision.due_at)


def _provider_timestamp(value: str | None) -> datetime | None:
    if not value:
        return None
    from datetime import UTC

    return datetime.strptime(value, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)


# --- replies ------------------------------------------------------------------------------

@dataclass(frozen=True)
class ClaimedReply:
    id: int
    to_number: str
    text: str
    campaign_number: str
    attempts: int


def dispatch_due_replies(tx: Transaction, now: datetime, limit: int = 500) -> list[int]:
    """Mark due replies as handed to the broker and return their ids (beat's flush)."""
    rows = tx.execute(
        "UPDATE replies SET dispatched_at = %(now)s WHERE id IN ("
        " SELECT r.id FROM replies r JOIN campaigns c ON c.id = r.campaign_id"
        " WHERE r.status = 'pending' AND r.due_at <= %(now)s AND NOT c.paused"
        " AND (r.dispatched_at IS NULL OR r.dispatched_at < %(redispatch)s)"
        " ORDER BY r.due_at LIMIT %(limit)s FOR UPDATE OF r SKIP LOCKED)"
        " RETURNING id",
        {"now": now, "redispatch": now - REDISPATCH_AFTER, "limit": limit},
    ).fetchall()
    return [row["id"] for row in rows]


def claim_reply(tx: Transaction, reply_id: int, now: datetime) -> ClaimedReply | None:
    """Move one due reply from `pending` to `sending`; None when another worker has it."""
    row = tx.execute(
        "UPDATE replies SET status = 'sending', claimed_at = %(now)s, updated_at = %(now)s,"
        " attempts = attempts + 1"
        " WHERE id = %(id)s AND status = 'pending' AND due_at <= %(now)s"
        " AND campaign_id IN (SELECT id FROM campaigns WHERE NOT paused)"
        " RETURNING id, to_number, text, campaign_id, attempts",
        {"id": reply_id, "now": now},
    ).fetchone()
    if row is None:
        return None
    number = tx.execute("SELECT number FROM campaigns WHERE id = %(id)s",
                        {"id": row["campaign_id"]}).fetchone()["number"]
    return ClaimedReply(row["id"], row["to_number"], row["text"], number, row["attempts"])


def record_send(tx: Transaction, reply: ClaimedReply, result: SendResult, now: datetime,
                retry_at: datetime | None) -> str:
    """Store what the provider said; return the reply's new status.

    `sent`, `failed` and `unknown` erase the raw number: it is never needed again.
    `retry` puts the reply back to `pending` at `retry_at` (None: give up, `failed`).
    """
    if result.outcome == "retry" and retry_at is not None:
        tx.execute(
            "UPDATE replies SET status = 'pending', due_at = %(due)s, claimed_at = NULL,"
            " dispatched_at = NULL, error = %(error)s, updated_at = %(now)s"
            " WHERE id = %(id)s AND status = 'sending'",
            {"due": retry_at, "error": result.error, "now": now, "id": reply.id},
        )
        return "pending"
    status = {"sent": "sent", "unknown": "unknown"}.get(result.outcome, "failed")
    tx.execute(
        "UPDATE replies SET status = %(status)s, to_number = NULL, sent_at = %(sent_at)s,"
        " provider_message_id = %(message_id)s, segments = %(segments)s, price = %(price)s,"
        " error = %(error)s, updated_at = %(now)s"
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
    return status


def recover_stale_sending(tx: Transaction, now: datetime) -> int:
    """Replies whose worker died mid-send become `unknown`: at most once, never resent."""
    return tx.execute(
        "UPDATE replies SET status = 'unknown', to_number = NULL, updated_at = %(now)s,"
        " error = 'worker lost while sending; not resent (at most once)'"
        " WHERE status = 'sending' AND claimed_at < %(stale)s",
        {"now": now, "stale": now - SENDING_STALE_AFTER},
    ).rowcount


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
    tx.execute(
        "INSERT INTO reply_parts (provider_message_id, reply_id, price, updated_at)"
        " VALUES (%(message_id)s, %(reply)s, %(price)s, %(now)s)"
        " ON CONFLICT (provider_message_id) DO NOTHING",
        {"message_id": receipt.message_id, "reply": row["id"],
         "price": Decimal(receipt.price) if receipt.price else None, "now": now},
    )
    return row["id"]


def _settle_reply_status(tx: Transaction, reply_id: int, now: datetime) -> str:
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
    return status
