"""One frozen settings object, read once from the environment at process start.

Every variable is listed in ../shared/CONTRACT.md and in the README. A bad value fails
fast with a message that names the variable, so a misconfigured process never starts.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

SIGNATURE_METHODS = ("md5hash", "md5", "sha1", "sha256", "sha512")
SMS_PROVIDERS = ("vonage", "console")
DEFAULT_DATABASE_URL = "sqlite:///relous.db"
# The embedded broker (shared/embedded_broker.py): one SQLite file in this folder, so that
# web and worker processes on one machine share it and a crash loses nothing.
EMBEDDED_BROKER_URL = "embedded://"
DEFAULT_EMBEDDED_BROKER_DIR = ".relous/broker"


# The status page answers 401 in a fraction of a millisecond: a short password would fall
# to guessing.
MIN_STATUS_PASSWORD = 12


class ConfigError(ValueError):
    """A configuration value is missing or malformed; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    database_url: str = DEFAULT_DATABASE_URL
    broker_url: str = EMBEDDED_BROKER_URL
    embedded_broker_dir: str = DEFAULT_EMBEDDED_BROKER_DIR
    port: int = 8000
    sms_provider: str = "console"
    vonage_api_key: str | None = None
    vonage_api_secret: str | None = None
    vonage_rest_host: str | None = None
    vonage_signature_secret: str | None = None
    # Only the web reads it: with SMS_PROVIDER=vonage and no signature secret, `web`
    # starts only when this was set on purpose (ingest.create_app).
    allow_unsigned_webhooks: bool = False
    vonage_signature_method: str = "sha256"
    secret_key: str = ""
    evidence_key: str = ""
    signature_max_age: int = 259200
    metrics_token: str | None = None
    log_level: str = "INFO"
    sms_rate_per_second: int = 30
    lexicon_path: str | None = None
    retention_days: int = 90
    evidence_retention_days: int = 365
    rabbitmq_management_url: str | None = None
    status_password: str | None = None
    alert_webhook_url: str | None = None
    # Not from the environment: `relous demo --storm` turns the console's lines off.
    console_replies_printed: bool = True

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, *,
                 require_keys: bool = True, require_evidence_key: bool = True) -> Settings:
        """Build settings from the environment; commands that use no key skip their check.

        Without `require_evidence_key` (the web), RELOUS_EVIDENCE_KEY is not even read.
        """
        env = os.environ if environ is None else environ

        def get(name: str) -> str | None:
            value = env.get(name)
            return value if value not in (None, "") else None

        settings = cls(
            database_url=get("DATABASE_URL") or DEFAULT_DATABASE_URL,
            broker_url=get("BROKER_URL") or get("CLOUDAMQP_URL") or EMBEDDED_BROKER_URL,
            embedded_broker_dir=get("RELOUS_BROKER_DIR") or DEFAULT_EMBEDDED_BROKER_DIR,
            port=_int(env, "PORT", 8000, minimum=1, maximum=65535),
            sms_provider=(get("SMS_PROVIDER") or "console").lower(),
            vonage_api_key=get("VONAGE_API_KEY"),
            vonage_api_secret=get("VONAGE_API_SECRET"),
            vonage_rest_host=get("VONAGE_REST_HOST"),
            vonage_signature_secret=get("VONAGE_SIGNATURE_SECRET"),
            allow_unsigned_webhooks=_flag(env, "RELOUS_ALLOW_UNSIGNED_WEBHOOKS"),
            vonage_signature_method=(get("VONAGE_SIGNATURE_METHOD") or "sha256").lower(),
            secret_key=get("RELOUS_SECRET_KEY") or "",
            evidence_key=(get("RELOUS_EVIDENCE_KEY") or "") if require_evidence_key else "",
            signature_max_age=_int(env, "RELOUS_SIGNATURE_MAX_AGE", 259200, minimum=1),
            metrics_token=get("METRICS_TOKEN"),
            rabbitmq_management_url=get("RABBITMQ_MANAGEMENT_URL"),
            status_password=get("STATUS_PASSWORD"),
            alert_webhook_url=get("ALERT_WEBHOOK_URL"),
            log_level=(get("LOG_LEVEL") or "INFO").upper(),
            sms_rate_per_second=_int(env, "SMS_RATE_PER_SECOND", 30, minimum=1),
            lexicon_path=get("RELOUS_LEXICON_PATH"),
            retention_days=_int(env, "RELOUS_RETENTION_DAYS", 90, minimum=1),
            evidence_retention_days=_int(env, "RELOUS_EVIDENCE_RETENTION_DAYS", 365,
                                         minimum=1),
        )
        settings.validate(require_keys=require_keys, require_evidence_key=require_evidence_key)
        return settings

    def with_overrides(self, **changes: object) -> Settings:
        """A copy with some fields changed (tests and the demo build through this)."""
        return replace(self, **changes)  # type: ignore[arg-type]

    def validate(self, *, require_keys: bool = True, require_evidence_key: bool = True) -> None:
        """Raise ConfigError naming the first variable that is wrong."""
        if not re.match(r"^(postgres(ql)?|sqlite)://", self.database_url):
            raise ConfigError("DATABASE_URL must start with postgresql:// or sqlite:///")
        if self.sms_provider not in SMS_PROVIDERS:
            raise ConfigError(f"SMS_PROVIDER must be one of {', '.join(SMS_PROVIDERS)}")
        if self.sms_provider == "vonage" and not (self.vonage_api_key and self.vonage_api_secret):
            raise ConfigError(
                "VONAGE_API_KEY and VONAGE_API_SECRET are required with SMS_PROVIDER=vonage"
            )
        if self.vonage_signature_method not in SIGNATURE_METHODS:
            raise ConfigError(
                f"VONAGE_SIGNATURE_METHOD must be one of {', '.join(SIGNATURE_METHODS)}"
            )
        if self.rabbitmq_management_url and not re.match(r"^https?://",
                                                         self.rabbitmq_management_url):
            raise ConfigError("RABBITMQ_MANAGEMENT_URL must start with http:// or https://")
        if self.alert_webhook_url and not re.match(r"^https?://", self.alert_webhook_url):
            raise ConfigError("ALERT_WEBHOOK_URL must start with http:// or https://")
        if self.status_password is not None and \
                len(self.status_password.strip()) < MIN_STATUS_PASSWORD:
            raise ConfigError(f"STATUS_PASSWORD must be at least {MIN_STATUS_PASSWORD} "
                              "characters (the page answers anyone who guesses it); "
                              "`relous keys` prints random values you can use")
        if self.lexicon_path and not Path(self.lexicon_path).is_file():
            raise ConfigError(f"RELOUS_LEXICON_PATH: no file at {self.lexicon_path}")
        if logging.getLevelName(self.log_level) == f"Level {self.log_level}":
            raise ConfigError("LOG_LEVEL must be a Python logging level such as INFO or DEBUG")
        if not require_keys:
            return
        if len(self.secret_key) < 16:
            raise ConfigError(
                "RELOUS_SECRET_KEY is required (at least 16 characters); `relous keys` prints one"
            )
        if self.evidence_key:
            _check_fernet_key(self.evidence_key)
        elif require_evidence_key:
            raise ConfigError("RELOUS_EVIDENCE_KEY is required; `relous keys` prints one")

    @property
    def uses_embedded_broker(self) -> bool:
        return self.broker_url.startswith(("embedded://", "filesystem://"))

    @property
    def broker_folder(self) -> Path:
        return Path(self.embedded_broker_dir)


def _int(env: Mapping[str, str], name: str, default: int, *, minimum: int = 0,
         maximum: int | None = None) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {raw!r}") from None
    if value < minimum or (maximum is not None and value > maximum):
        raise ConfigError(f"{name} must be between {minimum} and {maximum or 'any'}, got {value}")
    return value


def _flag(env: Mapping[str, str], name: str) -> bool:
    """`1` is on, unset, empty or `0` off; anything else (`true`, `yes`) is refused rather
    than guessed, since these flags weaken a defence."""
    raw = env.get(name) or "0"
    if raw not in ("0", "1"):
        raise ConfigError(f"{name} must be 1 (on) or 0/unset (off), got {raw!r}")
    return raw == "1"


def _check_fernet_key(key: str) -> None:
    """A Fernet key or 64 hex characters (shared.vault derives the Fernet key from them)."""
    from shared.vault import BadKey, fernet_key

    try:
        fernet_key(key)
    except BadKey as error:
        raise ConfigError(f"RELOUS_EVIDENCE_KEY {error}; `relous keys` prints one") from None
