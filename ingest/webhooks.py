"""Vonage webhooks: verify, validate, publish, answer. No database on this path.

A webhook is answered 200 only once the broker confirmed its message; any other answer
makes Vonage retry (24 h for inbound SMS, 72 h for receipts).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from shared.broker import BrokerUnavailable
from shared.rules.messages import DeliveryReceipt, InboundSms
from shared.vonage.webhooks import (
    BadSignature,
    InvalidField,
    check_signature,
    parse_inbound,
    parse_receipt,
    printable_field,
    refuse_unsafe_characters,
)

log = logging.getLogger(__name__)
bp = Blueprint("webhooks", __name__)

FORM = "application/x-www-form-urlencoded"
JSON = "application/json"
# Longest request-derived value a log line may carry (escaped, then cut to this).
LOGGED_CHARS = 80


class RejectedRequest(Exception):
    """A webhook we refuse: answered with `code` and a JSON body naming the field."""

    def __init__(self, code: int, error: str, field: str | None = None) -> None:
        super().__init__(error)
        self.code = code
        self.error = error
        self.field = field


@bp.errorhandler(RejectedRequest)
def _rejected(error: RejectedRequest) -> tuple[Response, int]:
    log.info("webhook %s rejected %s: %s (field %s)", loggable(request.path), error.code,
             loggable(error.error), loggable(error.field))
    return jsonify(error=error.error, field=error.field), error.code


@bp.route("/webhooks/inbound", methods=["GET", "POST"])
def inbound() -> tuple[Response, int]:
    return _accept(parse_inbound, "relous.process_inbound")


@bp.route("/webhooks/status", methods=["GET", "POST"])
def status() -> tuple[Response, int]:
    return _accept(parse_receipt, "relous.apply_receipt")


def _accept(parse: Callable[[dict[str, str]], InboundSms | DeliveryReceipt],
            task_name: str) -> tuple[Response, int]:
    """Verify, validate with `parse`, then publish the payload for `task_name`."""
    params = _verified_params()
    try:
        payload = parse(params).to_payload()
    except InvalidField as error:
        raise RejectedRequest(400, error.error, error.field) from None
    return _publish(task_name, payload)


def _publish(task_name: str, payload: dict[str, Any]) -> tuple[Response, int]:
    try:
        current_app.extensions["relous.publisher"].publish(task_name, payload)
    except BrokerUnavailable as error:
        log.warning("broker unavailable (%s): answering 503 so that Vonage retries", error)
        return jsonify(error="broker unavailable, retry later", field=None), 503
    return jsonify(status="queued"), 200


def loggable(value: object, limit: int = LOGGED_CHARS) -> str:
    """A request-derived value for a log line: ASCII-escaped (no newline, no terminal
    control, no forged record) and bounded, so that no sender can write our logs."""
    text = "" if value is None else str(value)
    shown = ascii(text[:limit])
    return shown + f"...({len(text)} chars)" if len(text) > limit else shown


def _verified_params() -> dict[str, str]:
    """The request's fields, refused before the signature (which encodes them) when one
    holds a NUL or a lone surrogate; then the signature, when a secret is set."""
    params = _request_params()
    try:
        refuse_unsafe_characters(params)
    except InvalidField as error:
        raise RejectedRequest(400, error.error, error.field) from None
    settings = current_app.extensions["relous.settings"]
    if settings.vonage_signature_secret:
        try:
            check_signature(params, settings.vonage_signature_secret,
                            settings.vonage_signature_method,
                            max_age=settings.signature_max_age)
        except BadSignature as error:
            raise RejectedRequest(401, f"bad signature: {error}", "sig") from None
    return params


def _request_params() -> dict[str, str]:
    """The webhook's fields, from the query string (GET), a form or a JSON object (POST)."""
    if request.method == "GET":
        return request.args.to_dict()
    mimetype = request.mimetype
    if mimetype == FORM:
        return request.form.to_dict()
    if mimetype == JSON:
        return _json_params()
    raise RejectedRequest(415, f"unsupported content type {(mimetype or '(none)')[:64]!r}; "
                               f"send {FORM} or {JSON}", "Content-Type")


def _json_params() -> dict[str, str]:
    """A JSON object of strings and finite numbers. Parsed here rather than by Flask:
    NaN and Infinity are not JSON, and a deeply nested body raises RecursionError, which
    Flask's silent parsing lets through as a 500."""
    try:
        body = json.loads(request.get_data(cache=True), parse_constant=_no_constant)
    except (ValueError, RecursionError):
        raise RejectedRequest(400, "body must be a JSON object", "body") from None
    if not isinstance(body, dict):
        raise RejectedRequest(400, "body must be a JSON object", "body")
    params = {}
    for key, value in body.items():
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise RejectedRequest(400, "must be a string or a number", printable_field(key))
        if isinstance(value, float) and not math.isfinite(value):
            raise RejectedRequest(400, "must be a finite number", printable_field(key))
        params[key] = str(value)
    return params


def _no_constant(name: str) -> float:
    """`parse_constant` hook: NaN, Infinity and -Infinity are refused."""
    raise ValueError(f"{name} is not JSON")
