"""The alert webhook's outbox (`alerts`): events are raised in the transaction that sees
them, once each (by a dedupe key), and delivered later by beat (workers/alerts.py), so a
slow or dead webhook never holds the pipeline."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from shared.store.db import Transaction


def raise_alert(tx: Transaction, dedupe_key: str, text: str, now: datetime) -> bool:
    """Queue an alert unless one with this key was ever raised; True when it is new.
    The text must hold no sender's number or pseudonym (campaign numbers are fine)."""
    row = tx.execute(
        "INSERT INTO alerts (dedupe_key, text, created_at, next_attempt_at)"
        " VALUES (%(key)s, %(text)s, %(now)s, %(now)s)"
        " ON CONFLICT (dedupe_key) DO NOTHING RETURNING id",
        {"key": dedupe_key, "text": text, "now": now}).fetchone()
    return row is not None


def alerts_raised(tx: Transaction, prefix: str) -> list[dict[str, Any]]:
    """Alerts whose key starts with `prefix`, oldest first (watchers compare with them)."""
    return tx.execute(
        "SELECT id, dedupe_key, text, created_at, attempts, delivered_at, given_up_at"
        " FROM alerts WHERE dedupe_key LIKE %(prefix)s ESCAPE '\\' ORDER BY id",
        {"prefix": prefix.replace("%", r"\%").replace("_", r"\_") + "%"}).fetchall()
