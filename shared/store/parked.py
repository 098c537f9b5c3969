"""Parked messages: what the web answered 200 for but the workers could not record. Each is
kept (its payload sealed by the caller) until an operator retries or drops it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from shared.store.db import Transaction

KINDS = ("inbound", "receipt")
MAX_ERROR_LENGTH = 500
MAX_KEY_LENGTH = 100


def park(tx: Transaction, kind: str, message_key: str, sealed_payload: str, error: str,
         now: datetime) -> None:
    """Keep a message that cannot be recorded; parked again, it counts one more attempt."""
    tx.execute(
        "INSERT INTO parked_messages (kind, message_key, payload, error, attempts,"
        " first_attempt_at, last_attempt_at)"
        " VALUES (%(kind)s, %(key)s, %(payload)s, %(error)s, 1, %(now)s, %(now)s)"
        " ON CONFLICT (kind, message_key) DO UPDATE SET error = excluded.error,"
        " payload = excluded.payload, attempts = parked_messages.attempts + 1,"
        " last_attempt_at = excluded.last_attempt_at",
        {"kind": kind, "key": message_key[:MAX_KEY_LENGTH], "payload": sealed_payload,
         "error": error[:MAX_ERROR_LENGTH], "now": now},
    )


def parked(tx: Transaction, ids: list[int] | None = None) -> list[dict[str, Any]]:
    """Parked messages, oldest first (`ids`: only those)."""
    rows = tx.execute(
        "SELECT id, kind, message_key, payload, error, attempts, first_attempt_at,"
        " last_attempt_at FROM parked_messages ORDER BY id").fetchall()
    return [row for row in rows if ids is None or row["id"] in ids]


def unpark(tx: Transaction, message_id: int) -> bool:
    """Remove one parked message (retried or dropped); False when it was not there."""
    return tx.execute("DELETE FROM parked_messages WHERE id = %(id)s",
                      {"id": message_id}).rowcount == 1


def parked_counts(tx: Transaction) -> dict[str, int]:
    """Parked messages per kind, every kind present."""
    rows = tx.execute("SELECT kind, COUNT(*) AS n FROM parked_messages GROUP BY kind").fetchall()
    found = {row["kind"]: int(row["n"]) for row in rows}
    return {kind: found.get(kind, 0) for kind in KINDS}


def purge_parked(tx: Transaction, before: datetime) -> int:
    """Delete parked messages last tried before `before` (the retention): each holds a
    sender's number, sealed, and CONTRACT.md keeps numbers no longer than that."""
    return tx.execute("DELETE FROM parked_messages WHERE last_attempt_at < %(before)s",
                      {"before": before}).rowcount
