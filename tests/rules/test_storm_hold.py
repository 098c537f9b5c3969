"""Storm mode holds: bursts spaced just over a minute apart no longer flap it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from shared.rules.abuse import next_storm_mode
from shared.rules.campaign import CampaignRules

START = datetime(2026, 11, 25, 21, 0, tzinfo=UTC)
BEAT = 15          # seconds between evaluations (workers/app.py STORM_INTERVAL_SECONDS)
DURATION = 70 * 60


def _flips(rules: CampaignRules, bursts: list[int]) -> tuple[int, int]:
    """Replay per-minute counts of 130-message bursts; (mode changes, seconds in storm)."""
    storm, changed_at, flips, stormy = False, None, 0, 0
    for second in range(0, DURATION, BEAT):
        now = START + timedelta(seconds=second)
        per_minute = 130 * sum(1 for burst in bursts if second - 60 < burst <= second)
        new = next_storm_mode(rules, storm, per_minute, changed_at, now)
        if new != storm:
            storm, changed_at, flips = new, now, flips + 1
        stormy += BEAT if storm else 0
    return flips, stormy


BURSTS_EVERY_70S = list(range(5, DURATION, 70))


def test_without_a_hold_bursts_every_70_seconds_flap_storm_mode():
    flips, _ = _flips(CampaignRules(storm_min_hold_seconds=0), BURSTS_EVERY_70S)
    assert flips >= 50


def test_the_minimum_hold_bounds_the_changes_to_two_per_hold():
    rules = CampaignRules()
    assert rules.storm_min_hold_seconds == 600
    flips, stormy = _flips(rules, BURSTS_EVERY_70S)
    assert flips <= 2 * DURATION // rules.storm_min_hold_seconds + 1
    assert stormy >= 0.9 * DURATION, "the raid is met in storm mode nearly all along"


def test_storm_mode_is_held_until_the_hold_is_over():
    rules = CampaignRules()
    on_at = START
    assert next_storm_mode(rules, True, 0, on_at, on_at + timedelta(seconds=599))
    assert not next_storm_mode(rules, True, 0, on_at, on_at + timedelta(seconds=600))


# --- the legitimate patterns ------------------------------------------------------------------

def test_a_storm_is_entered_at_once_even_just_after_leaving_one():
    rules = CampaignRules()
    assert next_storm_mode(rules, False, 121, START, START + timedelta(seconds=1))


def test_quiet_traffic_never_enters_storm_mode_and_a_real_storm_ends_after_the_hold():
    flips, stormy = _flips(CampaignRules(), [])
    assert (flips, stormy) == (0, 0)
    one_storm = list(range(5, 120, 1))            # two minutes of flood, then silence
    flips, stormy = _flips(CampaignRules(), one_storm)
    assert flips == 2 and stormy <= 600 + 2 * 60


def test_an_unknown_change_time_does_not_hold():
    assert not next_storm_mode(CampaignRules(), True, 0, None, START)
