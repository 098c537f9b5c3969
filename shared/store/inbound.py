"""Inbound messages and the parts of concatenated ones.

Each is recorded once: its key (the provider's message id, `concat:` + the first part's
id for an assembled SMS, `part:` + a part's id) is claimed in `inbound_dedup` in the
statement that records it, so a retried webhook or a redelivered task records nothing the
second time. The keys live apart from the messages because the messages are partitioned
by month (shared/store/partitions.py) and a partitioned table's unique keys must hold the
month. A key is kept for DEDUP_HORIZON, then pruned by the purge.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.rules.messages import InboundSms
from shared.store.db import Transaction

# A key is refused for this long after its message was received. Vonage retries a webhook
# for 24 hours, and a signed webhook stays acceptable for RELOUS_SIGNATURE_MAX_AGE (72
# hours by default): a week covers both, plus a broker backlog after a long outage.
# (The purge keeps keys longer when RELOUS_SIGNATURE_MAX_AGE asks for it.)
DEDUP_HORIZON = timedelta(days=7)

# PostgreSQL: one statement claims the key and records the message under an id taken from
# the sequence; nothing is recorded when the key was taken. (The casts type the
# parameters of a SELECT list, which an INSERT's VALUES would have inferred.)
_CLAIM_AND_INSERT = (
    "WITH claimed AS (INSERT INTO inbound_dedup (dedup_key, inbound_message_id, campaign_id,"
    " received_at) VALUES (%(key)s, nextval('inbound_messages_id_seq'), %(campaign)s,"
    " %(now)s) ON CONFLICT (dedup_key) DO NOTHING RETURNING inbound_message_id)"
    " INSERT INTO inbound_messages (id, dedup_key, campaign_id, to_number, sender, text,"
    " message_type, keyword, parts, provider_timestamp, received_at, verdict, reasons,"
    " fingerprint)"
    " SELECT inbound_message_id, %(key)s::text, %(campaign)s::bigint, %(to)s::text,"
    " %(sender)s::text, %(text)s::text, %(type)s::text, %(keyword)s::text, %(parts)s::int,"
    " %(provider_ts)s::timestamptz, %(now)s::timestamptz, %(verdict)s::text,"
    " %(reasons)s::text, %(fingerprint)s::text FROM claimed RETURNING id")
# SQLite (one writer at a time): the claim, then the message, then the claim's id.
_CLAIM = ("INSERT INTO inbound_dedup (dedup_key, campaign_id, received_at)"
          " VALUES (%(key)s, %(campaign)s, %(now)s) ON CONFLICT (dedup_key) DO NOTHING")
_INSERT = (
    "INSERT INTO inbound_messages (dedup_key, campaign_id, to_number, sender, text,"
    " message_type, keyword, parts, provider_timestamp, received_at, verdict, reasons,"
    " fingerprint)"
    " VALUES (%(key)s, %(campaign)s, %(to)s, %(sender)s, %(text)s, %(type)s, %(keyword)s,"
    " %(parts)s, %(provider_ts)s, %(now)s, %(verdict)s, %(reasons)s, %(fingerprint)s)"
    " ON CONFLICT DO NOTHING RETURNING id")


def _record_once(tx: Transaction, values: dict[str, Any]) -> int | None:
    """Claim `values["key"]` and record the message; its id, or None when the key was
    claimed before."""
    if tx.dialect == "postgresql":
        row = tx.execute(_CLAIM_AND_INSERT, values).fetchone()
        return int(row["id"]) if row else None
    if tx.execute(_CLAIM, values).rowcount != 1:
        return None
    row = tx.execute(_INSERT, values).fetchone()
    # The claim names its message; None when the key, pruned from inbound_dedup, was still
    # in SQLite's unique column (the message recorded long ago).
    tx.execute("UPDATE inbound_dedup SET inbound_message_id = (SELECT id FROM inbound_messages"
               " m WHERE m.dedup_key = inbound_dedup.dedup_key) WHERE dedup_key = %(key)s",
               values)
    return int(row["id"]) if row else None


def insert_inbound(tx: Transaction, dedup_key: str, campaign_id: int | None,
                   sms: InboundSms, sender: str, text: str, text_key: str, now: datetime,
                   verdict: str, reasons: str, parts: int = 1) -> int | None:
    """Record a message once; its id, or None when `dedup_key` was already recorded."""
    return _record_once(tx, {
        "key": dedup_key, "campaign": campaign_id, "to": sms.to, "sender": sender,
        "text": text, "type": sms.type, "keyword": sms.keyword, "parts": parts,
        "provider_ts": _provider_timestamp(sms.message_timestamp, now), "now": now,
        "verdict": verdict, "reasons": reasons, "fingerprint": text_key})


def insert_part(tx: Transaction, campaign_id: int, sender: str, sms: InboundSms,
                now: datetime) -> bool:
    """Keep one part of a concatenated SMS; False when this part was already here."""
    values = {"key": "part:" + sms.message_id, "id": sms.message_id, "campaign": campaign_id,
              "sender": sender, "ref": sms.concat_ref, "part": sms.concat_part,
              "total": sms.concat_total, "text": sms.text, "now": now,
              "provider_ts": _provider_timestamp(sms.message_timestamp, now)}
    if tx.dialect == "postgresql":
        return tx.execute(
            "WITH claimed AS (INSERT INTO inbound_dedup (dedup_key, campaign_id, received_at)"
            " VALUES (%(key)s, %(campaign)s, %(now)s) ON CONFLICT (dedup_key) DO NOTHING"
            " RETURNING 1) INSERT INTO inbound_parts (provider_message_id, campaign_id, sender,"
            " concat_ref, part, total, text, received_at, provider_timestamp)"
            " SELECT %(id)s::text, %(campaign)s::bigint, %(sender)s::text, %(ref)s::text,"
            " %(part)s::int, %(total)s::int, %(text)s::text, %(now)s::timestamptz,"
            " %(provider_ts)s::timestamptz FROM claimed", values).rowcount == 1
    if tx.execute(_CLAIM, values).rowcount != 1:
        return False
    return tx.execute(
        "INSERT INTO inbound_parts (provider_message_id, campaign_id, sender, concat_ref, part,"
        " total, text, received_at, provider_timestamp)"
        " VALUES (%(id)s, %(campaign)s, %(sender)s, %(ref)s, %(part)s, %(total)s, %(text)s,"
        " %(now)s, %(provider_ts)s) ON CONFLICT DO NOTHING", values).rowcount == 1


# Parts of one SMS reach the provider within seconds: parts further apart than this (by
# the provider's receive time, else ours) are not combined. A phone's 8-bit concat-ref is
# reused after 256 long messages; an orphan older than this never joins a new message.
PART_WINDOW = timedelta(minutes=10)


def unassembled_parts(tx: Transaction, campaign_id: int, sender: str, sms: InboundSms,
                      now: datetime) -> list[dict[str, Any]]:
    """The parts of the sender's SMS with this ref and total not yet assembled (or only
    recorded as an orphan: a part retried late still completes its SMS), received within
    PART_WINDOW of this part, by part."""
    at = _provider_timestamp(sms.message_timestamp, now) or now
    return tx.execute(
        "SELECT provider_message_id, part, text FROM inbound_parts"
        " WHERE campaign_id = %(campaign)s AND sender = %(sender)s AND concat_ref = %(ref)s"
        " AND total = %(total)s AND (inbound_message_id IS NULL OR EXISTS (SELECT 1 FROM"
        " inbound_messages m WHERE m.id = inbound_parts.inbound_message_id"
        " AND m.dedup_key LIKE 'orphan:%%'))"
        " AND COALESCE(provider_timestamp, received_at) BETWEEN %(low)s AND %(high)s"
        " AND received_at >= %(recorded_since)s"
        " ORDER BY part, received_at, provider_message_id",
        {"campaign": campaign_id, "sender": sender, "ref": sms.concat_ref,
         "total": sms.concat_total, "low": at - PART_WINDOW, "high": at + PART_WINDOW,
         "recorded_since": now - PARTS_RECORDED_WITHIN},
    ).fetchall()


def stale_parts(tx: Transaction, before: datetime, limit: int = 1000) -> list[dict[str, Any]]:
    """Parts never assembled, received before `before`: their SMS will not complete."""
    return tx.execute(
        "SELECT p.provider_message_id, p.campaign_id, c.number, p.sender, p.concat_ref,"
        " p.part, p.total, p.text, p.received_at, p.provider_timestamp"
        " FROM inbound_parts p JOIN campaigns c ON c.id = p.campaign_id"
        " WHERE p.inbound_message_id IS NULL AND p.received_at < %(before)s"
        " ORDER BY p.campaign_id, p.sender, p.concat_ref, p.received_at LIMIT %(limit)s",
        {"before": before, "limit": limit},
    ).fetchall()


def record_incomplete(tx: Transaction, parts: list[dict[str, Any]], text_key: str,
                      reasons: str, now: datetime) -> int:
    """Record what arrived of an SMS that never completed, as one suppressed message (so
    that a flood of orphan parts is counted and seen), keyed `orphan:<first part id>`;
    its parts stay available to a late sibling (`unassembled_parts`)."""
    first = parts[0]
    key = "orphan:" + first["provider_message_id"]
    recorded = _record_once(tx, {
        "key": key, "campaign": first["campaign_id"], "to": first["number"],
        "sender": first["sender"], "text": "".join(part["text"] for part in parts),
        "type": "text", "keyword": "", "parts": len(parts),
        "provider_ts": first["provider_timestamp"], "now": now, "verdict": "suppress",
        "reasons": reasons, "fingerprint": text_key})
    row = {"id": recorded} if recorded is not None else tx.execute(
        "SELECT inbound_message_id AS id FROM inbound_dedup WHERE dedup_key = %(key)s",
        {"key": key}).fetchone()
    link_parts(tx, int(row["id"]), [part["provider_message_id"] for part in parts])
    return int(row["id"])


def link_parts(tx: Transaction, inbound_id: int, part_ids: Sequence[str]) -> None:
    """Mark parts as assembled into the message `inbound_id`."""
    tx.executemany(
        "UPDATE inbound_parts SET inbound_message_id = %(inbound)s"
        " WHERE provider_message_id = %(id)s",
        [{"inbound": inbound_id, "id": part_id} for part_id in part_ids],
    )


def write_verdicts(tx: Transaction, verdicts: Sequence[dict[str, Any]]) -> None:
    """Store judged messages' `verdict`, `reasons`, `score` and `would_stop` (by `id`) in
    one round trip."""
    if verdicts:
        tx.executemany(
            "UPDATE inbound_messages SET verdict = %(verdict)s, reasons = %(reasons)s,"
            " score = %(score)s, would_stop = %(would_stop)s WHERE id = %(id)s", verdicts)


# How far behind the provider's receive time a message may be recorded and still count
# in `inbound_since` (the bound keeps the query on the `received_at` index).
RECORDING_LAG = timedelta(minutes=10)


def inbound_since(tx: Transaction, campaign_id: int, since: datetime) -> int:
    """The campaign's inbound messages the provider received after `since` (our receive
    time when it gave none): a backlog drained late counts when it was sent."""
    row = tx.execute(
        "SELECT COUNT(*) AS n FROM inbound_messages WHERE campaign_id = %(campaign)s"
        " AND received_at > %(recorded_since)s"
        " AND COALESCE(provider_timestamp, received_at) > %(since)s",
        {"campaign": campaign_id, "since": since, "recorded_since": since - RECORDING_LAG},
    ).fetchone()
    return int(row["n"])


# Vonage retries a webhook for 24 hours: a receive time older than this, or in the future,
# is not believed (a forged one would dodge the per-minute counts or the part window).
PROVIDER_TIME_PAST = timedelta(hours=25)
PROVIDER_TIME_FUTURE = timedelta(minutes=5)
# A part that may still combine was recorded within this (its clamped provider time is
# within PART_WINDOW of the new part's): the bound lets PostgreSQL skip older months.
PARTS_RECORDED_WITHIN = PROVIDER_TIME_PAST + PROVIDER_TIME_FUTURE + PART_WINDOW


def _provider_timestamp(value: str | None, now: datetime) -> datetime | None:
    """The provider's receive time, clamped to what can be true at `now`."""
    if not value:
        return None
    at = datetime.strptime(value, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
    return min(max(at, now - PROVIDER_TIME_PAST), now + PROVIDER_TIME_FUTURE)
