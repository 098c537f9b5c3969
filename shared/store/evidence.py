"""Evidence of abusive senders (their numbers, encrypted by the caller) and retention."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from shared.store import partitions
from shared.store.db import Transaction
from shared.store.inbound import DEDUP_HORIZON


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
    number (decrypted only by `relous evidence export`): those still in `inbound_messages`
    and those copied out of a month the retention dropped (`evidence_messages`)."""
    return tx.execute(
        "SELECT e.sender, e.encrypted_number, e.flagged_at, e.reasons AS flagged_for,"
        " m.received_at, m.provider_timestamp, m.text, m.verdict, m.reasons"
        " FROM evidence e JOIN (SELECT id, campaign_id, sender, received_at,"
        " provider_timestamp, text, verdict, reasons FROM inbound_messages UNION ALL"
        " SELECT id, campaign_id, sender, received_at, provider_timestamp, text, verdict,"
        " reasons FROM evidence_messages) m"
        " ON m.campaign_id = e.campaign_id AND m.sender = e.sender"
        " WHERE e.campaign_id = %(campaign)s AND m.received_at >= %(since)s"
        " ORDER BY m.received_at, m.id",
        {"campaign": campaign_id, "since": since},
    ).fetchall()


_KEPT_COLUMNS = ("id, campaign_id, sender, received_at, provider_timestamp, text, verdict,"
                 " reasons")
# Older than any row: the lower bound of the erasing UPDATE when no month is dropped.
_BEGINNING = datetime(1970, 1, 1, tzinfo=UTC)


def purge(tx: Transaction, now: datetime, retention: timedelta,
          evidence_retention: timedelta,
          dedup_horizon: timedelta = DEDUP_HORIZON) -> dict[str, int]:
    """Apply retention: evidence (encrypted numbers) past its retention is deleted, with
    the messages kept for it; months of messages and parts wholly older than `retention`
    are dropped (PostgreSQL), their evidence senders' messages copied to
    `evidence_messages` first; texts and raw numbers older than `retention` left in a
    kept month (or anywhere, on SQLite) are erased, except the messages of senders
    still kept as evidence; dedup keys older than `dedup_horizon` are pruned.

    `texts` counts texts gone (erased, or in a dropped month). The months are dropped
    last: DETACH locks the tables until the caller commits."""
    message_cutoff, evidence_cutoff = now - retention, now - evidence_retention
    expired_texts = tx.execute(
        "DELETE FROM evidence_messages WHERE EXISTS (SELECT 1 FROM evidence e"
        " WHERE e.campaign_id = evidence_messages.campaign_id"
        " AND e.sender = evidence_messages.sender AND e.flagged_at < %(cutoff)s)",
        {"cutoff": evidence_cutoff}).rowcount
    evidence = tx.execute("DELETE FROM evidence WHERE flagged_at < %(cutoff)s",
                          {"cutoff": evidence_cutoff}).rowcount
    # On PostgreSQL every month before the cutoff's is dropped below (rows the DEFAULT
    # partition holds go to their month first): the erasing UPDATE skips them, so that it
    # never rewrites rows about to go (a flood month in DEFAULT would time it out).
    start = partitions.month_start(message_cutoff) if tx.dialect == "postgresql" \
        else _BEGINNING
    kept_from = dict.fromkeys(partitions.PARTITIONED, start)
    texts = tx.execute(
        "UPDATE inbound_messages SET text = '', keyword = '', fingerprint = ''"
        " WHERE received_at >= %(kept_from)s AND received_at < %(cutoff)s"
        " AND (text <> '' OR keyword <> '' OR fingerprint <> '')"
        " AND NOT EXISTS (SELECT 1 FROM evidence e WHERE e.campaign_id ="
        " inbound_messages.campaign_id AND e.sender = inbound_messages.sender)",
        {"cutoff": message_cutoff, "kept_from": kept_from["inbound_messages"]},
    ).rowcount
    parts = tx.execute(
        "UPDATE inbound_parts SET text = '' WHERE received_at >= %(kept_from)s"
        " AND received_at < %(cutoff)s AND text <> ''",
        {"cutoff": message_cutoff, "kept_from": kept_from["inbound_parts"]},
    ).rowcount
    numbers = tx.execute(
        "UPDATE replies SET to_number = NULL,"
        " status = CASE WHEN status = 'pending' THEN 'expired' ELSE status END"
        " WHERE created_at < %(cutoff)s AND to_number IS NOT NULL",
        {"cutoff": message_cutoff},
    ).rowcount
    # A key a parked inbound message still matches stays until the parked message goes:
    # retried later, it must still be a duplicate of its recorded twin.
    dedup_keys = tx.execute(
        "DELETE FROM inbound_dedup WHERE received_at < %(cutoff)s AND NOT EXISTS"
        " (SELECT 1 FROM parked_messages p WHERE p.kind = 'inbound' AND inbound_dedup.dedup_key"
        " IN (p.message_key, 'concat:' || p.message_key, 'part:' || p.message_key))",
        {"cutoff": now - dedup_horizon}).rowcount
    # The partition changes come last, so that the locks they take are held only until
    # the caller commits. Rows the DEFAULT partition held go to their month first (a row
    # older than kept_from belongs to a month that ended before the cutoff: dropped).
    created = partitions.ensure_partitions(tx, now)
    doomed = {table: partitions.expired_partitions(tx, table, message_cutoff)
              for table in partitions.PARTITIONED}
    dropped_texts = sum(_drop_month(tx, table, name)
                        for table, names in doomed.items() for name in names)
    return {"evidence": evidence, "texts": expired_texts + texts + parts + dropped_texts,
            "numbers": numbers, "dedup_keys": dedup_keys,
            "partitions_created": len(created),
            "partitions_dropped": sum(len(names) for names in doomed.values())}


def _drop_month(tx: Transaction, table: str, partition: str) -> int:
    """Drop one month of `table` past the retention, the messages of senders kept as
    evidence copied out first; the number of texts it held (as the erasing UPDATE would
    have counted them: one read of the month, no write)."""
    if table == "inbound_messages":
        tx.execute(
            f"INSERT INTO evidence_messages ({_KEPT_COLUMNS})"  # noqa: S608
            f' SELECT {_KEPT_COLUMNS} FROM "{partition}" m WHERE EXISTS (SELECT 1 FROM evidence e'
            " WHERE e.campaign_id = m.campaign_id AND e.sender = m.sender)"
            " ON CONFLICT (id) DO NOTHING")
        held = tx.execute(
            f'SELECT COUNT(*) AS n FROM "{partition}" m'  # noqa: S608
            " WHERE (text <> '' OR keyword <> '' OR fingerprint <> '') AND NOT EXISTS"
            " (SELECT 1 FROM evidence e WHERE e.campaign_id = m.campaign_id"
            " AND e.sender = m.sender)").fetchone()
    else:
        held = tx.execute(f"SELECT COUNT(*) AS n FROM \"{partition}\" WHERE text <> ''"  # noqa: S608
                          ).fetchone()
    partitions.drop_partition(tx, table, partition)
    return int(held["n"])
