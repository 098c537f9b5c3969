"""Inbound messages and the parts of concatenated ones.

`inbound_messages.dedup_key` is unique (the provider's message id, or `concat:` + the first
part's id): a retried webhook or a redelivered task inserts nothing the second time.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from shared.rules.messages import InboundSms
from shared.store.db import Transaction


def insert_inbound(tx: Transaction, dedup_key: str, campaign_id: int | None,
                   sms: InboundSms, sender: str, text: str, text_key: str, now: datetime,
                   verdict: str, reasons: str, parts: int = 1) -> int | None:
    """Record a message once; its id, or None when `dedup_key` was already recorded."""
    row = tx.execute(
        "INSERT INTO inbound_messages (dedup_key, campaign_id, to_number, sender, text,"
        " message_type, keyword, parts, provider_timestamp, received_at, verdict, reasons,"
        " fingerprint)"
        " VALUES (%(key)s, %(campaign)s, %(to)s, %(sender)s, %(text)s, %(type)s, %(keyword)s,"
        " %(parts)s, %(provider_ts)s, %(now)s, %(verdict)s, %(reasons)s, %(fingerprint)s)"
        " ON CONFLICT (dedup_key) DO NOTHING RETURNING id",
        {"key": dedup_key, "campaign": campaign_id, "to": sms.to, "sender": sender,
         "text": text, "type": sms.type, "keyword": sms.keyword, "parts": parts,
         "provider_ts": _provider_timestamp(sms.message_timestamp), "now": now,
         "verdict": verdict, "reasons": reasons, "fingerprint": text_key},
    ).fetchone()
    return int(row["id"]) if row else None


def insert_part(tx: Transaction, campaign_id: int, sender: str, sms: InboundSms,
                now: datetime) -> bool:
    """Keep one part of a concatenated SMS; False when this part was already here."""
    return tx.execute(
        "INSERT INTO inbound_parts (provider_message_id, campaign_id, sender, concat_ref,"
        " part, total, text, received_at)"
        " VALUES (%(id)s, %(campaign)s, %(sender)s, %(ref)s, %(part)s, %(total)s,"
        " %(text)s, %(now)s)"
        " ON CONFLICT (provider_message_id) DO NOTHING",
        {"id": sms.message_id, "campaign": campaign_id, "sender": sender,
         "ref": sms.concat_ref, "part": sms.concat_part, "total": sms.concat_total,
         "text": sms.text, "now": now},
    ).rowcount == 1


def unassembled_parts(tx: Transaction, campaign_id: int, sender: str,
                      sms: InboundSms) -> list[dict[str, Any]]:
    """The parts of the sender's SMS with this ref and total not yet assembled, by part."""
    return tx.execute(
        "SELECT provider_message_id, part, text FROM inbound_parts"
        " WHERE campaign_id = %(campaign)s AND sender = %(sender)s AND concat_ref = %(ref)s"
        " AND total = %(total)s AND inbound_message_id IS NULL"
        " ORDER BY part, received_at, provider_message_id",
        {"campaign": campaign_id, "sender": sender, "ref": sms.concat_ref,
         "total": sms.concat_total},
    ).fetchall()


def link_parts(tx: Transaction, inbound_id: int, part_ids: Sequence[str]) -> None:
    """Mark parts as assembled into the message `inbound_id`."""
    tx.executemany(
        "UPDATE inbound_parts SET inbound_message_id = %(inbound)s"
        " WHERE provider_message_id = %(id)s",
        [{"inbound": inbound_id, "id": part_id} for part_id in part_ids],
    )


def recent_senders_of_text(tx: Transaction, campaign_id: int, text_key: str,
                           since: datetime, sample: int) -> set[str]:
    """Distinct senders among the latest `sample` messages with this text key."""
    return {row["sender"] for row in tx.execute(
        "SELECT sender FROM inbound_messages WHERE campaign_id = %(campaign)s"
        " AND fingerprint = %(key)s AND received_at > %(since)s"
        " ORDER BY received_at DESC LIMIT %(rows)s",
        {"campaign": campaign_id, "key": text_key, "since": since, "rows": sample},
    ).fetchall()}


def write_verdicts(tx: Transaction, verdicts: Sequence[dict[str, Any]]) -> None:
    """Store judged messages' `verdict`, `reasons` and `score` (by `id`) in one round trip."""
    if verdicts:
        tx.executemany(
            "UPDATE inbound_messages SET verdict = %(verdict)s, reasons = %(reasons)s,"
            " score = %(score)s WHERE id = %(id)s", verdicts)


def inbound_since(tx: Transaction, campaign_id: int, since: datetime) -> int:
    """The campaign's inbound messages received after `since`."""
    row = tx.execute(
        "SELECT COUNT(*) AS n FROM inbound_messages WHERE campaign_id = %(campaign)s"
        " AND received_at > %(since)s",
        {"campaign": campaign_id, "since": since},
    ).fetchone()
    return int(row["n"])


def _provider_timestamp(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.strptime(value, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
