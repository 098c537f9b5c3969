"""RELOUS_EVIDENCE_KEY in both spellings: a Fernet key (`relous keys`) or 64 hex characters
(a platform's `secret` generator, e.g. the Heroku button's). Stored evidence depends on the
hex derivation, so a known-answer vector pins it."""

from __future__ import annotations

import base64
import os
import secrets
import subprocess
import sys

import pytest

from shared.settings import ConfigError, Settings
from shared.vault import BadKey, fernet_key, seal, unseal

SECRET_KEY = "s" * 32
# Known answer: the hex digits are the key's 32 bytes, re-encoded in url-safe base64.
PINNED_HEX = bytes(range(32)).hex()
PINNED_FERNET = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
# Sealed once with PINNED_HEX when hex keys were introduced; must open forever.
PINNED_TOKEN = ("gAAAAABrCNvs10Ak93UNPkidGsskhqwPRAcC5PcwxWFL90eWevb9Y20XALoS5nyq0Rdjzqo9Lvj_"
                "XhnjhWxEqtYn74FoGO52aUd71s7J9nrwcSXktkytwt0=")


def _settings(evidence_key: str) -> Settings:
    return Settings.from_env({"RELOUS_SECRET_KEY": SECRET_KEY,
                              "RELOUS_EVIDENCE_KEY": evidence_key})


def generated_secret() -> str:
    """What Heroku's `secret` generator produces: 64 random hex characters."""
    return secrets.token_hex(32)


# Fixed values: randomly generated parameters would differ between pytest-xdist workers.
@pytest.mark.parametrize("key", ["7VbJd8iZ3xK9nQ2mR5tW1yA4cE6gH0jL8oP3sU5vX7w=",
                                 "5e0c9a1f3b7d28e64c1a9f07b3d5e2c8a4f6b0d9e1c3a5f7082b4d6e8f1a3c57"],
                         ids=["fernet", "hex"])
def test_either_spelling_passes_settings_and_seals_then_opens(key):
    settings = _settings(key)
    sealed = seal("message of an abusive sender", settings.evidence_key)
    assert "abusive" not in sealed
    assert unseal(sealed, settings.evidence_key) == "message of an abusive sender"


def test_the_hex_derivation_is_pinned_forever():
    assert fernet_key(PINNED_HEX).decode() == PINNED_FERNET
    assert unseal(PINNED_TOKEN, PINNED_HEX) == "sealed once, opened forever"
    # The same bytes in either spelling, or hex in capitals, are one key.
    assert unseal(PINNED_TOKEN, PINNED_FERNET) == "sealed once, opened forever"
    assert unseal(PINNED_TOKEN, PINNED_HEX.upper()) == "sealed once, opened forever"


def test_a_hex_key_seals_differently_from_an_unrelated_key():
    sealed = seal("text", generated_secret())
    with pytest.raises(ValueError, match="does not open"):
        unseal(sealed, generated_secret())


def _run(code: str, key: str, *args: str) -> str:
    env = dict(os.environ, RELOUS_SECRET_KEY=SECRET_KEY, RELOUS_EVIDENCE_KEY=key)
    done = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


SEAL = ("import sys; from shared.settings import Settings; from shared.vault import seal; "
        "print(seal(sys.argv[1], Settings.from_env().evidence_key))")
UNSEAL = ("import sys; from shared.settings import Settings; from shared.vault import unseal; "
          "print(unseal(sys.argv[1], Settings.from_env().evidence_key))")


def test_two_processes_with_the_same_hex_key_read_each_others_evidence():
    key = generated_secret()
    from_worker = _run(SEAL, key, "sealed by the worker")
    assert _run(UNSEAL, key, from_worker) == "sealed by the worker"
    from_cli = _run(SEAL, key, "sealed by the CLI")
    assert unseal(from_cli, key) == "sealed by the CLI"


@pytest.mark.parametrize(("value", "says"), [
    (PINNED_HEX[:63], "has 63 hex characters; a hex key has exactly 64"),
    (PINNED_HEX + "0", "has 65 hex characters; a hex key has exactly 64"),
    ("z" * 64, "must be a Fernet key (32 bytes in url-safe base64) or exactly 64 hex"),
    (PINNED_FERNET[:-2], "must be a Fernet key"),
    ("clé-maison-pas-très-secrète-mais-longue-de-64-caractères-environ", "must be a Fernet"),
])
def test_a_bad_key_is_refused_at_start_naming_the_variable(value, says):
    with pytest.raises(ConfigError) as refused:
        _settings(value)
    message = str(refused.value)
    assert message.startswith("RELOUS_EVIDENCE_KEY ") and says in message
    assert "relous keys" in message, "says what to do"
    assert value not in message, "a key, even a wrong one, is never echoed"
    with pytest.raises(BadKey):
        seal("text", value)


@pytest.mark.parametrize("weak", ["0" * 64, "f" * 64, "0123456789abcdef" * 4,
                                  base64.urlsafe_b64encode(bytes(32)).decode()])
def test_a_key_typed_as_a_pattern_is_refused(weak):
    with pytest.raises(ConfigError, match="RELOUS_EVIDENCE_KEY is too regular"):
        Settings.from_env({"RELOUS_SECRET_KEY": "x" * 32, "RELOUS_EVIDENCE_KEY": weak})


@pytest.mark.parametrize("password", [" ", "short", " " * 20 + "abc"])
def test_a_short_status_password_stops_the_process(password):
    with pytest.raises(ConfigError, match="STATUS_PASSWORD must be at least 12"):
        Settings.from_env({"STATUS_PASSWORD": password}, require_keys=False)
