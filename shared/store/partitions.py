"""Monthly partitions of the tables that grow with inbound traffic (PostgreSQL only).

`inbound_messages` and `inbound_parts` are partitioned by month (UTC) of `received_at`,
our receive time (migration 0008). Each month is a table `TABLE_pYYYY_MM`; a DEFAULT
partition takes any row no month holds yet, so that an insert never fails. The purge
keeps months ready ahead (`ensure_partitions`) and drops months wholly past the retention
(`expired_partitions`, `drop_partition`): a month goes in one catalog change, where an
UPDATE or DELETE would rewrite each of its rows. SQLite has no partitions: every function
here does nothing there.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from shared.store.db import Transaction

PARTITIONED = ("inbound_messages", "inbound_parts")
# Months kept ready after the current one: beat's daily purge creates them, so a beat
# stopped for up to two months still finds its month (then the DEFAULT partition).
MONTHS_AHEAD = 2
# One key for every partition change ("relous-p" in ASCII): two purges at once (or a purge
# and a migration) create a month one after the other, the second finding it there.
_PARTITION_LOCK = 0x72656C6F75732D70
_MONTH_NAME = re.compile(r"_p(\d{4})_(\d{2})$")


def month_start(at: datetime) -> datetime:
    """The first instant (UTC) of `at`'s month."""
    at = at.astimezone(UTC)
    return datetime(at.year, at.month, 1, tzinfo=UTC)


def add_months(month: datetime, count: int) -> datetime:
    index = month.year * 12 + month.month - 1 + count
    return datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC)


def partition_name(table: str, month: datetime) -> str:
    return f"{table}_p{month.year:04d}_{month.month:02d}"


def ensure_partitions(tx: Transaction, now: datetime) -> list[str]:
    """Create the partitions of this month and the next MONTHS_AHEAD ones, and of any
    month whose rows wait in the DEFAULT partition (moved into their month); return the
    partitions created. Idempotent; concurrent callers take turns (an advisory lock)."""
    if tx.dialect != "postgresql":
        return []
    first = month_start(now)
    wanted = [add_months(first, count) for count in range(MONTHS_AHEAD + 1)]
    created = []
    for table in PARTITIONED:
        months = set(wanted) | set(_months_in_default(tx, table))
        missing = [month for month in sorted(months)
                   if not _exists(tx, partition_name(table, month))]
        if not missing:
            continue
        tx.execute("SELECT pg_advisory_xact_lock(%(key)s)", {"key": _PARTITION_LOCK})
        for month in missing:
            if _create_partition(tx, table, month):
                created.append(partition_name(table, month))
    return created


def expired_partitions(tx: Transaction, table: str, before: datetime) -> list[str]:
    """The month partitions of `table` whose every row was received before `before`
    (their month ended by then), oldest first."""
    if tx.dialect != "postgresql":
        return []
    rows = tx.execute(
        "SELECT c.relname AS name FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = %(table)s::regclass ORDER BY c.relname",
        {"table": table}).fetchall()
    expired = []
    for row in rows:
        match = _MONTH_NAME.search(row["name"])
        if match and row["name"] == partition_name(table, _month(match)) \
                and add_months(_month(match), 1) <= before:
            expired.append(row["name"])
    return expired


def month_end(partition: str) -> datetime:
    """The end (exclusive) of a month partition's range."""
    match = _MONTH_NAME.search(partition)
    assert match is not None, partition
    return add_months(_month(match), 1)


def drop_partition(tx: Transaction, table: str, partition: str) -> None:
    """Detach and drop one month. DETACH locks the parent (ACCESS EXCLUSIVE) until the
    transaction ends: callers do it last, just before they commit."""
    tx.execute(f'ALTER TABLE {table} DETACH PARTITION "{partition}"')
    tx.execute(f'DROP TABLE "{partition}"')


def _month(match: re.Match[str]) -> datetime:
    return datetime(int(match.group(1)), int(match.group(2)), 1, tzinfo=UTC)


def _exists(tx: Transaction, name: str) -> bool:
    return bool(tx.execute("SELECT to_regclass(%(name)s) IS NOT NULL AS ok",
                           {"name": name}).fetchone()["ok"])


def _months_in_default(tx: Transaction, table: str) -> list[datetime]:
    if not _exists(tx, f"{table}_default"):
        return []
    rows = tx.execute(
        f"SELECT DISTINCT date_trunc('month', received_at, 'UTC') AS month"  # noqa: S608
        f" FROM {table}_default").fetchall()
    return [month_start(row["month"]) for row in rows]


def _create_partition(tx: Transaction, table: str, month: datetime) -> bool:
    """Create one month's partition (under the advisory lock): built aside, filled with
    its rows from the DEFAULT partition, then attached (ATTACH takes a lighter lock on the
    parent than CREATE … PARTITION OF). False when another caller made it meanwhile."""
    name = partition_name(table, month)
    if _exists(tx, name):
        return False
    bounds = {"low": month, "high": add_months(month, 1)}
    tx.execute(f'CREATE TABLE "{name}" (LIKE {table} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)')
    # No insert may land in DEFAULT between the move and the attach: ATTACH would then
    # find a row of its month there and fail the insert (a CheckViolation). Held until
    # the caller commits: the purge does this last.
    tx.execute(f"LOCK TABLE {table} IN SHARE ROW EXCLUSIVE MODE")
    if _exists(tx, f"{table}_default"):
        tx.execute(
            f'WITH moved AS (DELETE FROM "{table}_default" WHERE received_at >= %(low)s'  # noqa: S608
            f" AND received_at < %(high)s RETURNING *) INSERT INTO \"{name}\" SELECT * FROM moved",
            bounds)
    # psycopg sends no parameters with DDL: the bounds are written as literals (ISO
    # timestamps made here, never user input).
    tx.execute(f'ALTER TABLE {table} ATTACH PARTITION "{name}" FOR VALUES'
               f" FROM ('{bounds['low'].isoformat()}') TO ('{bounds['high'].isoformat()}')")
    return True
