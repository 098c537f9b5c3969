"""Evidence of abusive senders (their numbers, encrypted by the caller) and retention."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from shared.store.db import Transaction


def keep_evidence(tx: Transaction, campaign_id: int, sender: str, encrypted_number: str,
                  reasons: str, now: datetime) -> None:
    """Keep the encrypted number of a sender flagged abusive (once per campaign)."""
    tx.execute(
        "INSERT INTO evidence (campaign_id, sender, encrypted_number, flagged_at, reasons)"
        " VALUES (%(campaign)s, %(sender)s, %(number)s, %(now)s, %(reasons)s)"
        " ON CONFLICT (campaign_id, sender) DO NOTHING",
        {"campaign": campaign_id, "sender": sender, "number": encrypted_number, "now": now,
         "reasons": reasons},
    )


def evidence_messages(tx: Transaction, campaign_id: int,
                      since: datetime) -> list[dict[str, Any]]:
    """Messages since `since` of the campaign's senders flagged abusive, with the encrypted
    number (decrypted only by `relous evidence export`)."""
    return tx.execute(
        "SELECT e.sender, e.encrypted_number, e.flagged_at, e.reasons AS flagged_for,"
        " m.received_at, m.provider_timestamp, m.text, m.verdict, m.reasons"
        " FROM evidence e JOIN inbound_messages m"
        " ON m.campaign_id = e.campaign_id AND m.sender = e.sender"
        " WHERE e.campaign_id = %(campaign)s AND m.received_at >= %(since)s"
        " ORDER BY m.received_at, m.id",
        {"campaign": campaign_id, "since": since},
    ).fetchall()


def purge(tx: Transaction, now: datetime, retention: timedelta,
          evidence_retention: timedelta) -> dict[str, int]:
    """Apply retention: evidence (encrypted numbers) past its retention is deleted; texts
    and raw numbers older than `retention` are erased, except the messages of senders
    still kept as evidence."""
    message_cutoff, evidence_cutoff = now - retention, now - evidence_retention
    evidence = tx.execute("DELETE FROM evidence WHERE flagged_at < %(cutoff)s",
                          {"cutoff": evidence_cutoff}).rowcount
    texts = tx.execute(
        "UPDATE inbound_messages SET text = '', keyword = '', fingerprint = ''"
        " WHERE received_at < %(cutoff)s AND (text <> '' OR keyword <> '' OR fingerprint <> '')"
        " AND NOT EXISTS (SELECT 1 FROM evidence e WHERE e.campaign_id ="
        " inbound_messages.campaign_id AND e.sender = inbound_messages.sender)",
        {"cutoff": message_cutoff},
    ).rowcount
    parts = tx.execute(
        "UPDATE inbound_parts SET text = '' WHERE received_at < %(cutoff)s AND text <> ''",
        {"cutoff": message_cutoff},
    ).rowcount
    numbers = tx.execute(
        "UPDATE replies SET to_number = NULL,"
        " status = CASE WHEN status = 'pending' THEN 'expired' ELSE status END"
        " WHERE created_at < %(cutoff)s AND to_number IS NOT NULL",
        {"cutoff": message_cutoff},
    ).rowcount
    return {"evidence": evidence, "texts": texts + parts, "numbers": numbers}
