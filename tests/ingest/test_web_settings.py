"""What the web process accepts to start with, and which secrets it keeps."""

from __future__ import annotations

import logging
import os

import pytest

from ingest import create_app
from shared.settings import ConfigError, Settings


def test_vonage_without_signature_secret_refuses_to_start(monkeypatch):
    """Unsigned webhooks with a real provider let anyone forge inbound SMS: not by default."""
    monkeypatch.delenv("VONAGE_SIGNATURE_SECRET")
    monkeypatch.delenv("RELOUS_ALLOW_UNSIGNED_WEBHOOKS", raising=False)
    with pytest.raises(ConfigError) as refused:
        create_app(configure_logs=False)
    message = str(refused.value)
    assert "\n" not in message
    assert "VONAGE_SIGNATURE_SECRET" in message and "RELOUS_ALLOW_UNSIGNED_WEBHOOKS=1" in message
    with pytest.raises(ConfigError):
        create_app(Settings.from_env().with_overrides(vonage_signature_secret=None),
                   configure_logs=False)


def test_unsigned_vonage_starts_when_allowed_explicitly_and_says_so(monkeypatch, caplog):
    monkeypatch.delenv("VONAGE_SIGNATURE_SECRET")
    monkeypatch.setenv("RELOUS_ALLOW_UNSIGNED_WEBHOOKS", "1")
    with caplog.at_level(logging.WARNING, logger="ingest"):
        app = create_app(configure_logs=False)
    assert app.extensions["relous.settings"].allow_unsigned_webhooks is True
    assert "NOT checked" in caplog.text and "RELOUS_ALLOW_UNSIGNED_WEBHOOKS=1" in caplog.text


def test_console_provider_needs_no_signature_secret():
    settings = Settings.from_env().with_overrides(sms_provider="console",
                                                  vonage_signature_secret=None)
    assert create_app(settings, configure_logs=False).extensions["relous.settings"]


@pytest.mark.parametrize("raw, allowed", [("1", True), ("0", False), ("", False)])
def test_allow_unsigned_flag_values(raw, allowed):
    env = dict(os.environ, RELOUS_ALLOW_UNSIGNED_WEBHOOKS=raw)
    assert Settings.from_env(env).allow_unsigned_webhooks is allowed


@pytest.mark.parametrize("raw", ["true", "yes", "on", "2", " 1"])
def test_allow_unsigned_flag_refuses_guesses(raw):
    with pytest.raises(ConfigError, match="RELOUS_ALLOW_UNSIGNED_WEBHOOKS must be 1"):
        Settings.from_env(dict(os.environ, RELOUS_ALLOW_UNSIGNED_WEBHOOKS=raw))


def test_the_web_keeps_no_evidence_key():
    """The web never encrypts nor decrypts a number: a leak of its settings (a debug page,
    a bug) must not leak the key that opens the evidence."""
    key = os.environ["RELOUS_EVIDENCE_KEY"]
    from_env = create_app(configure_logs=False).extensions["relous.settings"]
    given = Settings.from_env()
    assert given.evidence_key == key
    passed = create_app(given, configure_logs=False).extensions["relous.settings"]
    for settings in (from_env, passed):
        assert settings.evidence_key == ""
        assert key not in repr(settings)
    assert given.evidence_key == key, "the caller's settings (the demo's workers) keep it"


def test_the_web_starts_without_an_evidence_key(monkeypatch):
    """Least privilege: a deployment may give the key to workers and the CLI only."""
    monkeypatch.delenv("RELOUS_EVIDENCE_KEY")
    with pytest.raises(ConfigError, match="RELOUS_EVIDENCE_KEY"):
        Settings.from_env()
    assert create_app(configure_logs=False).extensions["relous.settings"].evidence_key == ""
