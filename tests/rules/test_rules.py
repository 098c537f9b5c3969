"""Domain rules tested as plain functions, without any server."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from shared.rules.campaign import Campaign
from shared.rules.phones import is_phone_number, mask, pseudonym
from shared.rules.replies import decide_reply, retry_delay
from shared.rules.segments import encode
from shared.settings import ConfigError, Settings

NOW = datetime(2026, 11, 25, 20, 0, tzinfo=UTC)
CAMPAIGN = Campaign(id=1, number="33700000001", reply_text="Stop.", reply_delay_seconds=3600,
                    reply_window_seconds=30 * 86400, price_per_segment=Decimal("0.08"),
                    allow_multipart=False, paused=False)


def test_masked_number_keeps_only_its_ends():
    assert mask("33612345621") == "336••••••21"
    assert "12345" not in mask("33612345621")


def test_pseudonym_is_stable_per_key_and_differs_between_keys():
    assert pseudonym("33612345621", "k1") == pseudonym("33612345621", "k1")
    assert pseudonym("33612345621", "k1") != pseudonym("33612345621", "k2")
    assert "33612345621" not in pseudonym("33612345621", "k1")


@pytest.mark.parametrize("value, valid", [
    ("33612345621", True), ("447700900000", True), ("+33612345621", False),
    ("0612345621", False), ("abc", False), ("1234567890123456", False),
])
def test_phone_numbers_are_e164_digits_without_plus(value, valid):
    assert is_phone_number(value) is valid


def test_first_message_gets_a_reply_after_the_campaign_delay():
    decision = decide_reply(CAMPAIGN, None, NOW)
    assert decision.verdict == "reply"
    assert decision.due_at == NOW + timedelta(hours=1)
    assert decision.window_ends_at == NOW + timedelta(days=30)


def test_a_sender_texting_three_times_in_an_evening_gets_one_reply():
    first = decide_reply(CAMPAIGN, None, NOW)
    second = decide_reply(CAMPAIGN, first.window_ends_at, NOW + timedelta(minutes=20))
    third = decide_reply(CAMPAIGN, first.window_ends_at, NOW + timedelta(hours=3))
    assert [first.verdict, second.verdict, third.verdict] == ["reply", "suppress", "suppress"]


def test_a_sender_is_answered_again_once_the_window_is_over():
    first = decide_reply(CAMPAIGN, None, NOW)
    later = decide_reply(CAMPAIGN, first.window_ends_at, NOW + timedelta(days=31))
    assert later.verdict == "reply"


def test_retry_delay_grows_and_is_capped():
    assert retry_delay(1, 0.5) == timedelta(seconds=2)
    assert retry_delay(3, 0.5) == timedelta(seconds=8)
    assert retry_delay(20, 0.999) < timedelta(seconds=300 * 1.5)


@pytest.mark.parametrize("text, kind, segments", [
    ("Laissez-la tranquille.", "text", 1),
    ("é è à ù É Ç", "text", 1),
    ("Ça suffit", "text", 1),              # Ç is in GSM-7, ç is not
    ("ça suffit", "unicode", 1),
    ("Merci d’arrêter", "unicode", 1),
    ("x" * 160, "text", 1),
    ("x" * 161, "text", 2),
    ("€" * 80, "text", 1),                 # extension characters count double
    ("€" * 81, "text", 2),
    ("ê" * 70, "unicode", 1),
    ("ê" * 71, "unicode", 2),
])
def test_encoding_and_segments_follow_gsm_03_38(text, kind, segments):
    result = encode(text)
    assert (result.vonage_type, result.segments) == (kind, segments)


def test_settings_fail_fast_naming_the_variable():
    with pytest.raises(ConfigError, match="RELOUS_SECRET_KEY"):
        Settings.from_env({})
    with pytest.raises(ConfigError, match="SMS_PROVIDER"):
        Settings.from_env({"SMS_PROVIDER": "carrier-pigeon"}, require_keys=False)
    with pytest.raises(ConfigError, match="VONAGE_API_KEY"):
        Settings.from_env({"SMS_PROVIDER": "vonage"}, require_keys=False)
    with pytest.raises(ConfigError, match="PORT"):
        Settings.from_env({"PORT": "eighty"}, require_keys=False)
    with pytest.raises(ConfigError, match="RELOUS_EVIDENCE_KEY"):
        Settings.from_env({"RELOUS_SECRET_KEY": "x" * 32, "RELOUS_EVIDENCE_KEY": "short"})
    with pytest.raises(ConfigError, match="RABBITMQ_MANAGEMENT_URL"):
        Settings.from_env({"RABBITMQ_MANAGEMENT_URL": "127.0.0.1:15672"}, require_keys=False)


def test_settings_defaults_match_the_contract():
    settings = Settings.from_env({}, require_keys=False)
    assert settings.database_url == "sqlite:///relous.db"
    assert settings.uses_embedded_broker
    assert (settings.port, settings.sms_provider) == (8000, "console")
    assert settings.vonage_signature_method == "sha256"
    assert settings.signature_max_age == 259200


def test_cloudamqp_url_is_used_when_broker_url_is_unset():
    env = {"CLOUDAMQP_URL": "amqp://u:p@host/v"}
    assert Settings.from_env(env, require_keys=False).broker_url == "amqp://u:p@host/v"
    env["BROKER_URL"] = "amqp://other/"
    assert Settings.from_env(env, require_keys=False).broker_url == "amqp://other/"


def test_md5hash_signature_matches_an_independent_vector():
    from shared.vonage.webhooks import expected_signature

    params = {"msisdn": "447700900001", "to": "447700900000", "text": "a&b=c",
              "timestamp": "1700000000"}
    string = "&msisdn=447700900001&text=a_b_c&timestamp=1700000000&to=447700900000"
    vector = hashlib.md5((string + "secret").encode(), usedforsecurity=False).hexdigest()
    assert expected_signature(params, "secret", "md5hash") == vector
