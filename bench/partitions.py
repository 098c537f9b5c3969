"""Retention benchmark (issue 14): the purge of a month of inbound messages past the
retention, the old way (one UPDATE erasing every text, migration 0007's unpartitioned
table) against the new (evidence senders' messages copied out, the month counted,
detached and dropped), on the same number of rows, in the same run.

Two scratch databases on the local PostgreSQL (dropped at the end): one at migration 0007,
one fully migrated. Each gets ROWS messages received four months ago, 1 % of them from 100
senders kept as evidence, and its purge is timed.

    .venv/bin/python bench/partitions.py [--rows 1000000]
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from shared.store import evidence, partitions
from shared.store.db import Database, upgrade

ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
RETENTION, EVIDENCE_RETENTION = timedelta(days=90), timedelta(days=365)
# The purge of migration 0007's code (shared/store/evidence.py before issue 14): its
# message step, the one that grows with the table.
OLD_ERASE = (
    "UPDATE inbound_messages SET text = '', keyword = '', fingerprint = ''"
    " WHERE received_at < %(cutoff)s AND (text <> '' OR keyword <> '' OR fingerprint <> '')"
    " AND NOT EXISTS (SELECT 1 FROM evidence e WHERE e.campaign_id ="
    " inbound_messages.campaign_id AND e.sender = inbound_messages.sender)")


def url_of(name: str) -> str:
    return ADMIN_URL.rsplit("/", 1)[0] + "/" + name


def fresh(name: str, up_to: int | None) -> str:
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    database = Database(url_of(name), pool_size=1)
    upgrade(database, up_to=up_to)
    database.close()
    return url_of(name)


def fill(url: str, rows: int, month: datetime) -> None:
    """ROWS messages spread over `month`, 1 % from the 100 evidence senders."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO campaigns (number, reply_text, created_at)"
                     " VALUES ('33700000001', 'Stop.', %s)", (month,))
        conn.execute(
            "INSERT INTO inbound_messages (dedup_key, campaign_id, to_number, sender, text,"
            " message_type, keyword, received_at, verdict, fingerprint)"
            " SELECT 'MSG' || n, 1, '33700000001',"
            " CASE WHEN n %% 100 = 0 THEN 'abusive' || (n / 100 %% 100) ELSE 'sender' || n END,"
            " 'Bonjour, ceci est le message numero ' || n, 'text', 'BONJOUR',"
            " %(month)s + (n %% 2000000) * interval '1 second', 'reply', md5(n::text)"
            " FROM generate_series(1, %(rows)s) AS n", {"month": month, "rows": rows})
        conn.execute("INSERT INTO evidence (campaign_id, sender, encrypted_number,"
                     " flagged_at, reasons) SELECT 1, 'abusive' || n, 'sealed', %s, 'velocity'"
                     " FROM generate_series(0, 99) AS n", (month + timedelta(days=100),))
        conn.execute("VACUUM ANALYZE")


def size(url: str) -> str:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT pg_size_pretty(pg_database_size(current_database()))"
                           ).fetchone()
    assert row is not None
    return str(row[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    rows = parser.parse_args().rows
    now = datetime.now(UTC)
    month = partitions.add_months(partitions.month_start(now), -4)
    old_url = fresh("relous_scratch_partitions_old", up_to=7)
    new_url = fresh("relous_scratch_partitions_new", up_to=None)
    try:
        fill(old_url, rows, month)
        new_db = Database(new_url, pool_size=1)
        with new_db.transaction() as tx:  # the month exists before its rows, as in production
            partitions.ensure_partitions(tx, month)
        fill(new_url, rows, month)
        print(f"{rows:,} messages of {month:%Y-%m}, database sizes: 0007 {size(old_url)},"
              f" partitioned {size(new_url)}")

        with psycopg.connect(old_url) as conn:
            started = time.perf_counter()
            erased = conn.execute(OLD_ERASE, {"cutoff": now - RETENTION}).rowcount
            conn.commit()
            old_seconds = time.perf_counter() - started
        print(f"old purge (UPDATE):        {old_seconds:8.3f} s, {erased:,} texts erased,"
              f" database now {size(old_url)}")

        started = time.perf_counter()
        with new_db.transaction() as tx:
            purged = evidence.purge(tx, now, RETENTION, EVIDENCE_RETENTION)
        new_seconds = time.perf_counter() - started
        new_db.close()
        with psycopg.connect(new_url) as conn:
            counted = conn.execute("SELECT COUNT(*) FROM evidence_messages").fetchone()
        kept = counted[0] if counted else 0
        print(f"new purge (drop a month):  {new_seconds:8.3f} s, {purged['texts']:,} texts"
              f" gone, {purged['partitions_dropped']} partition(s) dropped, {kept:,} evidence"
              f" messages kept, database now {size(new_url)}")
        print(f"ratio old/new: {old_seconds / new_seconds:.1f}x")
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
            for name in ("relous_scratch_partitions_old", "relous_scratch_partitions_new"):
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
