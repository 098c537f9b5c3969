"""The `relous` command line, against the test PostgreSQL database."""

from __future__ import annotations

from decimal import Decimal

import pytest
from click.testing import CliRunner

from workers.cli import main


@pytest.fixture
def relous(db):
    runner = CliRunner()

    def run(*args: str):
        return runner.invoke(main, list(args), catch_exceptions=False)

    return run


def test_campaign_add_list_pause_resume(relous, db):
    added = relous("campaign", "add", "33700000002", "--reply", "Laissez-la tranquille.",
                   "--delay", "60")
    assert added.exit_code == 0, added.output
    assert "1 segment(s), GSM-7" in added.output
    listing = relous("campaign", "list")
    assert "33700000002" in listing.output and "active" in listing.output
    assert relous("campaign", "pause", "33700000002").exit_code == 0
    assert "paused" in relous("campaign", "list").output
    assert relous("campaign", "resume", "33700000002").exit_code == 0
    row = db.execute("SELECT paused, reply_delay_seconds FROM campaigns").fetchone()
    assert (row["paused"], row["reply_delay_seconds"]) == (False, 60)


def test_reply_over_one_segment_is_refused_without_allow_multipart(relous, db):
    long_reply = "Merci d’arrêter de lui écrire, elle ne répondra pas. " * 2
    refused = relous("campaign", "add", "33700000003", "--reply", long_reply)
    assert refused.exit_code == 1
    assert "segments" in refused.output and "--allow-multipart" in refused.output
    assert db.execute("SELECT count(*) AS n FROM campaigns").fetchone()["n"] == 0
    accepted = relous("campaign", "add", "33700000003", "--reply", long_reply,
                      "--allow-multipart")
    assert accepted.exit_code == 0


def test_same_number_twice_is_refused(relous):
    assert relous("campaign", "add", "33700000004", "--reply", "Stop.").exit_code == 0
    again = relous("campaign", "add", "33700000004", "--reply", "Stop.")
    assert again.exit_code == 1 and "already" in again.output


@pytest.mark.parametrize("args", [
    ("campaign", "add", "+33700000005", "--reply", "Stop."),
    ("campaign", "add", "33700000005", "--reply", "Stop.", "--price-per-segment", "cheap"),
    ("campaign", "add", "33700000005", "--reply", "   "),
    ("campaign", "add", "33700000005"),
    ("campaign", "pause", "nope"),
])
def test_bad_usage_exits_2_with_one_line_on_stderr(relous, args):
    result = relous(*args)
    assert result.exit_code == 2
    assert result.output.strip()


def test_pausing_an_unknown_campaign_fails(relous):
    result = relous("campaign", "pause", "33799999999")
    assert result.exit_code == 1 and "campaign list" in result.output


def test_keys_prints_usable_values(relous):
    from cryptography.fernet import Fernet

    output = relous("keys").output
    values = dict(line.split("=", 1) for line in output.strip().splitlines())
    assert len(values["RELOUS_SECRET_KEY"]) >= 32
    Fernet(values["RELOUS_EVIDENCE_KEY"])


def test_db_upgrade_is_idempotent(relous):
    result = relous("db", "upgrade")
    assert result.exit_code == 0 and "applied 0 migration(s)" in result.output


def test_template_check_reports_and_exits_1_above_one_segment(relous):
    ok = relous("template", "check", "Laissez-la tranquille.")
    assert ok.exit_code == 0
    assert "encoding: GSM-7" in ok.output and "segments: 1" in ok.output
    costly = relous("template", "check", "Merci d’arrêter. " * 6, "--price-per-segment",
                    "0.10")
    assert costly.exit_code == 1
    assert "UCS-2" in costly.output and "suggestion" in costly.output
    assert "'’'" in costly.output, "names the character forcing UCS-2"


def test_changing_the_reply_text_runs_the_same_check(relous, db):
    relous("campaign", "add", "33700000006", "--reply", "Stop.")
    refused = relous("campaign", "set", "33700000006", "--reply", "Merci d’arrêter. " * 6)
    assert refused.exit_code == 1
    assert db.execute("SELECT reply_text FROM campaigns").fetchone()["reply_text"] == "Stop."
    assert relous("campaign", "set", "33700000006", "--reply", "Arretez.").exit_code == 0
    assert relous("campaign", "set", "33700000006", "sender_per_minute=3").exit_code == 0
    rules = db.execute("SELECT rules FROM campaigns").fetchone()["rules"]
    assert '"sender_per_minute": 3' in rules
    assert relous("campaign", "set", "33700000006", "no_such_rule=1").exit_code == 2


def test_budget_set_and_status(relous, db):
    relous("campaign", "add", "33700000007", "--reply", "Stop.")
    result = relous("budget", "set", "33700000007", "--hourly", "1.50", "--total", "20")
    assert result.exit_code == 0, result.output
    caps = db.execute("SELECT hourly_cap, daily_cap, total_cap FROM budgets").fetchone()
    assert (caps["hourly_cap"], caps["daily_cap"], caps["total_cap"]) == (1.5, None, 20)
    status = relous("status")
    row = next(line for line in status.output.splitlines() if line.startswith("337"))
    assert row.split()[:3] == ["33700000007", "active", "normal"]
    assert "hour 1.50/1.50" in row and "total 20.00/20.00" in row
    assert "queues: relous.inbound 0 ready" in status.output
    assert relous("budget", "set", "33700000007").exit_code == 2
    assert relous("budget", "set", "33700000007", "--daily", "-1").exit_code == 2
    assert relous("budget", "set", "33799999999", "--daily", "1").exit_code == 1


def test_sender_lists_store_pseudonyms_only(relous, db):
    blocked = relous("sender", "block", "33612345621")
    assert blocked.exit_code == 0 and "336••••••21" in blocked.output
    assert "33612345621" not in blocked.output
    row = db.execute("SELECT sender, list FROM sender_lists").fetchone()
    assert row["list"] == "block" and "33612345621" not in row["sender"]
    assert relous("sender", "unblock", "33612345621").exit_code == 0
    assert relous("sender", "unblock", "33612345621").exit_code == 1, "nothing left to lift"
    assert relous("sender", "allow", "33612345621").exit_code == 0
    assert db.execute("SELECT list FROM sender_lists").fetchone()["list"] == "allow"


def _flood_and_ordinary(db):
    """A flooder (blocked after 6 messages in a minute) and an ordinary sender."""
    import os
    from datetime import UTC, datetime

    from shared.settings import Settings
    from shared.store.campaigns import add_campaign
    from shared.store.db import database_for
    from shared.vonage.webhooks import parse_inbound
    from tests.helpers import inbound, record_flood, record_inbound

    settings = Settings.from_env()
    now = datetime.now(UTC)
    with database_for(os.environ["DATABASE_URL"]).transaction() as tx:
        add_campaign(tx, "33700000008", "Stop.", delay_seconds=0, window_seconds=86400,
                           price_per_segment=Decimal("0.08"), allow_multipart=False, now=now)
        record_flood(tx, "33700000008", "33611110000", "FLOOD", settings.secret_key,
                     settings.evidence_key, now)
        record_inbound(tx, parse_inbound(inbound(
            msisdn="33622220000", to="33700000008", message_id="NICE",
            text="Bonsoir Julie, tu viens samedi ?")), settings.secret_key, now, (),
            settings.evidence_key)


def test_evidence_export_holds_numbers_only_of_senders_flagged_abusive(relous, db, tmp_path):
    import csv
    import json

    _flood_and_ordinary(db)
    stored = db.execute("SELECT encrypted_number FROM evidence").fetchall()
    assert len(stored) == 1 and "33611110000" not in stored[0]["encrypted_number"]
    out = tmp_path / "evidence.csv"
    result = relous("evidence", "export", "--campaign", "33700000008", "--since",
                    "2020-01-01", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "33611110000" not in result.output, "numbers go to the file only"
    rows = list(csv.DictReader(out.open()))
    assert {row["sender_number"] for row in rows} == {"33611110000"}
    assert len(rows) == 8, "all the flagged sender's messages, the first ones included"
    assert "33622220000" not in out.read_text()
    assert all(row["flagged_for"].startswith("repetition") for row in rows)
    as_json = tmp_path / "evidence.json"
    assert relous("evidence", "export", "--campaign", "33700000008", "--out",
                  str(as_json)).exit_code == 0
    messages = json.loads(as_json.read_text())["messages"]
    assert {m["sender_number"] for m in messages} == {"33611110000"}


def test_purge_erases_old_texts_but_keeps_evidence_until_its_own_retention(relous, db):
    _flood_and_ordinary(db)
    db.execute("UPDATE inbound_messages SET received_at = received_at - interval '100 days'")
    assert "1 text(s)" in relous("purge").output, "the ordinary sender's text only"
    # The flagged sender's texts stay: in their month, or copied to evidence_messages when
    # the month was wholly past the retention and dropped (it depends on today's date).
    texts = db.execute("SELECT text FROM inbound_messages WHERE text <> '' UNION ALL"
                       " SELECT text FROM evidence_messages WHERE text <> ''").fetchall()
    assert len(texts) == 8
    db.execute("UPDATE evidence SET flagged_at = flagged_at - interval '400 days'")
    result = relous("purge")
    assert "8 text(s)" in result.output and "1 evidence record(s)" in result.output
    assert db.execute("SELECT COUNT(*) AS n FROM evidence").fetchone()["n"] == 0


@pytest.mark.parametrize("name", ["evidence.csv", "evidence.json"])
def test_evidence_export_is_readable_by_its_owner_only(relous, db, tmp_path, name):
    """The export holds raw numbers: 0600 whatever the umask, also over an older file
    that others could read (and that a reader may still hold open)."""
    import os
    import stat

    _flood_and_ordinary(db)
    out = tmp_path / name
    out.write_text("old export\n")
    out.chmod(0o666)
    held = out.open()
    previous = os.umask(0)
    try:
        result = relous("evidence", "export", "--campaign", "33700000008", "--out", str(out))
    finally:
        os.umask(previous)
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert "33611110000" in out.read_text()
    assert "33611110000" not in held.read(), "a handle on the old file sees no number"
    held.close()
    assert [path.name for path in tmp_path.iterdir()] == [name], "no temporary file left"
    fresh = tmp_path / "fresh" / name
    fresh.parent.mkdir()
    previous = os.umask(0)
    try:
        assert relous("evidence", "export", "--campaign", "33700000008", "--out",
                      str(fresh)).exit_code == 0
    finally:
        os.umask(previous)
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o600
