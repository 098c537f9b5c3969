"""Monthly partitions of the inbound tables (shared/store/partitions.py), the dedup table
(shared/store/inbound.py) and retention by partitions (shared/store/evidence.py `purge`).

PostgreSQL tests run on a database of this module's own: they create and drop months that
other tests' "now" may need. The SQLite tests check that the same store code still runs on
the embedded default (no partitions there).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.rules.messages import InboundSms
from shared.settings import Settings
from shared.store import evidence, inbound, partitions
from shared.store.db import Database, Transaction, upgrade
from tests.helpers import wait_for
from tests.store.conftest import CAMPAIGN, NOW, RESET, add_test_campaign
from workers import housekeeping

RETENTION, EVIDENCE_RETENTION = timedelta(days=90), timedelta(days=365)


@pytest.fixture
def lite(tmp_path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'partitions.db'}")
    upgrade(database)
    add_test_campaign(database)
    yield database
    database.close()


def _sms(message_id: str, text: str = "Bonjour") -> InboundSms:
    return InboundSms(message_id=message_id, msisdn="33612345621", to=CAMPAIGN, text=text,
                      type="text", keyword="BONJOUR", message_timestamp=None,
                      concat_ref=None, concat_part=None, concat_total=None)


def _insert(database: Database, key: str, at: datetime, sender: str = "ordinary") -> int | None:
    with database.transaction() as tx:
        return inbound.insert_inbound(tx, key, 1, _sms(key, f"text of {key}"), sender,
                                      f"text of {key}", "k" + key, at, "reply", "")


def _flag(database: Database, sender: str, at: datetime) -> None:
    with database.transaction() as tx:
        evidence.keep_evidence(tx, 1, sender, "sealed-number", "velocity", at)


def _purge(database: Database, at: datetime, **kwargs) -> dict[str, int]:
    with database.transaction() as tx:
        return evidence.purge(tx, at, RETENTION, EVIDENCE_RETENTION, **kwargs)


def _partitions(tx: Transaction, table: str) -> set[str]:
    return {row["name"] for row in tx.execute(
        "SELECT c.relname AS name FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = %(table)s::regclass", {"table": table}).fetchall()}


def _count(database: Database, sql: str, params: dict | None = None) -> int:
    with database.transaction() as tx:
        return int(tx.execute(sql, params).fetchone()["n"])


def _month(year: int, month: int, day: int = 15) -> datetime:
    return datetime(year, month, day, 12, 0, tzinfo=UTC)


# Sessions of this database waiting for a lock (a row's transaction, a relation, an
# advisory lock).
_WAITING = ("SELECT COUNT(*) AS n FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            " AND datname = current_database()")


# --- deduplication ----------------------------------------------------------------------

@pytest.mark.parametrize("dialect", ["postgresql", "sqlite"])
def test_a_message_id_is_recorded_once_even_months_apart(request, dialect):
    database = request.getfixturevalue("pg" if dialect == "postgresql" else "lite")
    first = _insert(database, "MSG-A", _month(2026, 11, 1))
    assert first is not None
    assert _insert(database, "MSG-A", _month(2026, 11, 1)) is None, "a retried webhook"
    assert _insert(database, "MSG-A", _month(2026, 12, 2)) is None, "redelivered next month"
    assert _count(database, "SELECT COUNT(*) AS n FROM inbound_messages") == 1
    second = _insert(database, "MSG-B", _month(2026, 12, 2))
    assert second is not None and second > first


def test_the_dedup_row_names_its_message(pg):
    message_id = _insert(pg, "MSG-C", NOW)
    with pg.transaction() as tx:
        row = tx.execute("SELECT inbound_message_id, received_at FROM inbound_dedup"
                         " WHERE dedup_key = 'MSG-C'").fetchone()
    assert row == {"inbound_message_id": message_id, "received_at": NOW}


def test_the_same_message_in_two_batches_at_once_is_recorded_by_one(pg):
    """Two workers with the same redelivered message: the second's claim waits for the
    first's transaction, then finds the key taken."""
    results: dict[str, int | None] = {}

    def second() -> None:
        results["second"] = _insert(pg, "TWICE", NOW + timedelta(days=40))

    with pg.transaction() as tx:
        results["first"] = inbound.insert_inbound(tx, "TWICE", 1, _sms("TWICE"), "s", "Re",
                                                  "", NOW, "reply", "")
        thread = threading.Thread(target=second)
        thread.start()
        wait_for(lambda: _count(pg, _WAITING) >= 1,
                 timeout=10, message="the second claim to wait on the first")
    thread.join(timeout=30)
    assert results["first"] is not None and results["second"] is None
    assert _count(pg, "SELECT COUNT(*) AS n FROM inbound_messages") == 1


@pytest.mark.parametrize("dialect", ["postgresql", "sqlite"])
def test_a_part_is_kept_once(request, dialect):
    database = request.getfixturevalue("pg" if dialect == "postgresql" else "lite")
    part = InboundSms(message_id="PART-1", msisdn="33612345621", to=CAMPAIGN, text="Bon",
                      type="text", keyword="", message_timestamp=None, concat_ref="7",
                      concat_part=1, concat_total=2)
    results = []
    for at in (NOW, NOW + timedelta(days=10)):
        with database.transaction() as tx:
            results.append(inbound.insert_part(tx, 1, "sender", part, at))
    assert results == [True, False]
    assert _count(database, "SELECT COUNT(*) AS n FROM inbound_parts") == 1


@pytest.mark.parametrize("dialect", ["postgresql", "sqlite"])
def test_dedup_keys_are_pruned_past_the_horizon_and_kept_within(request, dialect):
    database = request.getfixturevalue("pg" if dialect == "postgresql" else "lite")
    _insert(database, "OLD", NOW - inbound.DEDUP_HORIZON - timedelta(hours=1))
    _insert(database, "RECENT", NOW - inbound.DEDUP_HORIZON + timedelta(hours=1))
    assert _purge(database, NOW)["dedup_keys"] == 1
    with database.transaction() as tx:
        keys = {row["dedup_key"] for row in tx.execute(
            "SELECT dedup_key FROM inbound_dedup").fetchall()}
    assert keys == {"RECENT"}
    assert _insert(database, "RECENT", NOW) is None, "still within the horizon"


def test_a_longer_horizon_keeps_keys_longer(pg):
    _insert(pg, "OLD", NOW - timedelta(days=8))
    assert _purge(pg, NOW, dedup_horizon=timedelta(days=9))["dedup_keys"] == 0
    assert _purge(pg, NOW)["dedup_keys"] == 1


# --- partitions -------------------------------------------------------------------------

def test_months_are_created_ahead_once(pg):
    at = _month(2031, 3)
    with pg.transaction() as tx:
        created = partitions.ensure_partitions(tx, at)
    assert sorted(created) == sorted(f"{table}_p2031_{month:02d}"
                                     for table in partitions.PARTITIONED for month in (3, 4, 5))
    with pg.transaction() as tx:
        assert partitions.ensure_partitions(tx, at) == []
        assert {"inbound_messages_p2031_03", "inbound_messages_p2031_05",
                "inbound_messages_default"} <= _partitions(tx, "inbound_messages")


def test_two_purges_at_once_create_each_month_once(pg):
    """The first creates the months in an open transaction; the second waits on its locks
    (the partition lock, or the DEFAULT partition it reads), then finds the months there
    and creates nothing."""
    at = _month(2032, 7)
    results, errors = {}, []

    def second() -> None:
        try:
            with pg.transaction() as tx:
                results["second"] = partitions.ensure_partitions(tx, at)
        except Exception as error:  # reported by the assertion below
            errors.append(error)

    with pg.transaction() as tx:
        results["first"] = partitions.ensure_partitions(tx, at)
        thread = threading.Thread(target=second)
        thread.start()
        wait_for(lambda: _count(pg, _WAITING) >= 1,
                 timeout=10, message="the second purge to wait on the first's locks")
    thread.join(timeout=30)
    assert not errors and not thread.is_alive()
    assert len(results["first"]) == 6 and results["second"] == []


def test_the_default_partition_takes_a_message_no_month_holds_then_gives_it_to_its_month(pg):
    far = _month(2040, 2)
    message_id = _insert(pg, "FAR", far)
    assert message_id is not None, "recorded although no month holds it"
    assert _count(pg, "SELECT COUNT(*) AS n FROM inbound_messages_default") == 1
    with pg.transaction() as tx:
        created = partitions.ensure_partitions(tx, NOW)
    assert "inbound_messages_p2040_02" in created
    assert _count(pg, "SELECT COUNT(*) AS n FROM inbound_messages_default") == 0
    assert _count(pg, "SELECT COUNT(*) AS n FROM inbound_messages_p2040_02 WHERE id = %(id)s",
                  {"id": message_id}) == 1


# --- retention --------------------------------------------------------------------------

def test_retention_drops_old_months_and_keeps_the_evidence_senders_messages(pg):
    for month in (5, 6, 7, 8, 9, 10, 11):
        _insert(pg, f"ORD-{month}", _month(2026, month), sender="ordinary")
        _insert(pg, f"ABU-{month}", _month(2026, month), sender="abusive")
    _flag(pg, "abusive", _month(2026, 5))
    with pg.transaction() as tx:
        before = evidence.evidence_messages(tx, 1, datetime(2020, 1, 1, tzinfo=UTC))
    purged = _purge(pg, NOW)  # cutoff 2026-08-27: May, June and July go whole
    assert purged["partitions_dropped"] >= 3, "May, June, July of inbound_messages"
    assert purged["texts"] == 3 + 1, "3 ordinary messages dropped, August's erased"
    with pg.transaction() as tx:
        kept = _partitions(tx, "inbound_messages")
        after = evidence.evidence_messages(tx, 1, datetime(2020, 1, 1, tzinfo=UTC))
        ordinary = tx.execute("SELECT dedup_key, text FROM inbound_messages"
                              " WHERE sender = 'ordinary' ORDER BY received_at").fetchall()
    assert not kept & {f"inbound_messages_p2026_0{month}" for month in (5, 6, 7)}
    assert "inbound_messages_p2026_08" in kept
    assert after == before and len(after) == 7, "the export is unchanged"
    assert [row["dedup_key"] for row in ordinary] == ["ORD-8", "ORD-9", "ORD-10", "ORD-11"]
    assert ordinary[0]["text"] == "" and ordinary[1]["text"] == "text of ORD-9"
    assert _count(pg, "SELECT COUNT(*) AS n FROM evidence_messages") == 3


def test_kept_evidence_messages_go_when_the_evidence_expires(pg):
    for month in (5, 9):
        _insert(pg, f"ABU-{month}", _month(2026, month), sender="abusive")
    _flag(pg, "abusive", _month(2026, 5))
    _purge(pg, NOW)
    assert _count(pg, "SELECT COUNT(*) AS n FROM evidence_messages") == 1
    later = _month(2027, 6)  # the evidence is 13 months old
    purged = _purge(pg, later)
    assert purged["evidence"] == 1
    assert _count(pg, "SELECT COUNT(*) AS n FROM evidence_messages") == 0
    assert _count(pg, "SELECT COUNT(*) AS n FROM inbound_messages") == 0
    assert purged["texts"] == 2, "May's copy deleted, September's month dropped"


def test_a_purge_twice_changes_nothing_more(pg):
    _insert(pg, "ORD", _month(2026, 6))
    assert _purge(pg, NOW)["partitions_dropped"] >= 1
    again = _purge(pg, NOW)
    assert again["partitions_dropped"] == 0 and again["texts"] == 0


def test_sqlite_purge_erases_texts_in_place_and_keeps_evidence(lite):
    _insert(lite, "ORD", _month(2026, 6), sender="ordinary")
    _insert(lite, "ABU", _month(2026, 6), sender="abusive")
    _flag(lite, "abusive", _month(2026, 6))
    purged = _purge(lite, NOW)
    assert purged["texts"] == 1 and purged["partitions_dropped"] == 0
    with lite.transaction() as tx:
        texts = {row["sender"]: row["text"] for row in tx.execute(
            "SELECT sender, text FROM inbound_messages").fetchall()}
        exported = evidence.evidence_messages(tx, 1, datetime(2020, 1, 1, tzinfo=UTC))
    assert texts == {"ordinary": "", "abusive": "text of ABU"}
    assert [row["text"] for row in exported] == ["text of ABU"]


# --- property: one record per key within the horizon ------------------------------------

_STEPS = st.lists(st.one_of(
    st.tuples(st.just("insert"), st.sampled_from("ABCDE"), st.integers(0, 3)),
    st.tuples(st.just("wait"), st.integers(1, 20)),
    st.just(("purge",))), min_size=1, max_size=25)


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=_STEPS)
def test_any_interleaving_of_inserts_and_purges_keeps_one_record_per_key(pg_url, steps):
    """A clock that moves on by days; inserts of keys (redeliveries, some after the
    horizon), purges. A key claimed within the horizon is refused; each key within the
    horizon has exactly one message."""
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(RESET)
    database = Database(pg_url, pool_size=1)
    add_test_campaign(database)
    clock, claimed = NOW, {}  # key -> when the model says it was claimed
    try:
        for index, step in enumerate(steps):
            if step[0] == "wait":
                clock += timedelta(days=step[1])
            elif step[0] == "purge":
                _purge(database, clock)
                claimed = {key: at for key, at in claimed.items()
                           if at >= clock - inbound.DEDUP_HORIZON}
            else:
                key, at = step[1], clock - timedelta(hours=step[2])
                recorded = _insert(database, key, at)
                assert (recorded is None) == (key in claimed), (index, step)
                claimed.setdefault(key, at)
        with database.transaction() as tx:
            for key, at in claimed.items():
                if at >= clock - inbound.DEDUP_HORIZON:
                    found = tx.execute("SELECT COUNT(*) AS n FROM inbound_messages"
                                       " WHERE dedup_key = %(key)s AND received_at >= %(at)s",
                                       {"key": key, "at": at}).fetchone()["n"]
                    assert found == 1, key
    finally:
        database.close()


def test_beat_keeps_keys_past_a_longer_signature_max_age(pg):
    """A signed webhook replayed within RELOUS_SIGNATURE_MAX_AGE must stay a duplicate."""
    _insert(pg, "EIGHT-DAYS", NOW - timedelta(days=8))
    ten_days = replace(Settings.from_env(), signature_max_age=10 * 86400)
    with pg.transaction() as tx:
        assert housekeeping.purge(tx, ten_days, NOW)["dedup_keys"] == 0
    with pg.transaction() as tx:
        assert housekeeping.purge(tx, Settings.from_env(), NOW)["dedup_keys"] == 1
