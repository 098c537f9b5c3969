"""`relous explain NUMBER|--message ID`: why a sender was, or was not, answered, told in
one command, without ever printing its number or its texts."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from click.testing import CliRunner, Result

from shared.rules.messages import DeliveryReceipt, SendResult, SentPart
from shared.rules.phones import mask, pseudonym
from shared.store.campaigns import add_campaign
from shared.store.db import Database, database_for, upgrade
from shared.store.receipts import apply_receipt
from shared.store.replies import claim_batch, expire_replies, record_send, start_sending
from shared.vonage.webhooks import parse_inbound
from tests.helpers import SECRET_KEY, inbound, record_inbound
from workers.cli import main

SENDER = "33612345621"
OTHER = "33698765409"


def _relous(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def _record(to: str, msisdn: str, at: datetime, text: str = "Salut c'est qui ?",
            url: str | None = None) -> int:
    """Judge one inbound SMS at `at`; the id of the message recorded."""
    database = database_for(url or os.environ["DATABASE_URL"])
    with database.transaction() as tx:
        record_inbound(tx, parse_inbound(inbound(msisdn=msisdn, to=to, text=text)),
                       SECRET_KEY, at)
        return int(tx.execute("SELECT MAX(id) AS id FROM inbound_messages").fetchone()["id"])


def _campaign_id(db) -> int:
    return int(db.execute("SELECT id FROM campaigns").fetchone()["id"])


def _private(result: Result, *numbers: str) -> None:
    """No raw number, full pseudonym or message text in anything the command printed."""
    printed = result.stdout + result.stderr
    for number in numbers:
        assert number not in printed
        assert number[2:] not in printed, "not even without its country code"
        assert pseudonym(number, SECRET_KEY) not in printed
    assert "Salut" not in printed and "allo" not in printed


def _conclusion(result: Result, campaign: str) -> str:
    lines = result.stdout.splitlines()
    start = lines.index(next(line for line in lines if line.startswith(f"campaign {campaign}")))
    return next(line for line in lines[start:] if line.startswith("  => "))


def test_a_sender_answered_once_then_ignored_within_the_window(db, campaign):
    number = campaign()
    base = datetime.now(UTC)
    first = _record(number, SENDER, base)
    _record(number, SENDER, base + timedelta(minutes=2), "allo ??")
    _record(number, SENDER, base + timedelta(minutes=4), "allo tu réponds ?")
    database = database_for(os.environ["DATABASE_URL"])
    sent_at = base + timedelta(minutes=5)
    with database.transaction() as tx:
        [reply] = claim_batch(tx, _campaign_id(db), sent_at, 10)
    with database.transaction() as tx:
        assert start_sending(tx, reply, sent_at)
    with database.transaction() as tx:
        record_send(tx, reply, SendResult("sent", (SentPart("MSG1", Decimal("0.0333")),),
                                          segments=1), sent_at, None)
        apply_receipt(tx, DeliveryReceipt("MSG1", "delivered", 0, "0.03330000", None,
                                          number, None), sent_at)
    db.execute("UPDATE inbound_messages SET would_stop = 'lexicon,velocity' WHERE id = %s",
               (first + 2,))  # what a rule in record mode would have done

    shown = _relous("explain", SENDER)

    assert shown.exit_code == 0, shown.output
    assert pseudonym(SENDER, SECRET_KEY)[:12] in shown.stdout and mask(SENDER) in shown.stdout
    assert "messages: 3, all shown" in shown.stdout
    assert f"#{first:<7}" in shown.stdout and "17 chars, 1 part" in shown.stdout
    assert "reasons: first message in the reply window" in shown.stdout
    assert "reply #1 delivered:" in shown.stdout
    assert "segments 1, price EUR 0.0333" in shown.stdout
    assert shown.stdout.count("reasons: already answered in this reply window") == 2
    assert "would stop (rules in record mode): lexicon, velocity" in shown.stdout
    conclusion = _conclusion(shown, number)
    assert conclusion.startswith(f"  => answered once at {sent_at:%Y-%m-%d %H:%M:%S} UTC "
                                 "(delivered); since then within the reply window of that "
                                 "reply (ends ")
    _private(shown, SENDER)


def test_a_blocked_flooder_shows_the_velocity_threshold_that_blocked_it(db, campaign):
    number = campaign()
    base = datetime.now(UTC)
    for second in range(7):  # the default limit is 5 messages a minute
        _record(number, SENDER, base + timedelta(seconds=second), f"allo {second}")

    shown = _relous("explain", SENDER)

    assert shown.exit_code == 0, shown.output
    assert "velocity: 6 messages in a minute (limit 5)" in shown.stdout
    assert "reasons: sender blocked for abuse" in shown.stdout
    assert "; blocked until " in shown.stdout.splitlines()[4], "the sender's state line"
    conclusion = _conclusion(shown, number)
    assert "reply pending, due" in conclusion
    assert "since then blocked until " in conclusion
    assert conclusion.endswith(": velocity: 6 messages in a minute (limit 5)")
    _private(shown, SENDER)


def test_a_reply_that_expired_unsent_waiting_for_budget(db, campaign):
    number = campaign()
    assert _relous("budget", "set", number, "--total", "0").exit_code == 0
    base = datetime.now(UTC)
    _record(number, SENDER, base)
    with database_for(os.environ["DATABASE_URL"]).transaction() as tx:
        assert claim_batch(tx, _campaign_id(db), base, 10) == []  # no room: it waits

    waiting = _relous("explain", SENDER)
    assert "reply pending, due" in _conclusion(waiting, number)
    assert " (waiting for budget), expires if still unsent at " in _conclusion(waiting, number)

    with database_for(os.environ["DATABASE_URL"]).transaction() as tx:
        assert expire_replies(tx, base + timedelta(hours=7)) == 1
    shown = _relous("explain", SENDER)

    assert shown.exit_code == 0, shown.output
    assert "reply #1 expired:" in shown.stdout
    assert "error not sent within its freshness limit" in shown.stdout
    assert _conclusion(shown, number) == (
        "  => reply expired unsent: budget (it waited for room under the caps)")
    _private(shown, SENDER)


def test_message_finds_its_sender_and_highlights_it(db, campaign):
    number = campaign()
    base = datetime.now(UTC)
    _record(number, OTHER, base)
    _record(number, SENDER, base)
    asked = _record(number, SENDER, base + timedelta(minutes=1), "allo ?")

    shown = _relous("explain", "--message", str(asked))

    assert shown.exit_code == 0, shown.output
    assert pseudonym(SENDER, SECRET_KEY)[:12] in shown.stdout
    assert pseudonym(OTHER, SECRET_KEY)[:12] not in shown.stdout
    assert mask(SENDER) in shown.stdout, "masked from the reply that still holds it"
    [highlighted] = [line for line in shown.stdout.splitlines() if line.startswith(">")]
    assert highlighted.startswith(f"> #{asked} ") and "<- the message asked about" in highlighted
    assert "messages: 2, all shown" in shown.stdout
    _private(shown, SENDER, OTHER)


def test_an_older_message_asked_about_is_shown_beyond_the_limit(db, campaign):
    number = campaign()
    base = datetime.now(UTC)
    asked = _record(number, SENDER, base)
    for minute in (1, 2, 3):
        _record(number, SENDER, base + timedelta(minutes=minute), "allo ?")

    shown = _relous("explain", "--message", str(asked), "--limit", "2")

    assert shown.exit_code == 0, shown.output
    assert "the latest 2 of 4 shown, 2 older left out (--limit 4" in shown.stdout
    assert f"message {asked}, older than the ones shown:" in shown.stdout
    assert sum(line.startswith(("  #", "> #")) for line in shown.stdout.splitlines()) == 3
    assert "since then within the reply window of that reply" in _conclusion(
        shown, number), "the reply is found although its message is not among those shown"


def test_a_blocklisted_sender_is_told_so(db, campaign):
    number = campaign()
    assert _relous("sender", "block", SENDER).exit_code == 0
    _record(number, SENDER, datetime.now(UTC))

    shown = _relous("explain", "+" + SENDER)

    assert shown.exit_code == 0, shown.output
    assert "operators' lists: blocklist" in shown.stdout
    assert _conclusion(shown, number) == (
        "  => on the operators' blocklist (`relous sender unblock` lifts it)")
    _private(shown, SENDER)


def test_half_a_long_sms_is_shown_as_waiting_for_its_other_parts(db, campaign):
    number = campaign()
    part = inbound(msisdn=SENDER, to=number, text="Salut, c'est moi", concat="true",
                   **{"concat-ref": "7", "concat-total": "2", "concat-part": "1"})
    with database_for(os.environ["DATABASE_URL"]).transaction() as tx:
        record_inbound(tx, parse_inbound(part), SECRET_KEY, datetime.now(UTC))

    shown = _relous("explain", SENDER)

    assert shown.exit_code == 0, shown.output
    assert "1 part(s) of a long SMS waiting for the rest" in shown.stdout
    assert _conclusion(shown, number) == (
        "  => no whole message yet: a long SMS is judged once all its parts arrive")
    _private(shown, SENDER)


@pytest.mark.parametrize(("args", "code", "says"), [
    (("explain", SENDER), 1, "no message from 336"),
    (("explain", "--message", "999999"), 1, "no inbound message 999999"),
    (("explain",), 2, "one of them"),
    (("explain", SENDER, "--message", "1"), 2, "one of them"),
    (("explain", "0612345621"), 2, "E.164"),
    (("explain", SENDER, "--limit", "0"), 2, "--limit"),
])
def test_unknown_or_bad_input_exits_with_one_line(db, campaign, args, code, says):
    campaign()
    result = _relous(*args)
    assert result.exit_code == code
    assert result.stdout == ""
    assert says in result.stderr
    if code == 1 or "one of them" in says or "E.164" in says:
        assert result.stderr.count("\n") == 1, result.stderr
    assert "612345621" not in result.stderr, "the number asked about is not echoed"


def test_an_unmigrated_database_says_to_run_db_upgrade(tmp_path):
    result = _relous("explain", SENDER, env={"DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}"})
    assert result.exit_code == 1
    assert "relous db upgrade" in result.stderr and result.stderr.count("\n") == 1


def test_the_trail_reads_the_embedded_sqlite_database(tmp_path):
    url = f"sqlite:///{tmp_path / 'relous.db'}"
    upgrade(Database(url, pool_size=1))
    number = "33700000001"
    with database_for(url).transaction() as tx:
        add_campaign(tx, number, "Stop.", delay_seconds=0, window_seconds=86400,
                     price_per_segment=Decimal("0.0333"), allow_multipart=False,
                     now=datetime.now(UTC))
    base = datetime.now(UTC)
    _record(number, SENDER, base, url=url)
    _record(number, SENDER, base + timedelta(minutes=1), "allo ?", url=url)
    _record("33799999999", SENDER, base + timedelta(minutes=2), url=url)

    shown = _relous("explain", SENDER, env={"DATABASE_URL": url})

    assert shown.exit_code == 0, shown.output
    assert "messages: 3, all shown" in shown.stdout
    assert _conclusion(shown, number).startswith(
        "  => reply pending, due ")
    assert "since then within the reply window of that reply (ends " in _conclusion(
        shown, number)
    assert "number 33799999999: no campaign answers on it" in shown.stdout
    assert "  => never answered: no campaign answers on this number" in shown.stdout
    _private(shown, SENDER)
