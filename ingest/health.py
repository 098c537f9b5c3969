"""Health endpoints: `/healthz` (this process serves) and `/readyz` (its dependencies answer)."""

from __future__ import annotations

import logging

from flask import Blueprint, Response, current_app, jsonify

log = logging.getLogger(__name__)
bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> tuple[Response, int]:
    return jsonify(status="ok"), 200


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    """200 when the broker and the database answer; else 503 naming which failed."""
    checks = {
        "broker": current_app.extensions["relous.publisher"].ping,
        "database": current_app.extensions["relous.database"].ping,
    }
    failed = {}
    for name, check in checks.items():
        try:
            check()
        except Exception as error:  # a readiness probe reports; it does not crash
            failed[name] = type(error).__name__
    if failed:
        log.warning("not ready: %s", failed)
        return jsonify(status="unavailable", failed=failed), 503
    return jsonify(status="ok"), 200
