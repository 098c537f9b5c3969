"""Delivery receipts: stored once per (message id, status, error code), folded into the
reply they belong to (status, error code, final price), whose charge then rises to the
price the provider reported, once, and never falls (shared/store/budgets.py): the ledger
errs on the side of the caps, so `spent` may exceed what was billed, never fall short."""

from __future__ import annotations

import logging
from datetime import datetime
from decimal import Decimal

from shared.metrics import PRICE_OVERRUNS, PROVIDER_ERRORS, REPLIES
from shared.rules.messages import DeliveryReceipt, SentPart
from shared.store.budgets import record_spend
from shared.store.campaigns import halt_sending, observe_price
from shared.store.counters import count
from shared.store.db import Transaction
from shared.store.replies import add_reply_parts, move

log = logging.getLogger(__name__)

FAILED_RECEIPT_STATUSES = {"expired", "failed", "rejected", "undelivered"}
# Only a reply that may have gone out without our record adopts a part by client-ref.
ADOPTING_STATUSES = ("sending", "unknown")
# A reported price above this multiple of what was reserved is not believed: recorded on
# the part and flagged (provider error `implausible_price`, a log), not charged.
PLAUSIBLE_PRICE_MULTIPLE = 5


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
    return _fold(tx, reply_id, now)


def _reply_from_client_ref(tx: Transaction, receipt: DeliveryReceipt,
                           now: datetime) -> int | None:
    """A receipt for a part we never recorded (worker lost mid-send): adopt it by
    client-ref, but only for a reply that may have gone out without our record."""
    if not (receipt.client_ref and receipt.client_ref.isdigit()):
        return None
    # The reply is locked first, then its parts read again: two receipts adopting parts of
    # one reply at once (or two statuses of one part) see each other's outcome, as they
    # would one after the other (found by the ledger state machine).
    row = tx.execute("SELECT id, status FROM replies WHERE id = %(id)s FOR UPDATE",
                     {"id": int(receipt.client_ref)}).fetchone()
    if row is None:
        return None
    adopted = tx.execute(
        "SELECT reply_id FROM reply_parts WHERE provider_message_id = %(id)s",
        {"id": receipt.message_id}).fetchone()
    if adopted is not None:
        return int(adopted["reply_id"])
    if row["status"] not in ("sending", "unknown"):
        return None
    price = Decimal(receipt.price) if receipt.price else None
    add_reply_parts(tx, row["id"], [SentPart(receipt.message_id, price)], now)
    return int(row["id"])


def _fold(tx: Transaction, reply_id: int, now: datetime) -> str:
    """The reply's status and charge from its parts' receipts.

    Receipts only ever raise a charge: the reply is charged the higher of what it holds
    (its reservation, or the send's price) and what its receipts report. A receipt never
    frees room under a cap (a forged one, or one of several parts whose prices are not all
    known yet, would), and a charge above the reservation halts sending like a send's."""
    before = tx.execute(
        "SELECT r.status, r.reserved, r.segments, r.campaign_id, c.number FROM replies r"
        " JOIN campaigns c ON c.id = r.campaign_id WHERE r.id = %(id)s FOR UPDATE OF r",
        {"id": reply_id},
    ).fetchone()
    if before["status"] not in ("sent", "delivered", "unknown"):
        return str(before["status"])
    parts = tx.execute(
        "SELECT status, price FROM reply_parts WHERE reply_id = %(id)s", {"id": reply_id}
    ).fetchall()
    statuses = {part["status"] for part in parts}
    status = ("failed" if statuses & FAILED_RECEIPT_STATUSES
              else "delivered" if statuses == {"delivered"} else "sent")
    reported = sum((Decimal(str(part["price"])) for part in parts
                    if part["price"] is not None), Decimal(0))
    reserved = Decimal(str(before["reserved"] or 0))
    if reserved and reported > PLAUSIBLE_PRICE_MULTIPLE * reserved:
        count(tx, PROVIDER_ERRORS, "", "implausible_price")
        log.warning("reply %s: receipts report %s EUR, over %s times the %s EUR reserved:"
                    " recorded on its parts, not charged", reply_id, reported,
                    PLAUSIBLE_PRICE_MULTIPLE, reserved)
        reported = Decimal(0)
    moved = move(tx, "id = %(id)s AND status = %(before)s", status,
                 "CASE WHEN charged > %(reported)s THEN charged ELSE %(reported)s END",
                 {"id": reply_id, "before": before["status"], "reported": reported,
                  "now": now}, ", final_price = %(reported)s, to_number = NULL")
    if not moved:
        return str(before["status"])
    [row] = moved
    # A reply that was `unknown` is billed now: its whole charge is spend; one already
    # `sent` had its charge counted as spend at the send: only the difference is new.
    charged = Decimal(str(row["charged"]))
    record_spend(tx, before["campaign_id"],
                 charged if before["status"] == "unknown" else Decimal(str(row["charge_delta"])),
                 now)
    if row["charge_delta"] and before["segments"]:
        observe_price(tx, before["campaign_id"], charged / before["segments"])
    if charged > reserved:
        count(tx, PRICE_OVERRUNS, before["number"], "")
        halt_sending(tx, before["campaign_id"], f"price overrun: reply {reply_id}'s receipts"
                     f" report {charged} EUR, {reserved} EUR reserved", now)
    if status != before["status"] and status in ("delivered", "failed"):
        count(tx, REPLIES, before["number"], status)
    return status
