"""`relous rules show|set` and the record-only counts in `relous status`: an operator tries
a rule in record mode on live traffic, sees what it would have stopped, then enforces it."""

from __future__ import annotations

import os
from datetime import UTC, datetime

from click.testing import CliRunner

from shared.rules.abuse import load_lexicon
from shared.store.db import database_for
from shared.vonage.webhooks import parse_inbound
from tests.helpers import SECRET_KEY, inbound
from workers.cli import main
from workers.inbound import Keys, judge_batch


def _relous(*args: str):
    return CliRunner().invoke(main, list(args))


def _flood(number: str, msisdn: str, count: int) -> list[str]:
    with database_for(os.environ["DATABASE_URL"]).transaction() as tx:
        return [outcome.verdict for outcome in judge_batch(
            tx, [parse_inbound(inbound(msisdn=msisdn, to=number, text="Réponds salope"))
                 for _ in range(count)], Keys(SECRET_KEY), datetime.now(UTC), load_lexicon())]


def test_a_rule_tried_in_record_mode_counts_what_it_would_have_stopped(db, campaign):
    number = campaign()
    shown = _relous("rules", "show", number)
    assert shown.exit_code == 0
    assert "velocity          enforce                  -  more than 5/min" in shown.output
    assert "threshold" not in shown.output or "= floor" in shown.output
    assert "from 30 = floor" in shown.output and "above 120 = floor" in shown.output
    changed = _relous("rules", "set", number, "velocity=record", "repetition=RECORD")
    assert changed.exit_code == 0, changed.output
    assert f"campaign {number}: velocity record, repetition record" in changed.output
    verdicts = _flood(number, "33612340001", 8)
    assert verdicts == ["reply"] + ["suppress"] * 7, "the reply window, no block"
    reasons = [row["reasons"] for row in db.execute(
        "SELECT reasons FROM inbound_messages ORDER BY id").fetchall()]
    assert sum("would block: velocity: 6 messages in a minute (limit 5)" in reason
               for reason in reasons) == 1
    assert db.execute("SELECT COUNT(*) AS n FROM inbound_messages WHERE would_stop <> ''"
                      ).fetchone()["n"] == 6
    shown = _relous("rules", "show", number).output
    assert "velocity          record                   3" in shown
    assert "repetition        record                   6" in shown
    status = _relous("status").output
    assert (f"{number}: record-only rules, would have stopped in 24 h: velocity 3, "
            f"repetition 6") in status
    assert _relous("rules", "set", number, "velocity=enforce").exit_code == 0
    assert _flood(number, "33612340002", 8)[-1] == "block"


def test_bad_rules_and_modes_are_refused_in_one_line(db, campaign):
    number = campaign()
    bad_mode = _relous("rules", "set", number, "lexicon=maybe")
    assert bad_mode.exit_code == 2 and "enforce, record, off" in bad_mode.output
    bad_rule = _relous("rules", "set", number, "insults=off")
    assert bad_rule.exit_code == 2 and "unknown rule 'insults'" in bad_rule.output
    assert _relous("rules", "set", number, "lexicon").exit_code == 2
    missing = _relous("rules", "show", "33700000009")
    assert missing.exit_code == 1 and "no campaign answers on 33700000009" in missing.output
