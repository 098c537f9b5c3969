"""The one-click deploy manifest (app.json: Heroku's button, also read by Scalingo and Dokku)
stays in step with the Procfile and with what Settings reads, and what the platform's
`secret` generator produces starts the app."""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from shared.settings import Settings
from shared.vault import seal, unseal

ROOT = Path(__file__).resolve().parent.parent
MANIFEST = json.loads((ROOT / "app.json").read_text(encoding="utf-8"))
ENV: dict[str, dict[str, object]] = MANIFEST["env"]

# What Settings reads but the manifest must not declare, and why.
PROVIDED_BY_THE_PLATFORM = {
    "DATABASE_URL": "set by the heroku-postgresql add-on",
    "CLOUDAMQP_URL": "set by the cloudamqp add-on",
    "PORT": "set by the platform on each web dyno",
}
NOT_FOR_A_PLATFORM = {
    "RELOUS_BROKER_DIR": "the embedded broker's folder: dynos share no disk, so a platform "
                         "uses the add-on's RabbitMQ",
}
# What the manifest declares that Settings does not read, and who reads it.
EXTRAS = {"WORKER_CONCURRENCY": "the Procfile's worker line"}
GENERATED = {"RELOUS_SECRET_KEY", "RELOUS_EVIDENCE_KEY", "STATUS_PASSWORD", "METRICS_TOKEN"}
VONAGE_REQUIRED = {"VONAGE_API_KEY", "VONAGE_API_SECRET", "VONAGE_SIGNATURE_SECRET",
                   "VONAGE_SIGNATURE_METHOD"}
ADDONS = {"heroku-postgresql": "DATABASE_URL", "cloudamqp": "CLOUDAMQP_URL"}
# app.json keys Heroku documents (devcenter.heroku.com/articles/app-json-schema).
TOP_LEVEL_KEYS = {"name", "description", "keywords", "website", "repository", "logo",
                  "success_url", "scripts", "env", "formation", "image", "addons",
                  "buildpacks", "environments", "stack"}
ENV_KEYS = {"description", "value", "required", "generator"}
# What Heroku's `secret` generator produces: 64 hex characters.
HEX_SECRET = re.compile(r"[0-9a-f]{64}")


def generated_secret() -> str:
    return secrets.token_hex(32)


def procfile() -> dict[str, str]:
    lines = (ROOT / "Procfile").read_text(encoding="utf-8").splitlines()
    found = (re.match(r"^([A-Za-z0-9_-]+):\s*(.+)$", line) for line in lines)
    return {match[1]: match[2] for match in found if match}


class Recording(Mapping[str, str]):
    """An environment that notes every name looked up in it."""

    def __init__(self, values: Mapping[str, str]) -> None:
        self._values = dict(values)
        self.read: set[str] = set()

    def __getitem__(self, name: str) -> str:
        self.read.add(name)
        return self._values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)


def deployed_environment() -> dict[str, str]:
    """What a button deploy sets: the manifest's values, generated secrets, the Vonage
    credentials the operator types, and the add-ons' URLs."""
    env = {name: str(spec["value"]) for name, spec in ENV.items() if "value" in spec}
    env.update({name: generated_secret() for name, spec in ENV.items()
                if spec.get("generator") == "secret"})
    env.update(VONAGE_API_KEY="abcd1234", VONAGE_API_SECRET="Secret-from-the-dashboard1",
               VONAGE_SIGNATURE_SECRET="signature-secret-from-vonage-support")
    env.update(DATABASE_URL="postgres://u:p@ec2-1-2-3-4.compute-1.amazonaws.com:5432/d1",
               CLOUDAMQP_URL="amqps://u:p@rat.rmq2.cloudamqp.com/u", PORT="31337")
    return env


def test_manifest_parses_with_only_the_keys_heroku_documents():
    assert set(MANIFEST) <= TOP_LEVEL_KEYS
    assert 3 <= len(MANIFEST["name"]) <= 30 and len(MANIFEST["description"]) <= 140
    assert MANIFEST["repository"].startswith("https://github.com/")
    assert MANIFEST["keywords"] and all(isinstance(k, str) for k in MANIFEST["keywords"])
    for name, spec in ENV.items():
        assert re.fullmatch(r"[A-Z][A-Z0-9_]*", name)
        assert set(spec) <= ENV_KEYS, name
        assert isinstance(spec["description"], str) and spec["description"], name
        assert isinstance(spec.get("value", ""), str), f"{name}: values are strings"
        assert spec.get("generator", "secret") == "secret", name
        assert isinstance(spec.get("required", True), bool), name


def test_formation_is_exactly_the_procfiles_long_running_types_one_each():
    types = procfile()
    assert set(types) == {"release", "web", "worker", "beat"}
    assert "release" not in MANIFEST["formation"], \
        "release is the release phase, run once per deploy, not a dyno kept running"
    assert set(MANIFEST["formation"]) == set(types) - {"release"}
    for name, spec in MANIFEST["formation"].items():
        assert spec["quantity"] == 1, f"{name}: one each (exactly one beat)"
        assert spec["size"] == "basic", f"{name}: the cheapest dyno that never sleeps"


def test_the_release_phase_migrates_and_no_postdeploy_script_repeats_it():
    assert procfile()["release"] == "relous db upgrade"
    scripts = json.dumps(MANIFEST.get("scripts", {}))
    assert "db upgrade" not in scripts, "the Procfile's release runs on every deploy already"


def test_env_names_exactly_the_variables_settings_reads():
    environment = Recording(deployed_environment())
    Settings.from_env(environment, require_keys=True, require_evidence_key=True)
    read = environment.read
    assert {"DATABASE_URL", "RELOUS_EVIDENCE_KEY", "VONAGE_API_KEY"} <= read, "recorded"
    assert set(PROVIDED_BY_THE_PLATFORM) | set(NOT_FOR_A_PLATFORM) <= read, \
        "an exclusion that Settings no longer reads must leave these lists"
    expected = (read - set(PROVIDED_BY_THE_PLATFORM) - set(NOT_FOR_A_PLATFORM)) | set(EXTRAS)
    assert set(ENV) == expected
    assert not set(EXTRAS) & read


def test_extras_are_read_where_the_manifest_says_with_the_same_default():
    worker = procfile()["worker"]
    assert "${WORKER_CONCURRENCY:-" + str(ENV["WORKER_CONCURRENCY"]["value"]) + "}" in worker


def test_secrets_are_generated_and_vonage_credentials_are_asked_for():
    assert {name for name, spec in ENV.items() if spec.get("generator") == "secret"} \
        == GENERATED
    for name in GENERATED | VONAGE_REQUIRED | {"SMS_PROVIDER"}:
        assert ENV[name].get("required", True) is True, name
    assert ENV["SMS_PROVIDER"]["value"] == "vonage"
    for name in VONAGE_REQUIRED - {"VONAGE_SIGNATURE_METHOD"}:
        assert "value" not in ENV[name], f"{name} is the operator's, never a default"


def test_optional_values_are_exactly_the_app_defaults():
    optional = {name: str(spec["value"]) for name, spec in ENV.items()
                if spec.get("required") is False and "value" in spec and name not in EXTRAS}
    assert {"LOG_LEVEL", "RELOUS_RETENTION_DAYS", "RELOUS_ALLOW_UNSIGNED_WEBHOOKS"} <= \
        set(optional)
    assert Settings.from_env(optional, require_keys=False) == \
        Settings.from_env({}, require_keys=False)
    unset = [name for name, spec in ENV.items()
             if spec.get("required") is False and "value" not in spec]
    assert Settings.from_env(dict.fromkeys(unset, ""), require_keys=False) == \
        Settings.from_env({}, require_keys=False), "left empty means unset"


def test_addons_provide_the_urls_settings_reads():
    plans = [addon["plan"] if isinstance(addon, dict) else addon for addon in MANIFEST["addons"]]
    assert {plan.split(":")[0] for plan in plans} == set(ADDONS)
    assert not set(ADDONS.values()) & set(ENV), "the add-ons set these, not the operator"
    settings = Settings.from_env(deployed_environment())
    assert settings.database_url.startswith("postgres://")
    assert settings.broker_url.startswith("amqps://") and not settings.uses_embedded_broker


@pytest.mark.parametrize("attempt", range(5))
def test_generated_secrets_pass_settings_validation(attempt):
    env = deployed_environment()
    assert all(HEX_SECRET.fullmatch(env[name]) for name in GENERATED)
    settings = Settings.from_env(env)
    assert settings.evidence_key == env["RELOUS_EVIDENCE_KEY"]
    assert unseal(seal("evidence", settings.evidence_key), settings.evidence_key) == "evidence"
    web = Settings.from_env(env, require_evidence_key=False)
    assert web.status_password == env["STATUS_PASSWORD"] and web.evidence_key == ""


def test_a_generated_evidence_key_seals_in_the_worker_and_opens_in_the_cli(
        db, tmp_path, monkeypatch):
    import csv
    from datetime import UTC, datetime
    from decimal import Decimal

    from click.testing import CliRunner

    from shared.store.campaigns import add_campaign
    from shared.store.db import database_for
    from tests.helpers import record_flood
    from workers.cli import main

    monkeypatch.setenv("RELOUS_EVIDENCE_KEY", generated_secret())
    settings = Settings.from_env()
    now = datetime.now(UTC)
    with database_for(settings.database_url).transaction() as tx:
        add_campaign(tx, "33700000018", "Stop.", delay_seconds=0, window_seconds=86400,
                     price_per_segment=Decimal("0.08"), allow_multipart=False, now=now)
        record_flood(tx, "33700000018", "33611110000", "HEX", settings.secret_key,
                     settings.evidence_key, now)
    stored = db.execute("SELECT encrypted_number FROM evidence").fetchall()
    assert len(stored) == 1 and "33611110000" not in stored[0]["encrypted_number"]
    out = tmp_path / "evidence.csv"
    result = CliRunner().invoke(main, ["evidence", "export", "--campaign", "33700000018",
                                       "--out", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert {row["sender_number"] for row in csv.DictReader(out.open())} == {"33611110000"}
