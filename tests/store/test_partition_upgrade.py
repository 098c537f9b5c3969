"""Migration 0008 converts a database filled under the previous schema (0001–0007): every
row kept with its id, months partitioned, dedup keys moved to their own table, and the
pipeline's promises unchanged (duplicates refused, replies joined, evidence exported)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import psycopg
import pytest
from psycopg.rows import dict_row

from shared.rules.messages import InboundSms
from shared.store import evidence, inbound
from shared.store.db import Database, upgrade
from tests.helpers import ADMIN_DATABASE_URL, database_url

CAMPAIGN = "33700000001"
AT = datetime(2026, 1, 1, tzinfo=UTC)
# (received_at, sender): months apart, one far in the future (no month ready for it).
MESSAGES = [(datetime(2026, 3, 4, 10, tzinfo=UTC), "ordinary"),
            (datetime(2026, 3, 20, 10, tzinfo=UTC), "abusive"),
            (datetime(2026, 6, 1, 0, tzinfo=UTC), "ordinary"),
            (datetime(2026, 6, 30, 23, 59, tzinfo=UTC), "abusive"),
            (datetime(2026, 9, 9, 9, tzinfo=UTC), "ordinary"),
            (datetime(2026, 11, 2, 8, tzinfo=UTC), "abusive"),
            (datetime(2030, 5, 5, 5, tzinfo=UTC), "ordinary")]
OLD_EVIDENCE_EXPORT = (
    "SELECT e.sender, e.encrypted_number, e.flagged_at, e.reasons AS flagged_for,"
    " m.received_at, m.provider_timestamp, m.text, m.verdict, m.reasons"
    " FROM evidence e JOIN inbound_messages m"
    " ON m.campaign_id = e.campaign_id AND m.sender = e.sender"
    " WHERE e.campaign_id = 1 ORDER BY m.received_at, m.id")


@pytest.fixture
def old_database() -> Iterator[str]:
    """A database at migration 0007, filled as the previous code filled it."""
    name = f"relous_upgrade_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(ADMIN_DATABASE_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = database_url(name)
    database = Database(url, pool_size=1)
    assert upgrade(database, up_to=7)[-1] == "0007_defences_v2.sql"
    database.close()
    with psycopg.connect(url, autocommit=True) as conn:
        _fill(conn)
    yield url
    with psycopg.connect(ADMIN_DATABASE_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _fill(conn: psycopg.Connection) -> None:
    conn.execute("INSERT INTO campaigns (number, reply_text, created_at)"
                 " VALUES (%s, 'Stop.', %s)", (CAMPAIGN, AT))
    for index, (received_at, sender) in enumerate(MESSAGES, start=1):
        conn.execute(
            "INSERT INTO inbound_messages (dedup_key, campaign_id, to_number, sender, text,"
            " message_type, keyword, provider_timestamp, received_at, verdict, reasons,"
            " fingerprint, score, would_stop) VALUES (%s, 1, %s, %s, %s, 'text', 'KW', %s, %s,"
            " 'reply', 'why', 'fp', %s, '')",
            (f"MSG-{index}", CAMPAIGN, sender, f"text {index}", received_at, received_at,
             index))
    conn.execute("DELETE FROM inbound_messages WHERE dedup_key = 'MSG-3'")  # a gap in the ids
    conn.execute("INSERT INTO inbound_messages (dedup_key, to_number, sender, text,"
                 " message_type, received_at, verdict) VALUES ('LAST', %s, 'x', '', 'text',"
                 " %s, 'unroutable')", (CAMPAIGN, AT))
    conn.execute("DELETE FROM inbound_messages WHERE dedup_key = 'LAST'")  # the top id gone
    for inbound_id in (2, 5):
        conn.execute(
            "INSERT INTO replies (campaign_id, sender, inbound_message_id, text, due_at,"
            " created_at, updated_at) VALUES (1, 'ordinary', %s, 'Stop.', %s, %s, %s)",
            (inbound_id, AT, AT, AT))
    for part, linked in ((1, 4), (2, 4), (3, None)):
        conn.execute(
            "INSERT INTO inbound_parts (provider_message_id, campaign_id, sender, concat_ref,"
            " part, total, text, received_at, inbound_message_id) VALUES (%s, 1, 'abusive',"
            " '7', %s, 3, %s, %s, %s)", (f"PART-{part}", part, f"part {part}",
                                         MESSAGES[3][0], linked))
    conn.execute("INSERT INTO evidence (campaign_id, sender, encrypted_number, flagged_at,"
                 " reasons) VALUES (1, 'abusive', 'sealed', %s, 'velocity')", (AT,))


def _rows(url: str, sql: str) -> list[dict]:
    with psycopg.connect(url, row_factory=dict_row) as conn:
        return conn.execute(sql).fetchall()


def _sms(message_id: str) -> InboundSms:
    return InboundSms(message_id=message_id, msisdn="33612345621", to=CAMPAIGN, text="Re",
                      type="text", keyword="", message_timestamp=None, concat_ref="7",
                      concat_part=1, concat_total=3)


def test_the_partition_migration_keeps_every_row_and_promise(old_database):
    url = old_database
    messages = _rows(url, "SELECT * FROM inbound_messages ORDER BY id")
    parts = _rows(url, "SELECT * FROM inbound_parts ORDER BY provider_message_id")
    joined = _rows(url, "SELECT r.id, m.dedup_key FROM replies r JOIN inbound_messages m"
                        " ON m.id = r.inbound_message_id ORDER BY r.id")
    exported = _rows(url, OLD_EVIDENCE_EXPORT)
    assert [row["id"] for row in messages] == [1, 2, 4, 5, 6, 7] and len(exported) == 3

    database = Database(url, pool_size=1)
    try:
        assert upgrade(database) == ["0008_partitions.postgresql.sql"]
        assert _rows(url, "SELECT * FROM inbound_messages ORDER BY id") == messages
        assert _rows(url, "SELECT * FROM inbound_parts ORDER BY provider_message_id") == parts
        assert _rows(url, "SELECT r.id, m.dedup_key FROM replies r JOIN inbound_messages m"
                          " ON m.id = r.inbound_message_id ORDER BY r.id") == joined

        partitions = {row["name"] for row in _rows(
            url, "SELECT c.relname AS name FROM pg_inherits i JOIN pg_class c"
                 " ON c.oid = i.inhrelid WHERE i.inhparent = 'inbound_messages'::regclass")}
        assert {f"inbound_messages_p2026_{month:02d}" for month in range(3, 12)} <= partitions
        assert "inbound_messages_default" in partitions
        placed = _rows(url, "SELECT tableoid::regclass::text AS partition, dedup_key"
                            " FROM inbound_messages ORDER BY id")
        assert [row["partition"] for row in placed] == [
            "inbound_messages_p2026_03", "inbound_messages_p2026_03",
            "inbound_messages_p2026_06", "inbound_messages_p2026_09",
            "inbound_messages_p2026_11", "inbound_messages_default"]
        assert not _rows(url, "SELECT conname FROM pg_constraint WHERE contype = 'f'"
                              " AND confrelid = 'inbound_messages'::regclass")

        now = datetime.now(UTC)
        with database.transaction() as tx:
            assert evidence.evidence_messages(tx, 1, datetime(2020, 1, 1, tzinfo=UTC)) \
                == exported
            for key in ("MSG-1", "MSG-7"):
                assert inbound.insert_inbound(tx, key, 1, _sms(key), "s", "Re", "", now,
                                              "reply", "") is None, f"{key} redelivered"
            assert not inbound.insert_part(tx, 1, "abusive", _sms("PART-1"), now)
            fresh = inbound.insert_inbound(tx, "NEW", 1, _sms("NEW"), "s", "Re", "", now,
                                           "reply", "")
        # After the old sequence's last id (8, deleted): never a reused one. (A refused
        # redelivery spends a value of the sequence: ids have gaps, as before.)
        assert fresh is not None and fresh > 8
        assert _rows(url, "SELECT COUNT(*) AS n FROM inbound_dedup")[0]["n"] == 6 + 3 + 1
    finally:
        database.close()


def test_the_sqlite_migration_moves_the_keys_and_keeps_refusing_them(tmp_path):
    database = Database(f"sqlite:///{tmp_path / 'old.db'}")
    try:
        upgrade(database, up_to=7)
        with database.transaction() as tx:
            tx.execute("INSERT INTO campaigns (number, reply_text, created_at)"
                       " VALUES (%(number)s, 'Stop.', %(at)s)", {"number": CAMPAIGN, "at": AT})
            tx.execute("INSERT INTO inbound_messages (dedup_key, campaign_id, to_number,"
                       " sender, text, message_type, received_at, verdict) VALUES"
                       " ('OLD-1', 1, %(number)s, 's', 'Salut', 'text', %(at)s, 'reply')",
                       {"number": CAMPAIGN, "at": AT})
        assert upgrade(database) == ["0008_partitions.sqlite.sql"]
        with database.transaction() as tx:
            assert tx.execute("SELECT dedup_key, inbound_message_id FROM inbound_dedup"
                              ).fetchall() == [{"dedup_key": "OLD-1", "inbound_message_id": 1}]
            assert inbound.insert_inbound(tx, "OLD-1", 1, _sms("OLD-1"), "s", "Re", "", AT,
                                          "reply", "") is None
            assert inbound.insert_inbound(tx, "NEW-1", 1, _sms("NEW-1"), "s", "Re", "", AT,
                                          "reply", "") == 2
    finally:
        database.close()
