"""Red team of the partitioned storage (issue 14): each test is an attack that broke a
promise of shared/store/partitions.py or evidence.purge, confirmed by an experiment, and
shows it stopped by its fix (SECURITY.md, "Partitioned storage (issue 14)").

The tests run on a PostgreSQL database of this module's own (they create months that
other tests' "now" may need), as tests/store/test_partitions.py does.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

from shared.rules.messages import InboundSms
from shared.settings import Settings
from shared.store import evidence, inbound, parked, partitions
from shared.store.db import Database
from tests.helpers import wait_for
from tests.store.conftest import CAMPAIGN, NOW
from workers import housekeeping

RETENTION, EVIDENCE_RETENTION = timedelta(days=90), timedelta(days=365)
_WAITING = ("SELECT COUNT(*) AS n FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            " AND datname = current_database()")


def _sms(message_id: str) -> InboundSms:
    return InboundSms(message_id=message_id, msisdn="33612345621", to=CAMPAIGN, text="Salut",
                      type="text", keyword="SALUT", message_timestamp=None,
                      concat_ref=None, concat_part=None, concat_total=None)


def _insert(database: Database, key: str, at: datetime) -> int | None:
    with database.transaction() as tx:
        return inbound.insert_inbound(tx, key, 1, _sms(key), "ordinary", f"text of {key}",
                                      "k" + key, at, "reply", "")


def _count(database: Database, sql: str) -> int:
    with database.transaction() as tx:
        return int(tx.execute(sql).fetchone()["n"])


def test_an_insert_racing_the_creation_of_its_month_is_recorded(pg):
    """Beat stopped for months: this month's messages land in the DEFAULT partition. The
    purge that creates the month (moving those rows, then ATTACH) holds the DEFAULT
    partition; an insert routed there waits, then fails its partition check once the
    month is attached (CheckViolation: the batch falls back to one by one, a message
    retried while the race lasts is parked at once). The insert must be recorded."""
    at = datetime(2041, 5, 10, tzinfo=UTC)  # no month of 2041 exists
    assert _insert(pg, "BEFORE", at) is not None
    results: dict[str, object] = {}

    def racing_insert() -> None:
        try:
            results["id"] = _insert(pg, "DURING", at + timedelta(minutes=1))
        except Exception as error:  # reported by the assertion below
            results["error"] = repr(error)

    with pg.transaction() as tx:
        assert "inbound_messages_p2041_05" in partitions.ensure_partitions(tx, at)
        thread = threading.Thread(target=racing_insert)
        thread.start()
        wait_for(lambda: _count(pg, _WAITING) >= 1,
                 timeout=10, message="the insert to wait on the purge's partition locks")
    thread.join(timeout=30)
    assert "error" not in results, results
    assert _count(pg, "SELECT COUNT(*) AS n FROM inbound_messages") == 2


def test_the_purge_does_not_rewrite_rows_it_then_drops(pg):
    """Rows of an expired month waiting in the DEFAULT partition (beat stopped, or no month
    created for them) are adopted by their month and dropped by the same purge; the
    erasing UPDATE, whose lower bound is computed from the months that existed before the
    adoption, rewrites every one of them first. 1.6 million such rows: the UPDATE passed
    the 30 s statement_timeout and the purge (retention) failed, every day."""
    may = datetime(2026, 5, 15, 12, tzinfo=UTC)  # a month with no partition: DEFAULT
    for index in range(50):
        _insert(pg, f"MAY-{index}", may + timedelta(minutes=index))
    assert _count(pg, "SELECT COUNT(*) AS n FROM inbound_messages_default") == 50
    with pg.transaction() as tx:
        purged = evidence.purge(tx, NOW, RETENTION, EVIDENCE_RETENTION)
        rewritten = tx.execute(
            "SELECT COALESCE(SUM(n_tup_upd), 0) AS n FROM pg_stat_xact_user_tables"
            " WHERE relname = 'inbound_messages_default'").fetchone()["n"]
    assert purged["partitions_dropped"] >= 1, "May adopted then dropped"
    assert _count(pg, "SELECT COUNT(*) AS n FROM inbound_messages") == 0
    assert rewritten == 0, f"{rewritten} rows erased one by one before their month was dropped"


def test_a_parked_twin_retried_after_the_horizon_is_not_recorded_twice(pg):
    """The same messageId twice in the queue (a publish retried after a lost confirm): one
    copy is recorded, the other parked. `relous parked retry` "publishes them again
    (deduplicated, so nobody is answered twice)" (README), however long after; the purge
    prunes the key after DEDUP_HORIZON and the retry is recorded a second time
    (PostgreSQL: 2 rows; SQLite still refuses it by its UNIQUE column)."""
    received = NOW - inbound.DEDUP_HORIZON - timedelta(days=1)
    assert _insert(pg, "TWIN", received) is not None
    with pg.transaction() as tx:
        parked.park(tx, "inbound", "TWIN", "sealed-payload", "DatabaseRefused", received)
    with pg.transaction() as tx:
        evidence.purge(tx, NOW, RETENTION, EVIDENCE_RETENTION)
    assert _insert(pg, "TWIN", NOW) is None, "the parked copy, retried, recorded again"
    assert _count(pg, "SELECT COUNT(*) AS n FROM inbound_messages") == 1


def test_no_parked_number_survives_the_retention(pg):
    """CONTRACT (privacy): a raw number is kept only on a pending reply, or encrypted for a
    sender flagged abusive until the evidence retention. A parked message holds any
    sender's number and text (sealed) and no purge ever deletes it."""
    long_ago = NOW - RETENTION - timedelta(days=30)
    with pg.transaction() as tx:
        parked.park(tx, "inbound", "OLD-PARKED", "sealed-number-and-text", "Refused", long_ago)
    with pg.transaction() as tx:
        housekeeping.purge(tx, Settings.from_env(), NOW)
    assert _count(pg, "SELECT COUNT(*) AS n FROM parked_messages") == 0
