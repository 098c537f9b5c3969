"""Defences v2 on PostgreSQL, through the inbound use case: thresholds that follow each
campaign's own normal (from the rollups the write path keeps), near-duplicate raid texts,
greetings and usual texts that are never a raid signal on their own."""

from __future__ import annotations

import os
import random
from datetime import timedelta

import pytest

from shared.store import rollups
from shared.store.db import database_for
from shared.store.rollups import INBOUND, NEW_SENDERS, add_rollups, minute_of
from tests.workers.defences import NOW, judge, reasons, senders
from workers import signals
from workers.inbound import text_key
from workers.replay.scenarios import SLOGANS

GREETINGS = ("coucou ça va ?", "Salut", "bonsoir", "c'est qui ?", "Coucou ça va ? c'est Léa")
OBFUSCATIONS = (
    lambda text: text,
    lambda text: "\u200b".join(text),
    lambda text: text.replace("e", "3").replace("a", "4").replace("o", "0"),
    lambda text: " ".join(text),
    lambda text: text.replace("o", "о").replace("a", "а"),  # Cyrillic look-alikes
    lambda text: f"{text} {random.Random(len(text)).choice(['lol', 'mdr', 'ptdr'])} xptdr",
)


@pytest.fixture(autouse=True)
def _fresh_baselines():
    signals._baselines.clear()  # campaign ids restart with the tables
    yield
    signals._baselines.clear()


def history(db, number: str, series: str, per_window: int, days: int = 14,
            windows_a_day: int = 1, window_minutes: int = 5) -> None:
    """`windows_a_day` windows of `per_window` on each of the last `days` days (what the
    write path would have rolled up)."""
    campaign_id = db.execute("SELECT id FROM campaigns WHERE number = %s",
                             (number,)).fetchone()["id"]
    now = minute_of(NOW)
    with database_for(os.environ["DATABASE_URL"]).transaction() as tx:
        add_rollups(tx, {(campaign_id, series, now - day * 1440 - index * window_minutes):
                         per_window for day in range(1, days + 1)
                         for index in range(windows_a_day)})


def test_the_write_path_rolls_up_normal_traffic_only(db, campaign):
    number = campaign()
    [person, flooder] = senders(2, 1)
    judge([(person, "Salut, on se voit quand ?")] + [(flooder, "Réponds")] * 8, number, NOW)
    rows = {(row["series"], row["value"]) for row in db.execute(
        "SELECT series, value FROM traffic_rollups WHERE minute = %s", (minute_of(NOW),))}
    # The person and the flooder's first messages were let through; once blocked, the
    # flood counts nowhere, so it cannot raise the campaign's normal.
    assert rows == {(NEW_SENDERS, 2), (INBOUND, 6)}


def test_a_quiet_numbers_raid_threshold_stays_at_its_floor(db, campaign):
    quiet = campaign("33700000001")
    history(db, quiet, NEW_SENDERS, 2, windows_a_day=24)  # a couple an hour
    raiders = senders(40, 2)
    verdicts = judge([(raider, SLOGANS[0]) for raider in raiders], quiet, NOW)
    assert verdicts.count("suppress") >= 10
    assert any("threshold 30 = floor" in reason for reason in reasons(db, quiet))


def test_a_busy_numbers_own_normal_raises_its_threshold_and_the_reason_says_so(db, campaign):
    busy, quiet = campaign("33700000001"), campaign("33700000002")
    history(db, busy, NEW_SENDERS, 40)  # 40 new senders in 5 min, every evening
    burst = [(number, "on se voit ce soir au bar de la gare ?") for number in senders(80, 3)]
    assert judge(burst, busy, NOW).count("reply") == 80
    assert not any("raid" in reason for reason in reasons(db, busy)), "80 < 3 × 40"
    judge([(number, "on se voit ce soir au bar de la gare ?") for number in senders(80, 4)],
          quiet, NOW)
    assert any("threshold 30 = floor; same or near-same text" in reason
               for reason in reasons(db, quiet)), "the same burst is a raid on a quiet number"
    more = [(number, SLOGANS[1]) for number in senders(50, 5)]
    judge(more, busy, NOW)
    assert any("threshold 120 = 3 × 14-day peak 40" in reason for reason in reasons(db, busy))


def test_obfuscated_slogans_are_one_text_to_the_raid_signal(db, campaign):
    number = campaign()
    rng = random.Random(7)
    raid = [(raider, rng.choice(OBFUSCATIONS)(rng.choice(SLOGANS)))
            for raider in senders(300, 6)]
    verdicts = judge(raid, number, NOW)
    # 4 slogans in 6 disguises: the exact fingerprint undoes the invisible and look-alike
    # characters only, and sees 16 different texts.
    assert len({text_key(text) for _, text in raid}) == 16
    answered = verdicts.count("reply")
    assert answered <= 0.1 * len(raid), f"{answered} of 300 disguised raiders answered"
    assert sum("near-same text" in reason for reason in reasons(db, number)) >= 250


def test_a_common_greeting_from_200_real_senders_during_a_raid_is_never_suppressed(
        db, campaign):
    number = campaign()
    rng = random.Random(8)
    raid = [(raider, rng.choice(SLOGANS)) for raider in senders(300, 9)]
    people = [(person, rng.choice(GREETINGS)) for person in senders(200, 10)]
    mixed = raid + people
    rng.shuffle(mixed)
    verdicts = dict(zip(mixed, judge(mixed, number, NOW), strict=True))
    assert [verdicts[message] for message in people] == ["reply"] * 200
    assert sum(verdicts[message] == "suppress" for message in raid) >= 250


def test_a_text_usual_in_the_campaigns_normal_traffic_is_not_a_raid_signal(db, campaign):
    number = campaign()
    usual = "tu es bien la copine de Karim du club de foot ?"
    judge([(person, usual) for person in senders(20, 11)], number,
          NOW - timedelta(hours=2))  # no raid then: it becomes usual
    raid = [(raider, SLOGANS[2]) for raider in senders(60, 12)]
    late = [(person, usual) for person in senders(10, 13)]
    verdicts = judge(raid + late, number, NOW)
    assert verdicts[len(raid):] == ["reply"] * 10
    assert verdicts[:len(raid)].count("suppress") >= 25, "the raid is still seen"


def test_a_greeting_that_insults_is_no_excuse(db, campaign):
    number = campaign()
    raid = [(raider, "salut connasse") for raider in senders(60, 14)]
    judge([(raider, SLOGANS[3]) for raider in senders(40, 15)], number, NOW)
    verdicts = judge(raid, number, NOW)
    assert verdicts.count("suppress") >= 50


def test_the_baseline_is_the_third_busiest_days_peak(db, campaign):
    """One day of heavy traffic (an attacker's evening, or a TV show) does not move it:
    that takes three different days."""
    number = campaign()
    history(db, number, NEW_SENDERS, 7, days=5)
    campaign_id = db.execute("SELECT id FROM campaigns").fetchone()["id"]
    five = timedelta(minutes=5)
    with database_for(os.environ["DATABASE_URL"]).transaction() as tx:
        add_rollups(tx, {(campaign_id, NEW_SENDERS, minute_of(NOW) - 60 - index * 5): 500
                         for index in range(40)})  # one evening, 40 windows of 500
        assert rollups.peak(tx, campaign_id, NEW_SENDERS, NOW, 14, five, 1) == 500
        assert rollups.peak(tx, campaign_id, NEW_SENDERS, NOW, 14, five, 3) == 7
        assert rollups.peak(tx, campaign_id, NEW_SENDERS, NOW, 14, five, 7) == 0
