"""Beat's adaptive thresholds on PostgreSQL: storm mode and the spend-rate kill switch
judge each campaign against its own rollups; a trip is recorded with its reason, raises an
alert and is lifted only by a person."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from click.testing import CliRunner

from shared.store.db import database_for
from shared.store.rollups import INBOUND, SPEND, add_rollups, minute_of
from shared.vonage.webhooks import parse_inbound
from tests.helpers import SECRET_KEY, inbound
from workers import housekeeping
from workers.cli import main
from workers.inbound import Keys, judge_batch

NOW = datetime.now(UTC).replace(second=30, microsecond=0)


def _id(db, number: str) -> int:
    return db.execute("SELECT id FROM campaigns WHERE number = %s", (number,)).fetchone()["id"]


def _roll(db, number: str, series: str, amounts: dict[int, Decimal | int]) -> None:
    """Rollups at minutes before NOW (what the write path would have kept)."""
    with database_for(os.environ["DATABASE_URL"]).transaction() as tx:
        add_rollups(tx, {(_id(db, number), series, minute_of(NOW) - ago): value
                         for ago, value in amounts.items()})


def _flood(number: str, count: int) -> None:
    """`count` messages from distinct senders in the last minute."""
    with database_for(os.environ["DATABASE_URL"]).transaction() as tx:
        judge_batch(tx, [parse_inbound(inbound(msisdn=f"336{index:08d}", to=number,
                                               text=f"message {index}"))
                         for index in range(count)], Keys(SECRET_KEY), NOW)


def _beat(job):
    with database_for(os.environ["DATABASE_URL"]).transaction() as tx:
        return job(tx, NOW + timedelta(seconds=5))


def test_storm_mode_follows_each_campaigns_own_normal(db, campaign):
    quiet, busy = campaign("33700000001"), campaign("33700000002")
    # The busy number takes 100 messages a minute at its peak, every day.
    _roll(db, busy, INBOUND, dict.fromkeys(range(1440, 15 * 1440, 1440), 100))
    _flood(quiet, 150)
    _flood(busy, 150)
    changed = _beat(housekeeping.evaluate_storm_mode)
    assert [(number, storm) for number, storm, _ in changed] == [(quiet, True)]
    assert "150 messages in the last minute, threshold 120 = floor" in changed[0][2]
    texts = [row["text"] for row in db.execute("SELECT text FROM alerts").fetchall()]
    assert texts == [f"anti-relous: campaign {quiet} storm mode ON (150 messages in the last "
                     "minute, threshold 120 = floor)"]
    _flood(busy, 200)  # 350 a minute: past 3 × its usual 100
    [(number, storm, measured)] = _beat(housekeeping.evaluate_storm_mode)
    assert (number, storm) == (busy, True)
    assert "threshold 300 = 3 × 14-day peak 100" in measured


def test_a_spend_rate_far_above_the_campaigns_own_trips_its_kill_switch(db, campaign):
    quiet, busy = campaign("33700000001"), campaign("33700000002")
    # The busy number usually spends up to 20 EUR in its busiest 10 minutes.
    _roll(db, busy, SPEND, {ago: Decimal(10) for ago in range(60, 60 + 14 * 1440, 7)})
    for number in (quiet, busy):
        _roll(db, number, SPEND, {ago: Decimal("6.5") for ago in range(10)})  # 65 EUR
    [(number, reason)] = _beat(housekeeping.trip_on_spend_rate)
    assert number == quiet
    assert reason == "spend rate: 65.00 EUR in 10 min, threshold 50 = floor EUR"
    halted = db.execute("SELECT number, sending_halted_reason FROM campaigns"
                        " ORDER BY number").fetchall()
    assert [(row["number"], row["sending_halted_reason"]) for row in halted] == [
        (quiet, reason), (busy, None)]
    assert _beat(housekeeping.trip_on_spend_rate) == [], "a trip is recorded once"
    _roll(db, busy, SPEND, {0: Decimal(200)})
    [(number, reason)] = _beat(housekeeping.trip_on_spend_rate)
    assert reason == "spend rate: 265.00 EUR in 10 min, threshold 200 = 10 × 14-day peak 20 EUR"


def test_only_a_person_lifts_a_spend_trip(db, campaign):
    number = campaign()
    _roll(db, number, SPEND, {0: Decimal(80)})
    assert _beat(housekeeping.trip_on_spend_rate)
    _roll(db, number, SPEND, {0: Decimal(-80)})  # whatever the spend does next
    _beat(housekeeping.trip_on_spend_rate)
    status = CliRunner().invoke(main, ["sending", "status"]).output
    assert "spend rate: 80.00 EUR in 10 min" in status
    assert CliRunner().invoke(main, ["sending", "start", "--campaign", number]).exit_code == 0
    assert db.execute("SELECT sending_halted_reason FROM campaigns").fetchone()[
        "sending_halted_reason"] is None


def test_a_broadcast_under_a_raised_hourly_cap_does_not_trip(db, campaign):
    """An operator expecting a TV mention raises the hourly cap: spending at that pace is
    expected; spending the whole hour's cap in 10 minutes is not."""
    number = campaign()
    assert CliRunner().invoke(main, ["budget", "set", number, "--hourly", "500"]).exit_code == 0
    _roll(db, number, SPEND, {ago: Decimal(13) for ago in range(10)})  # 130 EUR
    assert _beat(housekeeping.trip_on_spend_rate) == []
    _roll(db, number, SPEND, {0: Decimal(400)})
    [(_, reason)] = _beat(housekeeping.trip_on_spend_rate)
    assert reason == "spend rate: 530.00 EUR in 10 min, threshold 500 = floor EUR"
