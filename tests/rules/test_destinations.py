"""The destination gate: replies go only to mobiles of the countries a campaign allows,
judged by libphonenumber; premium, shared-cost, toll-free, short and invalid never."""

from __future__ import annotations

import pytest

from shared.rules.campaign import CampaignRules
from shared.rules.phones import (
    campaign_country,
    default_time_zone,
    destination_verdict,
    parse_reply_countries,
)

CAMPAIGN = "33757000001"   # a valid French mobile (33700000001 is not valid for libphonenumber)


# --- the attacks: numbers a reply must never go to ---------------------------------------------

@pytest.mark.parametrize("number, reason", [
    ("447700123456", "country GB"),       # a UK mobile on a French campaign
    ("33899123456", "premium rate"),      # 08 99: premium
    ("33810123456", "shared cost"),       # 08 10
    ("33800123456", "toll free"),         # 08 00
    ("36111", "short code"),              # a French short code
    ("3361234567", "invalid number"),     # one digit short
    ("Vonage", "invalid number"),         # an alphanumeric sender
    ("33140000000", "not a mobile"),      # a Paris landline
    ("33970000000", "not a mobile"),      # 09: VoIP
])
def test_a_reply_is_refused_with_its_reason(number, reason):
    assert destination_verdict(number, CAMPAIGN, "") == f"destination not allowed: {reason}"


def test_premium_is_refused_even_in_an_allowed_country():
    assert destination_verdict("33899123456", CAMPAIGN, "FR,BE") == (
        "destination not allowed: premium rate")


# --- the legitimate patterns -------------------------------------------------------------------

@pytest.mark.parametrize("number", ["33612345678", "33756789012"])
def test_a_french_mobile_gets_its_reply_on_a_french_campaign(number):
    assert destination_verdict(number, CAMPAIGN, "") is None


def test_a_belgian_mobile_is_allowed_once_belgium_is_listed():
    assert destination_verdict("32470123456", CAMPAIGN, "") == (
        "destination not allowed: country BE")
    assert destination_verdict("32470123456", CAMPAIGN, "FR,BE") is None
    assert destination_verdict("33612345678", CAMPAIGN, "FR,BE") is None


def test_a_test_campaign_number_falls_back_on_its_country_code():
    assert campaign_country("33700000001") == "FR"
    assert destination_verdict("33612345678", "33700000001", "") is None


def test_where_mobiles_cannot_be_told_from_landlines_the_number_is_allowed():
    """US numbers are FIXED_LINE_OR_MOBILE: a US campaign can answer them."""
    assert destination_verdict("12015550123", "12015550199", "") is None
    assert destination_verdict("18005550123", "12015550199", "") == (
        "destination not allowed: toll free")


# --- the knob ----------------------------------------------------------------------------------

def test_reply_countries_are_parsed_normalised_and_checked():
    rules = CampaignRules().with_changes({"reply_countries": " fr, BE ,fr"})
    assert rules.reply_countries == "FR,BE"
    assert CampaignRules.from_json(rules.to_json()).reply_countries == "FR,BE"
    assert CampaignRules().with_changes({"reply_countries": ""}).reply_countries == ""
    with pytest.raises(ValueError, match="XX"):
        CampaignRules().with_changes({"reply_countries": "FR,XX"})
    assert parse_reply_countries("gb") == ("GB",)


def test_numeric_knobs_still_parse_as_before():
    rules = CampaignRules().with_changes({"storm_min_hold_seconds": "300",
                                          "storm_exit_ratio": "0.4"})
    assert (rules.storm_min_hold_seconds, rules.storm_exit_ratio) == (300, 0.4)
    with pytest.raises(ValueError, match="number"):
        CampaignRules().with_changes({"storm_min_hold_seconds": "FR"})


# --- the campaign's time zone -------------------------------------------------------------------

@pytest.mark.parametrize("number, zone", [
    ("33757000001", "Europe/Paris"), ("33700000001", "Europe/Paris"),
    ("32470123456", "Europe/Brussels"), ("12015550123", "America/New_York"),
    ("79161234567", "UTC"),               # Russia spans many zones: none is picked
    ("999", "UTC"), ("", "UTC"),
])
def test_default_time_zone_comes_from_the_campaign_number(number, zone):
    assert default_time_zone(number) == zone
