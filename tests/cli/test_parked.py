"""`relous parked`: an operator sees what could not be recorded, retries it once the cause
is gone, or drops it. No raw number is printed."""

from __future__ import annotations

from click.testing import CliRunner

from shared.vonage.webhooks import parse_inbound
from tests.helpers import VHOSTS, batch_request, inbound, wait_for, wait_until_idle
from workers import batching, tasks
from workers.cli import main


def _park_one(db, monkeypatch, message_id: str, msisdn: str) -> None:
    """A message the code cannot handle today: parked by the real policy."""
    real = batching.judge_batch

    def breaks(tx, messages, *args):
        if any(sms.message_id == message_id for sms in messages):
            raise ValueError("a bug, fixed by the next deploy")
        return real(tx, messages, *args)

    monkeypatch.setattr(batching, "judge_batch", breaks)
    tasks.process_inbound([batch_request(inbound(msisdn=msisdn, message_id=message_id))])
    monkeypatch.setattr(batching, "judge_batch", real)


def test_list_shows_the_parked_message_without_its_number(db, campaign, monkeypatch):
    campaign()
    _park_one(db, monkeypatch, "PARKED1", "33611122233")
    listing = CliRunner().invoke(main, ["parked", "list"])
    assert listing.exit_code == 0
    assert "PARKED1" in listing.output and "ValueError" in listing.output
    assert "33611122233" not in listing.output
    status = CliRunner().invoke(main, ["status"])
    assert "parked: 1 inbound, 0 receipt (relous parked list)" in status.output


def test_retry_queues_it_again_and_it_is_recorded_once(db, campaign, monkeypatch, worker,
                                                       fake_vonage):
    campaign()
    _park_one(db, monkeypatch, "PARKED2", "33611122244")
    [row] = db.execute("SELECT id FROM parked_messages").fetchall()
    retried = CliRunner().invoke(main, ["parked", "retry", str(row["id"])])
    assert retried.exit_code == 0, retried.output
    wait_for(lambda: db.execute("SELECT 1 FROM inbound_messages WHERE dedup_key = 'PARKED2'")
             .fetchone(), message="the retried message recorded")
    wait_until_idle(VHOSTS["test"])
    assert db.execute("SELECT COUNT(*) AS n FROM parked_messages").fetchone()["n"] == 0
    assert [sms.to for sms in fake_vonage.sent] == ["33611122244"]


def test_drop_removes_it_and_an_unknown_id_is_one_line(db, campaign, monkeypatch):
    campaign()
    _park_one(db, monkeypatch, "PARKED3", "33611122255")
    [row] = db.execute("SELECT id FROM parked_messages").fetchall()
    assert CliRunner().invoke(main, ["parked", "drop", str(row["id"])]).exit_code == 0
    missing = CliRunner().invoke(main, ["parked", "drop", str(row["id"])])
    assert missing.exit_code == 1 and "relous parked list" in missing.output
    assert CliRunner().invoke(main, ["parked", "retry"]).exit_code == 2


def test_parse_inbound_is_what_the_parked_payload_replays():
    """The parked payload is the task's own payload: a retry publishes what the web did."""
    payload = parse_inbound(inbound(message_id="SAME")).to_payload()
    assert batch_request(payload).args == (payload,)
