"""The ingest web process: Vonage webhooks in, broker messages out.

`create_app()` is the factory gunicorn calls (`ingest:create_app()`); tests pass their own
settings or publisher.
"""

from __future__ import annotations

import logging

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException

from shared.broker import Publisher, create_publisher
from shared.logs import configure_logging
from shared.settings import ConfigError, Settings
from shared.store.db import Database

log = logging.getLogger(__name__)

# Vonage's webhooks are a few hundred bytes; anything near this is not one.
MAX_BODY_BYTES = 16 * 1024


def create_app(settings: Settings | None = None, publisher: Publisher | None = None,
               *, configure_logs: bool = True) -> Flask:
    """The web app. It keeps no evidence key (it never decrypts or encrypts a number), and
    refuses to start unsigned with Vonage unless that was chosen explicitly."""
    settings = web_settings(settings or Settings.from_env(require_evidence_key=False))
    if configure_logs:
        configure_logging(settings.log_level)
    # No static route: the HTTP surface is the webhooks, health, metrics and the read-only
    # status page (SECURITY.md).
    app = Flask(__name__, static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    if publisher is None:
        publisher = create_publisher(settings)
    app.extensions["relous.settings"] = settings
    app.extensions["relous.publisher"] = publisher
    app.extensions["relous.database"] = Database(settings.database_url, pool_size=2)

    from ingest import health, metrics, status, webhooks

    app.register_blueprint(webhooks.bp)
    app.register_blueprint(health.bp)
    app.register_blueprint(metrics.bp)
    app.register_blueprint(status.bp)
    metrics.install_request_metrics(app)
    app.register_error_handler(HTTPException, _http_error)
    if not settings.vonage_signature_secret:
        log.warning("VONAGE_SIGNATURE_SECRET is not set: webhook signatures are NOT checked"
                    "%s", " (RELOUS_ALLOW_UNSIGNED_WEBHOOKS=1)"
                    if settings.allow_unsigned_webhooks else "")
    return app


def web_settings(settings: Settings) -> Settings:
    """The settings the web keeps: without the evidence key, which it never uses, so that
    a bug in the web cannot leak it; checked for webhooks that anyone could forge."""
    if (settings.sms_provider == "vonage" and not settings.vonage_signature_secret
            and not settings.allow_unsigned_webhooks):
        raise ConfigError(
            "VONAGE_SIGNATURE_SECRET is required with SMS_PROVIDER=vonage (anyone could "
            "forge webhooks); set it, or set RELOUS_ALLOW_UNSIGNED_WEBHOOKS=1 to accept that")
    return settings.with_overrides(evidence_key="")


def _http_error(error: HTTPException) -> tuple[Response, int]:
    """Every HTTP error as JSON `{"error", "field"}`, like the webhook rejections."""
    field = "body" if error.code == 413 else None
    code = error.code or 500
    return jsonify(error=error.description or error.name, field=field), code
