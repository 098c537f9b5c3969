"""The defence rules as plain functions: each with the attack it stops and the
legitimate pattern it must leave alone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from shared.rules.abuse import (
    BLOCK,
    REPLY,
    SUPPRESS,
    CampaignStats,
    SenderStats,
    fingerprint,
    lexicon_hits,
    load_lexicon,
    next_storm_mode,
    raid_in_progress,
    score_message,
)
from shared.rules.budget import BudgetState, estimate_cost
from shared.rules.campaign import CampaignRules
from shared.rules.ratelimit import refill, wait_for_token
from shared.rules.templates import check_template

RULES = CampaignRules()
QUIET = CampaignStats(new_senders_recent=1, new_senders_baseline=2.0, same_text_senders=1,
                      prefix_new_senders=1)
RAID = CampaignStats(new_senders_recent=300, new_senders_baseline=2.0, same_text_senders=40,
                     prefix_new_senders=1)
NOW = datetime(2026, 11, 25, 21, 30, tzinfo=UTC)


def sender(per_minute=1, per_hour=1, per_day=1, same=1, first=True, **extra) -> SenderStats:
    return SenderStats(per_minute, per_hour, per_day, same, first, **extra)


# --- the legitimate patterns ---------------------------------------------------------------

def test_an_ordinary_first_message_is_answered():
    assert score_message(RULES, sender(), QUIET, ()).verdict == REPLY


def test_a_real_sender_texting_three_times_in_an_evening_is_never_penalised():
    for count in (1, 2, 3):
        verdict = score_message(RULES, sender(per_hour=count, per_day=count, same=1,
                                              first=count == 1), QUIET, ())
        assert verdict.verdict == REPLY, verdict
    # (the one-reply-per-window rule, not a penalty, keeps them to one reply)


def test_an_insult_alone_still_gets_the_reply_telling_them_to_stop():
    hits = lexicon_hits("Réponds sale connasse", load_lexicon())
    assert hits == ("connasse",)
    assert score_message(RULES, sender(), QUIET, hits).verdict == REPLY


def test_common_short_texts_shared_by_many_people_are_not_a_raid_signal():
    assert fingerprint("Salut") == "" and fingerprint("t'es où ?") == ""


# --- the attacks -----------------------------------------------------------------------------

def test_a_flooder_firing_messages_is_blocked():
    verdict = score_message(RULES, sender(per_minute=6, per_hour=6, per_day=6, first=False),
                            QUIET, ())
    assert verdict.verdict == BLOCK and "velocity" in verdict.reasons[0]


@pytest.mark.parametrize("per_hour, per_day", [(16, 16), (15, 41)])
def test_a_slow_flooder_is_blocked_by_the_hourly_or_daily_limit(per_hour, per_day):
    verdict = score_message(RULES, sender(per_minute=1, per_hour=per_hour, per_day=per_day,
                                          first=False), QUIET, ())
    assert verdict.verdict == BLOCK


def test_the_same_text_over_and_over_is_suppressed():
    verdict = score_message(RULES, sender(per_hour=3, per_day=3, same=3, first=False), QUIET,
                            ())
    assert verdict.verdict == SUPPRESS and "repetition" in verdict.reasons[0]


def test_a_raid_pasting_one_slogan_is_suppressed_from_first_contact():
    hits = lexicon_hits("RAID sur ce faux numéro de merde, spammez !", load_lexicon())
    assert hits
    verdict = score_message(RULES, sender(), RAID, hits)
    assert verdict.verdict == SUPPRESS
    assert any("raid" in reason for reason in verdict.reasons)


def test_a_raid_from_one_number_range_is_suppressed():
    cluster = CampaignStats(300, 2.0, 1, 25)
    hits = lexicon_hits("on vous spam", load_lexicon())
    assert score_message(RULES, sender(), cluster, hits).verdict == SUPPRESS


def test_the_same_slogan_without_a_burst_of_new_senders_is_not_a_raid():
    assert not raid_in_progress(RULES, QUIET)
    hits = lexicon_hits("spammez ce numero", load_lexicon())
    assert score_message(RULES, sender(), QUIET, hits).verdict == REPLY


def test_raid_needs_a_burst_far_above_the_baseline():
    busy_campaign = CampaignStats(new_senders_recent=40, new_senders_baseline=20.0,
                                  same_text_senders=1, prefix_new_senders=1)
    assert not raid_in_progress(RULES, busy_campaign), "40 is only 2x a busy baseline"
    assert raid_in_progress(RULES, CampaignStats(100, 20.0, 1, 1))


def test_blocked_and_blocklisted_senders_are_silenced_and_allowlist_beats_every_rule():
    assert score_message(RULES, sender(blocked=True), QUIET, ()).verdict == BLOCK
    assert score_message(RULES, sender(listed="block"), QUIET, ()).verdict == BLOCK
    flood = sender(per_minute=50, per_hour=50, per_day=50, same=50, listed="allow")
    assert score_message(RULES, flood, RAID, ("raid",)).verdict == REPLY


def test_near_same_texts_share_a_fingerprint():
    assert fingerprint("Réponds-moi !!! 1") == fingerprint("reponds moi 2")


# --- storm mode ------------------------------------------------------------------------------

def test_storm_mode_answers_first_contacts_only():
    storm = CampaignStats(1, 1.0, 1, 1, storm_mode=True)
    assert score_message(RULES, sender(first=True), storm, ()).verdict == REPLY
    returning = score_message(RULES, sender(first=False), storm, ())
    assert returning.verdict == SUPPRESS and "storm" in returning.reasons[-1]


def test_storm_mode_switches_with_hysteresis():
    assert not next_storm_mode(RULES, False, 120, None, NOW)
    assert next_storm_mode(RULES, False, 121, None, NOW)
    assert next_storm_mode(RULES, True, 70, None, NOW), "stays on until well below"
    assert not next_storm_mode(RULES, True, 59, None, NOW)


# --- budget ------------------------------------------------------------------------------------

def budget(hourly=None, daily=None, total=None, hour_used="0", day_used="0",
           total_used="0") -> BudgetState:
    def money(value):
        return None if value is None else Decimal(value)

    return BudgetState(money(hourly), money(daily), money(total), NOW.replace(minute=0),
                       Decimal(hour_used), NOW.replace(hour=0, minute=0), Decimal(day_used),
                       Decimal(total_used))


def test_only_what_fits_under_every_cap_is_claimed():
    costs = [Decimal("0.08")] * 10
    assert budget().fitting(costs) == 10
    assert budget(hourly="0.40").fitting(costs) == 5
    assert budget(hourly="1", daily="0.30", day_used="0.05").fitting(costs) == 3
    assert budget(total="0.07").fitting(costs) == 0, "not even one cent over"


def test_a_new_hour_starts_from_zero_but_the_day_and_total_carry_on():
    used = budget(hourly="0.40", daily="1", hour_used="0.40", day_used="0.40",
                  total_used="0.40")
    later = used.rolled(NOW + timedelta(hours=1))
    assert (later.hour_used, later.day_used, later.total_used) == (
        0, Decimal("0.40"), Decimal("0.40"))
    assert used.next_room(NOW) == NOW.replace(minute=0) + timedelta(hours=1)
    assert budget(total="1", total_used="1").next_room(NOW) is None


def test_estimates_use_the_highest_known_price_and_every_segment():
    assert estimate_cost("Stop.", Decimal("0.08")) == Decimal("0.08")
    assert estimate_cost("Stop.", Decimal("0.05"), Decimal("0.09")) == Decimal("0.09")
    assert estimate_cost("x" * 161, Decimal("0.08")) == Decimal("0.16")


# --- the shared send rate ----------------------------------------------------------------------

def test_token_bucket_refills_at_the_rate_and_caps_bursts():
    assert refill(0, NOW, NOW + timedelta(seconds=0.5), rate=30, capacity=30) == 15
    assert refill(10, NOW, NOW + timedelta(seconds=10), rate=30, capacity=30) == 30
    assert wait_for_token(2.5, 30) == 0
    assert wait_for_token(0.4, 30) == pytest.approx(0.02)


# --- templates ---------------------------------------------------------------------------------

def test_a_typographic_apostrophe_is_caught_and_a_gsm7_substitute_proposed():
    text = "Cette personne ne souhaite pas être contactée. Merci d’arrêter de lui écrire."
    report = check_template(text, Decimal("0.08"))
    assert report.encoding.name == "UCS-2" and report.encoding.segments == 2
    assert set(report.encoding.non_gsm_characters) == {"ê", "’"}
    assert report.cost == Decimal("0.16")
    assert report.suggestion is not None and "’" not in report.suggestion
    assert report.suggestion_encoding.segments == 1
