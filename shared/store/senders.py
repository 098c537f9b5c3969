"""Senders: one row per (campaign, pseudonym), its reply window, block and counts; and the
operators' block and allow lists. Raw numbers never reach these tables."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from shared.store.db import Transaction


def lock_sender(tx: Transaction, campaign_id: int, sender: str, prefix_group: str,
                now: datetime, *, new_message: bool = True) -> dict[str, Any]:
    """Create or touch the sender's row, holding its lock until commit; return its state:
    `reply_window_ends_at`, `blocked_until`, `message_count` (its whole messages to the
    campaign, this one included: 1 is a first contact) and the operators' list (`listed`:
    "allow", "block" or None). A part of a concatenated SMS locks the row without counting
    (`new_message=False`): the whole message counts once, when assembled."""
    row: dict[str, Any] = tx.execute(
        "INSERT INTO senders (campaign_id, sender, first_seen_at, last_seen_at, message_count,"
        " prefix_group)"
        " VALUES (%(campaign)s, %(sender)s, %(now)s, %(now)s, %(count)s, %(prefix)s)"
        " ON CONFLICT (campaign_id, sender) DO UPDATE SET"
        " last_seen_at = excluded.last_seen_at,"
        " message_count = senders.message_count + %(count)s"
        " RETURNING reply_window_ends_at, blocked_until, message_count,"
        " (SELECT list FROM sender_lists WHERE sender_lists.sender = %(sender)s) AS listed",
        {"campaign": campaign_id, "sender": sender, "now": now, "prefix": prefix_group,
         "count": 1 if new_message else 0},
    ).fetchone()
    return row


def sender_counts(tx: Transaction, campaign_id: int, sender: str, text_key: str,
                  now: datetime) -> dict[str, int]:
    """The sender's messages in the last minute, hour and day, and today's messages with
    the same text key (the message being judged included: it is already inserted)."""
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
    return {name: int(row[name] or 0) for name in ("per_minute", "per_hour", "per_day", "same")}


def first_time_senders_since(tx: Transaction, campaign_id: int, since: datetime,
                             enough: int) -> int:
    """Senders whose first message came after `since`, counted up to `enough` (a threshold
    is all the caller compares)."""
    row = tx.execute(
        "SELECT COUNT(*) AS n FROM (SELECT 1 FROM senders WHERE campaign_id = %(campaign)s"
        " AND first_seen_at > %(since)s LIMIT %(enough)s) AS recent",
        {"campaign": campaign_id, "since": since, "enough": enough},
    ).fetchone()
    return int(row["n"])


def prefix_senders(tx: Transaction, campaign_id: int, prefix_group: str, since: datetime,
                   enough: int) -> int:
    """First-time senders of a (keyed) number prefix since `since`, counted up to `enough`."""
    row = tx.execute(
        "SELECT COUNT(*) AS n FROM (SELECT 1 FROM senders"
        " WHERE campaign_id = %(campaign)s AND prefix_group = %(prefix)s"
        " AND first_seen_at > %(since)s LIMIT %(enough)s) AS cluster",
        {"campaign": campaign_id, "prefix": prefix_group, "since": since, "enough": enough},
    ).fetchone()
    return int(row["n"])


def block_senders(tx: Transaction, blocks: dict[tuple[int, str], datetime]) -> None:
    """Block (campaign id, sender) pairs until the given times, in one round trip."""
    if blocks:
        tx.executemany(
            "UPDATE senders SET blocked_until = %(until)s"
            " WHERE campaign_id = %(campaign)s AND sender = %(sender)s",
            [{"until": until, "campaign": campaign, "sender": sender}
             for (campaign, sender), until in sorted(blocks.items())])


def open_reply_windows(tx: Transaction, windows: dict[tuple[int, str], datetime]) -> None:
    """Set senders' reply windows, (campaign id, sender) -> end, in one round trip."""
    if windows:
        tx.executemany(
            "UPDATE senders SET reply_window_ends_at = %(ends)s"
            " WHERE campaign_id = %(campaign)s AND sender = %(sender)s",
            [{"ends": ends, "campaign": campaign_id, "sender": sender}
             for (campaign_id, sender), ends in sorted(windows.items())])


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
