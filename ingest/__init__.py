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
from shared.settings import Settings
from shared.store.db import Database

log = logging.getLogger(__name__)

# Vonage's webhooks are a few hundred bytes; anything near this is not one.
MAX_BODY_BYTES = 16 * 1024


def create_app(settings: Settings | None = None, publisher: Publisher | None = None,
               *, configure_logs: bool = True) -> Flask:
    settings = settings or Settings.from_env()
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
        log.warning("VONAGE_SIGNATURE_SECRET is not set: webhook signatures are NOT checked")
    return app


def _http_error(error: HTTPException) -> tuple[Response, int]:
    """Every HTTP error as JSON `{"error", "field"}`, like the webhook rejections."""
    field = "body" if error.code == 413 else None
    code = error.code or 500
    return jsonify(error=error.description or error.name, field=field), code
