"""What a person sees when the `relous` command cannot do its job: one line on stderr that
says what to do, the exit code CONTRACT.md gives, and never a traceback. Run as the real
command, in a process of its own, with only the environment each case names."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.helpers import venv_bin

CAMPAIGN = "33700000001"
# Every command that reads or writes the database, with valid arguments.
DATABASE_COMMANDS = [
    ["campaign", "add", CAMPAIGN, "--reply", "Stop."],
    ["campaign", "list"],
    ["campaign", "pause", CAMPAIGN],
    ["campaign", "resume", CAMPAIGN],
    ["campaign", "set", CAMPAIGN, "sender_per_minute=5"],
    ["budget", "set", CAMPAIGN, "--daily", "1"],
    ["template", "check", "Stop.", "--campaign", CAMPAIGN],
    ["sender", "block", "33612345678"],
    ["sender", "unblock", "33612345678"],
    ["status"],
    ["evidence", "export", "--campaign", CAMPAIGN, "--out", "evidence.csv"],
    ["purge"],
    ["rules", "show", CAMPAIGN],
    ["rules", "set", CAMPAIGN, "lexicon=record"],
    ["explain", "33612345678"],
    ["explain", "--message", "1"],
]
KEYS = {"RELOUS_SECRET_KEY": "cli-test-secret-key-0123456789",
        "RELOUS_EVIDENCE_KEY": "J0IhnNDVUCQ6ZR7nKp7r1g5KcS9M3t1yW4O9bWrbsVw="}


def relous(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    base = {"PATH": os.environ["PATH"], "HOME": str(cwd), "LANG": "C.UTF-8"}
    return subprocess.run([str(Path(venv_bin()) / "relous"), *args], env=base | env,
                          cwd=cwd, capture_output=True, text=True, timeout=60, check=False)


def test_status_on_sqlite_needs_no_key_and_no_broker(tmp_path):
    """An operator's first look, on the embedded default: no production keys, no RabbitMQ."""
    env = {"DATABASE_URL": f"sqlite:///{tmp_path / 'relous.db'}",
           "RELOUS_BROKER_DIR": str(tmp_path / "broker")}
    assert relous(["db", "upgrade"], env, tmp_path).returncode == 0
    assert relous(["campaign", "add", CAMPAIGN, "--reply", "Stop."], env,
                  tmp_path).returncode == 0
    shown = relous(["status"], env, tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert CAMPAIGN in shown.stdout and "Traceback" not in shown.stderr
    assert "-0.00" not in shown.stdout


@pytest.mark.parametrize("args", DATABASE_COMMANDS, ids=lambda args: " ".join(args[:2]))
def test_an_unmigrated_database_says_to_run_db_upgrade(tmp_path, args):
    env = {"DATABASE_URL": f"sqlite:///{tmp_path / 'fresh.db'}",
           "RELOUS_BROKER_DIR": str(tmp_path / "broker"), **KEYS}
    result = relous(args, env, tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert "relous db upgrade" in result.stderr and "Traceback" not in result.stderr


def test_an_unreachable_database_is_one_line(tmp_path):
    env = {"DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"}
    result = relous(["campaign", "list"], env, tmp_path)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "DATABASE_URL" in result.stderr
