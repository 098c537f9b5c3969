"""Record-only and off modes, and adaptive thresholds, as plain functions: a rule in
`record` mode says what it would have done and changes nothing; `off` is not looked at;
a threshold is max(floor, ratio × the campaign's own baseline) and says where it came from."""

from __future__ import annotations

import pytest

from shared.rules.abuse import (
    BLOCK,
    REPLY,
    SUPPRESS,
    CampaignStats,
    SenderStats,
    raid_threshold,
    score_message,
    storm_threshold,
)
from shared.rules.baselines import Threshold
from shared.rules.campaign import RULES, CampaignRules

QUIET = CampaignStats(1, 0.0, 1, 1)
RAID = CampaignStats(300, 0.0, 40, 25)
FLOODER = SenderStats(9, 9, 9, 9, first_contact=False)
RETURNING = SenderStats(1, 2, 2, 1, first_contact=False)


def with_modes(**modes: str) -> CampaignRules:
    return CampaignRules().with_modes(modes)


def test_every_rule_enforces_by_default():
    assert [CampaignRules().mode(rule) for rule in RULES] == ["enforce"] * len(RULES)


def test_a_flood_under_a_recorded_velocity_rule_is_answered_and_says_it_would_block():
    enforced = score_message(CampaignRules(), FLOODER, QUIET, ())
    assert enforced.verdict == BLOCK and enforced.would_stop == ()
    recorded = score_message(with_modes(velocity="record", repetition="record"), FLOODER,
                             QUIET, ())
    assert recorded.verdict == REPLY, "record mode changes nothing"
    assert recorded.would_stop == ("velocity", "repetition")
    assert recorded.reasons[-1].startswith("would block: velocity: 9 messages in a minute "
                                           "(limit 5); repetition")


def test_a_rule_that_is_off_is_not_looked_at():
    verdict = score_message(with_modes(velocity="off", repetition="off"), FLOODER, QUIET, ())
    assert (verdict.verdict, verdict.reasons, verdict.would_stop) == (REPLY, (), ())


def test_a_recorded_rule_that_would_change_nothing_is_not_counted():
    """Lexicon alone never suppresses: recording it claims no stop it would not make."""
    verdict = score_message(with_modes(lexicon="record"), SenderStats(1, 1, 1, 1, True),
                            QUIET, ("connasse",))
    assert verdict.verdict == REPLY and verdict.would_stop == ()


def test_a_raid_under_recorded_raid_rules_is_answered_and_counted():
    rules = with_modes(raid_same_text="record", prefix_cluster="record")
    raider = SenderStats(1, 1, 1, 1, True)
    assert score_message(CampaignRules(), raider, RAID, ()).verdict == SUPPRESS
    verdict = score_message(rules, raider, RAID, ())
    assert verdict.verdict == REPLY
    assert verdict.would_stop == ("raid_same_text", "prefix_cluster")
    assert "would suppress: raid: 300 new senders in 5 min, threshold 30 = floor" \
        in verdict.reasons[-1]


def test_storm_mode_in_record_mode_answers_returning_senders_and_says_so():
    storm = CampaignStats(1, 0.0, 1, 1, storm_mode=True)
    assert score_message(CampaignRules(), RETURNING, storm, ()).verdict == SUPPRESS
    verdict = score_message(with_modes(storm="record"), RETURNING, storm, ())
    assert (verdict.verdict, verdict.would_stop) == (REPLY, ("storm",))
    assert score_message(with_modes(storm="off"), RETURNING, storm, ()).verdict == REPLY


def test_an_enforced_verdict_is_never_weakened_by_a_recorded_rule():
    rules = with_modes(lexicon="record")
    verdict = score_message(rules, FLOODER, QUIET, ("connasse",))
    assert verdict.verdict == BLOCK


@pytest.mark.parametrize("raw", ["enforced", "on", "", "record-only"])
def test_a_bad_mode_or_rule_is_refused_with_the_choices(raw):
    with pytest.raises(ValueError, match="enforce, record, off"):
        CampaignRules().with_modes({"lexicon": raw})
    with pytest.raises(ValueError, match="rules: velocity"):
        CampaignRules().with_modes({"insults": "record"})


def test_modes_survive_the_database_round_trip():
    rules = with_modes(storm="record", destination_gate="off")
    assert CampaignRules.from_json(rules.to_json()) == rules


def test_a_quiet_numbers_threshold_stays_at_its_floor():
    """No history above the floor: the floor, and the reason says so."""
    rules = CampaignRules()
    threshold = raid_threshold(rules, 2.0)
    assert (threshold.value, threshold.explain()) == (30, "30 = floor")
    assert storm_threshold(rules, 0.0).explain() == "120 = floor"


def test_a_busy_numbers_threshold_follows_its_own_normal():
    threshold = raid_threshold(CampaignRules(), 30.0)
    assert threshold.value == 90
    assert threshold.explain() == "90 = 3 × 14-day peak 30"
    assert Threshold(30, 3, 30, 14, 1).explain() == "90 = 3 × 14-day max 30"
    assert Threshold(5, 2.5, 2.5, 7, 3).explain() == "6.25 = 2.5 × 7-day peak 2.5"


@pytest.mark.parametrize(("knob", "raw"), [("baseline_peak_day", "31"),
                                          ("baseline_days", "45")])
def test_baseline_knobs_are_bounded(knob, raw):
    with pytest.raises(ValueError, match="at most"):
        CampaignRules().with_changes({knob: raw})


@pytest.mark.parametrize("change", [{"storm_ratio": "inf"}, {"storm_ratio": "nan"},
                                    {"block_seconds": "10000000000"},
                                    {"spend_trip_floor_euros": "1e12"}])
def test_knobs_are_finite_and_bounded_in_the_rules_themselves(change):
    """A worker adds `block_seconds` to a date: an unbounded knob would overflow there."""
    with pytest.raises(ValueError):
        CampaignRules().with_changes(change)
