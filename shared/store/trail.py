"""A sender's decision trail, for `relous explain`: its messages, their verdicts and
replies, and its state in each campaign. Read only.

No raw number and no message text leaves these queries (a text may hold numbers: only its
length is read), except `held_number`, whose caller masks it at once. Every query of a
sender's messages goes through `inbound_messages (campaign_id, sender, received_at)`, one
campaign at a time, so a flooder's trail costs what its own rows cost.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shared.store.db import Transaction


@dataclass(frozen=True)
class Trail:
    """Everything `relous explain` shows of one sender (by pseudonym)."""

    listed: str | None                    # the operators' list: "allow", "block" or None
    campaigns: list[dict[str, Any]]       # the sender's row per campaign, with the campaign's
    messages: list[dict[str, Any]]        # the latest messages, newest first
    total_messages: int                   # all of the sender's messages on record
    replies: dict[int, dict[str, Any]]    # every reply to the sender, by inbound message id
    waiting_parts: dict[int, int]         # unassembled parts of long SMS, per campaign id

    @property
    def known(self) -> bool:
        return bool(self.campaigns or self.messages or self.listed)


_MESSAGE_COLUMNS = (
    "m.id, m.campaign_id, m.to_number AS campaign, m.received_at, m.verdict, m.score,"
    " m.reasons, m.would_stop, m.parts, LENGTH(m.text) AS text_length")
_REPLY_COLUMNS = (
    "r.id, r.inbound_message_id, r.campaign_id, r.status, r.created_at, r.due_at,"
    " r.expires_at, r.claimed_at, r.sent_at, r.attempts, r.segments, r.price,"
    " r.final_price, r.charged, r.error, r.window_ends_at,"
    " (SELECT MAX(p.err_code) FROM reply_parts p WHERE p.reply_id = r.id"
    " AND p.err_code <> 0) AS err_code")


def sender_of_message(tx: Transaction, message_id: int) -> str | None:
    """The pseudonym of the sender of inbound message `message_id`; None if unknown."""
    row = tx.execute("SELECT sender FROM inbound_messages WHERE id = %(id)s",
                     {"id": message_id}).fetchone()
    return str(row["sender"]) if row else None


def message_by_id(tx: Transaction, message_id: int) -> dict[str, Any] | None:
    row: dict[str, Any] | None = tx.execute(
        f"SELECT {_MESSAGE_COLUMNS} FROM inbound_messages m WHERE m.id = %(id)s",  # noqa: S608
        {"id": message_id}).fetchone()
    return row


def sender_trail(tx: Transaction, sender: str, limit: int) -> Trail:
    """The sender's trail: its state in each campaign, its latest `limit` messages (across
    campaigns, unroutable ones included) and every reply it was given."""
    listed = tx.execute("SELECT list FROM sender_lists WHERE sender = %(sender)s",
                        {"sender": sender}).fetchone()
    campaigns = tx.execute(
        "SELECT c.id AS campaign_id, c.number, c.paused, c.sending_halted_reason,"
        " c.reply_delay_seconds, s.first_seen_at, s.last_seen_at, s.message_count,"
        " s.reply_window_ends_at, s.blocked_until"
        " FROM campaigns c JOIN senders s ON s.campaign_id = c.id AND s.sender = %(sender)s"
        " ORDER BY c.number", {"sender": sender}).fetchall()
    messages: list[dict[str, Any]] = []
    replies: dict[int, dict[str, Any]] = {}
    total = 0
    # One campaign at a time (NULL: messages to a number no campaign answers on).
    for campaign_id in [row["campaign_id"] for row in campaigns] + [None]:
        where = ("m.campaign_id IS NULL" if campaign_id is None
                 else "m.campaign_id = %(campaign)s") + " AND m.sender = %(sender)s"
        params = {"campaign": campaign_id, "sender": sender, "limit": limit}
        total += int(tx.execute(f"SELECT COUNT(*) AS n FROM inbound_messages m"  # noqa: S608
                                f" WHERE {where}", params).fetchone()["n"])
        messages += tx.execute(
            f"SELECT {_MESSAGE_COLUMNS} FROM inbound_messages m WHERE {where}"  # noqa: S608
            " ORDER BY m.received_at DESC, m.id DESC LIMIT %(limit)s", params).fetchall()
        if campaign_id is not None:
            for row in tx.execute(
                    f"SELECT {_REPLY_COLUMNS} FROM inbound_messages m"  # noqa: S608
                    f" JOIN replies r ON r.inbound_message_id = m.id WHERE {where}",
                    params).fetchall():
                replies[row["inbound_message_id"]] = row
    messages.sort(key=lambda row: (row["received_at"], row["id"]), reverse=True)
    parts = tx.execute(
        "SELECT campaign_id, COUNT(*) AS n FROM inbound_parts"
        " WHERE sender = %(sender)s AND inbound_message_id IS NULL GROUP BY campaign_id",
        {"sender": sender}).fetchall()
    return Trail(listed=listed["list"] if listed else None, campaigns=campaigns,
                 messages=messages[:limit], total_messages=total, replies=replies,
                 waiting_parts={row["campaign_id"]: int(row["n"]) for row in parts})


def held_number(tx: Transaction, sender: str) -> str | None:
    """The raw number a reply to this sender still holds (only an unsent one does), for
    the caller to mask: with `--message`, the operator has no other masked form."""
    row = tx.execute(
        "SELECT r.to_number FROM campaigns c JOIN inbound_messages m"
        " ON m.campaign_id = c.id AND m.sender = %(sender)s"
        " JOIN replies r ON r.inbound_message_id = m.id WHERE r.to_number IS NOT NULL"
        " LIMIT 1", {"sender": sender}).fetchone()
    return str(row["to_number"]) if row else None
