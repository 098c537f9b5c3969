"""Delivery receipts: stored once per (message id, status, error code), folded into the
reply they belong to (status, error code, final price)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from shared.metrics import REPLIES
from shared.rules.messages import DeliveryReceipt, SentPart
from shared.store.budgets import settle
from shared.store.counters import count
from shared.store.db import Transaction
from shared.store.replies import add_reply_parts

FAILED_RECEIPT_STATUSES = {"expired", "failed", "rejected", "undelivered"}


def apply_receipt(tx: Transaction, receipt: DeliveryReceipt, now: datetime) -> str:
    """Record a receipt once and fold it into its reply; return what happened."""
    part = tx.execute(
        "SELECT reply_id FROM reply_parts WHERE provider_message_id = %(id)s",
        {"id": receipt.message_id},
    ).fetchone()
    reply_id = part["reply_id"] if part else _reply_from_client_ref(tx, receipt, now)
    price = Decimal(receipt.price) if receipt.price else None
    inserted = tx.execute(
        "INSERT INTO delivery_receipts (provider_message_id, status, err_code, price,"
        " client_ref, reply_id, received_at)"
        " VALUES (%(id)s, %(status)s, %(err)s, %(price)s, %(ref)s, %(reply)s, %(now)s)"
        " ON CONFLICT (provider_message_id, status, err_code) DO NOTHING",
        {"id": receipt.message_id, "status": receipt.status, "err": receipt.err_code,
         "price": price, "ref": receipt.client_ref, "reply": reply_id, "now": now},
    ).rowcount
    if not inserted:
        return "duplicate"
    if reply_id is None:
        return "unmatched"
    tx.execute(
        "UPDATE reply_parts SET status = %(status)s, err_code = %(err)s,"
        " price = COALESCE(%(price)s, price), updated_at = %(now)s"
        " WHERE provider_message_id = %(id)s",
        {"status": receipt.status, "err": receipt.err_code, "price": price, "now": now,
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
    adopted = add_reply_parts(tx, row["id"], [SentPart(receipt.message_id, price)], now)
    if adopted and price:
        # It was billed: its price is spend (an `unknown` reply still held its reservation).
        settle(tx, row["id"], price, extra=True)
    return int(row["id"])


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
