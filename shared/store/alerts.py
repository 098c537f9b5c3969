"""The alert webhook's outbox (`alerts`): events are raised in the transaction that sees
them, once each (by a dedupe key), and delivered later by beat (workers/alerts.py), so a
slow or dead webhook never holds the pipeline.

A row is due while `next_attempt_at` has passed and it is neither delivered nor given up.
Claiming it counts an attempt and pushes `next_attempt_at` to the end of a lease: a worker
that dies mid-POST leaves it to be claimed again once the lease ends, never lost. The
claimer's `attempts` is its token: only it may schedule the retry or give up.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import Any

from shared.store.db import Transaction

MAX_ERROR_LENGTH = 200
# Rows purged per run at most: one run stays short however much piled up.
PURGE_BATCH = 500


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
        {"prefix": _like(prefix)}).fetchall()


def latest_alert(tx: Transaction, prefix: str) -> dict[str, Any] | None:
    """The newest alert whose key starts with `prefix` (a watcher's high-water mark)."""
    row: dict[str, Any] | None = tx.execute(
        "SELECT id, dedupe_key, created_at FROM alerts"
        " WHERE dedupe_key LIKE %(prefix)s ESCAPE '\\' ORDER BY id DESC LIMIT 1",
        {"prefix": _like(prefix)}).fetchone()
    return row


def claim_due(tx: Transaction, now: datetime, lease_until: datetime,
              max_attempts: int) -> dict[str, Any] | None:
    """Take the oldest due alert, counting one attempt, until `lease_until`; None when none
    is due. Concurrent claimers skip each other's row (SKIP LOCKED; SQLite serialises)."""
    row: dict[str, Any] | None = tx.execute(
        "UPDATE alerts SET attempts = attempts + 1, next_attempt_at = %(lease)s"
        " WHERE id IN (SELECT id FROM alerts WHERE delivered_at IS NULL"
        " AND given_up_at IS NULL AND next_attempt_at <= %(now)s"
        " AND attempts < %(max)s ORDER BY next_attempt_at, id LIMIT 1 FOR UPDATE SKIP LOCKED)"
        " RETURNING id, text, attempts, created_at",
        {"now": now, "lease": lease_until, "max": max_attempts}).fetchone()
    return row


def mark_delivered(tx: Transaction, alert_id: int, now: datetime) -> bool:
    """The webhook took it (a 2xx): never sent again."""
    return tx.execute(
        "UPDATE alerts SET delivered_at = %(now)s, last_error = NULL"
        " WHERE id = %(id)s AND delivered_at IS NULL",
        {"id": alert_id, "now": now}).rowcount == 1


def schedule_retry(tx: Transaction, alert_id: int, attempts: int, error: str,
                   at: datetime) -> bool:
    """Try again at `at`; False when the claim was lost (another claimer took it over)."""
    return tx.execute(
        "UPDATE alerts SET next_attempt_at = %(at)s, last_error = %(error)s"
        " WHERE id = %(id)s AND attempts = %(attempts)s AND delivered_at IS NULL"
        " AND given_up_at IS NULL",
        {"id": alert_id, "attempts": attempts, "error": error[:MAX_ERROR_LENGTH],
         "at": at}).rowcount == 1


def give_up(tx: Transaction, alert_id: int, attempts: int, error: str,
            now: datetime) -> bool:
    """Stop trying (attempts used up); False when the claim was lost."""
    return tx.execute(
        "UPDATE alerts SET given_up_at = %(now)s, last_error = %(error)s"
        " WHERE id = %(id)s AND attempts = %(attempts)s AND delivered_at IS NULL"
        " AND given_up_at IS NULL",
        {"id": alert_id, "attempts": attempts, "error": error[:MAX_ERROR_LENGTH],
         "now": now}).rowcount == 1


def give_up_stale(tx: Transaction, created_before: datetime, now: datetime) -> int:
    """Give up alerts raised before `created_before` and still not delivered (raised while
    no webhook was set, or a worker kept dying mid-POST): news that old is noise."""
    return tx.execute(
        "UPDATE alerts SET given_up_at = %(now)s,"
        " last_error = COALESCE(last_error, 'never attempted') || ' (stale)'"
        " WHERE delivered_at IS NULL AND given_up_at IS NULL"
        " AND created_at < %(before)s",
        {"before": created_before, "now": now}).rowcount


def purge_alerts(tx: Transaction, created_before: datetime, keep: Collection[str]) -> int:
    """Delete delivered or given-up alerts raised before `created_before`, except the keys
    in `keep` (what the watchers still compare with: removing them would raise them
    again). At most PURGE_BATCH rows a call."""
    rows = tx.execute(
        "SELECT id, dedupe_key FROM alerts WHERE created_at < %(before)s"
        " AND (delivered_at IS NOT NULL OR given_up_at IS NOT NULL) ORDER BY id"
        " LIMIT %(limit)s", {"before": created_before, "limit": PURGE_BATCH}).fetchall()
    doomed = [{"id": row["id"]} for row in rows if row["dedupe_key"] not in keep]
    if doomed:
        tx.executemany("DELETE FROM alerts WHERE id = %(id)s", doomed)
    return len(doomed)


# --- what the watchers read of other tables ---------------------------------------------

def current_halts(tx: Transaction) -> list[dict[str, Any]]:
    """Every halt in force: `scope` is the campaign's number, or `*` for the global kill
    switch (`sending_halts`), with its reason and when it tripped."""
    halted = tx.execute(
        "SELECT number AS scope, sending_halted_reason AS reason,"
        " sending_halted_at AS halted_at FROM campaigns"
        " WHERE sending_halted_reason IS NOT NULL ORDER BY number").fetchall()
    return halted + tx.execute(
        "SELECT scope, reason, halted_at FROM sending_halts ORDER BY scope").fetchall()


def parked_after(tx: Transaction, after_id: int) -> dict[str, Any]:
    """Parked messages with an id above `after_id` (new since the last look): their count
    per kind and highest id, and how many are parked in all."""
    rows = tx.execute(
        "SELECT kind, COUNT(*) AS n, MAX(id) AS last_id FROM parked_messages"
        " WHERE id > %(after)s GROUP BY kind", {"after": after_id}).fetchall()
    waiting = tx.execute("SELECT COUNT(*) AS n FROM parked_messages").fetchone()["n"]
    return {"by_kind": {row["kind"]: int(row["n"]) for row in rows},
            "last_id": max((int(row["last_id"]) for row in rows), default=after_id),
            "waiting": int(waiting)}


def _like(prefix: str) -> str:
    return prefix.replace("\\", "\\\\").replace("%", r"\%").replace("_", r"\_") + "%"
