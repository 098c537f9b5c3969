"""`relous db upgrade`, the Procfile's `release`, run twice at once on a fresh database (two
deploys overlapping): both succeed, and every migration is applied once."""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import psycopg
import pytest

from shared.store.db import migrations
from tests.helpers import ADMIN_DATABASE_URL, database_url, venv_bin

TRIALS = 4


@pytest.fixture
def fresh_database():
    created = []

    def make() -> str:
        name = f"relous_migrate_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(ADMIN_DATABASE_URL, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        created.append(name)
        return database_url(name)

    yield make
    with psycopg.connect(ADMIN_DATABASE_URL, autocommit=True) as conn:
        for name in created:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_two_concurrent_upgrades_of_a_fresh_database_both_succeed(fresh_database, tmp_path):
    relous = str(Path(venv_bin()) / "relous")
    for _ in range(TRIALS):
        url = fresh_database()
        env = dict(os.environ, DATABASE_URL=url)
        runs = [subprocess.Popen([relous, "db", "upgrade"], env=env, cwd=tmp_path,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for _ in range(2)]
        results = [(run.wait(timeout=120), run.stderr.read() if run.stderr else "")
                   for run in runs]
        assert [code for code, _ in results] == [0, 0], results
        with psycopg.connect(url) as conn:
            applied = conn.execute("SELECT version FROM schema_migrations ORDER BY version")
            assert [row[0] for row in applied] == [version for version, _, _ in migrations()]


def test_each_dialect_gets_its_own_file_of_a_version_written_twice():
    from shared.store.db import migrations

    for dialect in ("postgresql", "sqlite"):
        found = migrations(dialect)
        versions = [version for version, _, _ in found]
        assert versions == sorted(set(versions)), "each version once"
        names = {version: name for version, name, _ in found}
        assert names[8] == f"0008_partitions.{dialect}.sql"
        assert names[1] == "0001_initial.sql", "a common file for both"


def test_a_do_block_stays_one_statement():
    from shared.store.db import _statements

    sql = ("-- a comment; with a semicolon\nCREATE TABLE a (x INT);\n"
           "DO $$ BEGIN PERFORM 1; PERFORM 2; END $$;\nSELECT 1;")
    assert _statements(sql) == ["CREATE TABLE a (x INT)",
                                "DO $$ BEGIN PERFORM 1; PERFORM 2; END $$", "SELECT 1"]
