"""Vonage webhooks as data: validation of inbound SMS and delivery receipts, and signatures.

Pure functions: a dict of string parameters in, a validated payload or an `InvalidField`
out. The web process publishes the payload; the workers receive it as a plain dict.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from datetime import UTC, datetime
from decimal import Decimal
from functools import cache
from typing import Any

from shared.rules.messages import DeliveryReceipt, InboundSms
from shared.rules.phones import is_phone_number

MAX_TEXT_LENGTH = 4000
MAX_ID_LENGTH = 64
RECEIPT_STATUSES = (
    "delivered", "expired", "failed", "rejected", "accepted", "buffered", "unknown", "undelivered",
)
MESSAGE_TYPES = ("text", "unicode", "binary")
# No ':' — the store's keys are `concat:<first part id>`; a message id must never be one.
_ID = re.compile(r"^[A-Za-z0-9._-]+$")
# NUL: PostgreSQL text cannot hold it. Lone surrogates: no encoding can write them (the
# signature, the broker and the database all encode). Either is refused in any field.
_UNSAFE_CHARACTERS = re.compile("[\x00\ud800-\udfff]")
# A price per message part, as Vonage writes it ("0.03330000"): plain decimal notation,
# no sign, exponent, NaN or infinity. 100 EUR is far above any real price per part and far
# below what the NUMERIC(14, 8) columns hold, so an accepted price never fails a worker.
_PRICE = re.compile(r"\A[0-9]{1,3}(\.[0-9]{1,12})?\Z")
MAX_RECEIPT_PRICE = Decimal(100)
_VONAGE_TIMESTAMP = "%Y-%m-%d %H:%M:%S"
FUTURE_TOLERANCE_SECONDS = 300


class InvalidField(ValueError):
    """A webhook parameter is missing or malformed."""

    def __init__(self, field: str, error: str) -> None:
        super().__init__(f"{field}: {error}")
        self.field = field
        self.error = error


class BadSignature(ValueError):
    """The webhook's signature is missing, wrong or too old."""


def refuse_unsafe_characters(params: dict[str, str]) -> None:
    """Raise InvalidField for a NUL or a lone surrogate in any key or value.

    Called before the signature is checked (it encodes) and by both parsers, so that
    nothing downstream ever meets a string it cannot encode or store.
    """
    for key, value in params.items():
        if _UNSAFE_CHARACTERS.search(key):
            raise InvalidField(printable_field(key), "field name holds a NUL or lone surrogate")
        if _UNSAFE_CHARACTERS.search(value):
            raise InvalidField(printable_field(key), "holds a NUL or a lone surrogate")


def printable_field(key: str) -> str:
    """A field name safe to echo in a response: ASCII-escaped when odd, at most 64 chars."""
    if key.isascii() and key.isprintable() and len(key) <= 64:
        return key
    return ascii(key)[1:-1][:64]


def parse_inbound(params: dict[str, str]) -> InboundSms:
    """Validate an inbound-SMS webhook; raise InvalidField naming the first bad field."""
    refuse_unsafe_characters(params)
    message_type = params.get("type", "text") or "text"
    if message_type not in MESSAGE_TYPES:
        raise InvalidField("type", f"must be one of {', '.join(MESSAGE_TYPES)}")
    text = params.get("text")
    if text is None:
        if message_type != "binary":
            raise InvalidField("text", "is required")
        text = ""
    if len(text) > MAX_TEXT_LENGTH:
        raise InvalidField("text", f"is longer than {MAX_TEXT_LENGTH} characters")
    concat_ref = concat_part = concat_total = None
    if params.get("concat", "").lower() == "true":
        concat_ref = _identifier(params, "concat-ref")
        concat_total = _bounded_int(params, "concat-total", 1, 255)
        concat_part = _bounded_int(params, "concat-part", 1, concat_total)
    return InboundSms(
        message_id=_identifier(params, "messageId"),
        msisdn=_phone(params, "msisdn"),
        to=_phone(params, "to"),
        text=text,
        type=message_type,
        keyword=params.get("keyword", "")[:100],
        message_timestamp=_vonage_timestamp(params, "message-timestamp"),
        concat_ref=concat_ref,
        concat_part=concat_part,
        concat_total=concat_total,
    )


def parse_receipt(params: dict[str, str]) -> DeliveryReceipt:
    """Validate a delivery receipt; raise InvalidField naming the first bad field."""
    refuse_unsafe_characters(params)
    status = params.get("status", "")
    if not status:
        raise InvalidField("status", "is required")
    if status not in RECEIPT_STATUSES:
        raise InvalidField("status", f"must be one of {', '.join(RECEIPT_STATUSES)}")
    price = _price(params)
    client_ref = params.get("client-ref") or None
    if client_ref is not None and len(client_ref) > 100:
        raise InvalidField("client-ref", "is longer than 100 characters")
    return DeliveryReceipt(
        message_id=_identifier(params, "messageId"),
        status=status,
        err_code=_bounded_int(params, "err-code", 0, 9999) if params.get("err-code") else 0,
        price=price,
        client_ref=client_ref,
        to=params.get("to", "")[:32],
        message_timestamp=_vonage_timestamp(params, "message-timestamp"),
    )


def signing_string(params: dict[str, str]) -> str:
    """Vonage's string to sign: sorted `&key=value` pairs, `&` and `=` in values made `_`."""
    return "".join(
        "&{}={}".format(key, str(params[key]).replace("&", "_").replace("=", "_"))
        for key in sorted(params)
        if key != "sig"
    )


def expected_signature(params: dict[str, str], secret: str, method: str) -> str:
    """The hex signature Vonage would send for these parameters."""
    message = signing_string(params)
    if method == "md5hash":
        return hashlib.md5((message + secret).encode(), usedforsecurity=False).hexdigest()
    return hmac.new(secret.encode(), message.encode(), getattr(hashlib, method)).hexdigest()


def check_signature(params: dict[str, str], secret: str, method: str, *, max_age: int,
                    now: datetime | None = None) -> None:
    """Raise BadSignature unless `sig` is right and the signed `timestamp` is fresh.

    The HMAC methods are checked by the vonage SDK's own `Auth.check_signature`; `md5hash`
    (the dashboard's default) is not in the SDK and is computed here.
    """
    sig = params.get("sig")
    if not sig:
        raise BadSignature("missing sig")
    if not (sig.isascii() and sig.isalnum()):
        raise BadSignature("malformed sig: hex digits expected")
    timestamp = params.get("timestamp", "")
    if not timestamp.isdigit():
        raise BadSignature("missing or malformed signed timestamp")
    if method == "md5hash":
        valid = hmac.compare_digest(sig.lower(), expected_signature(params, secret, method))
    else:
        valid = _verifier(secret, method).check_signature(dict(params))
    if not valid:
        raise BadSignature("signature does not match")
    current = (now or datetime.now(UTC)).timestamp()
    age = current - int(timestamp)
    if age > max_age:
        raise BadSignature("signed timestamp is too old")
    if age < -FUTURE_TOLERANCE_SECONDS:
        raise BadSignature("signed timestamp is in the future")


@cache
def _verifier(secret: str, method: str) -> Any:
    """The SDK's webhook verifier for a secret and method (built once: it is not cheap)."""
    from vonage import Auth

    return Auth(api_key="webhook", signature_secret=secret, signature_method=method)


def is_identifier(value: str) -> bool:
    """A provider id or ref as this service accepts it (see `_ID`)."""
    return 0 < len(value) <= MAX_ID_LENGTH and bool(_ID.match(value))


def _identifier(params: dict[str, str], field: str) -> str:
    value = params.get(field, "")
    if not value:
        raise InvalidField(field, "is required")
    if len(value) > MAX_ID_LENGTH or not _ID.match(value):
        raise InvalidField(field, f"must be at most {MAX_ID_LENGTH} letters, digits or ._-")
    return value


def _price(params: dict[str, str]) -> str | None:
    """The receipt's price: a finite, non-negative, bounded decimal (see `_PRICE`)."""
    price = params.get("price") or None
    if price is not None and not (_PRICE.match(price)
                                  and Decimal(price) <= MAX_RECEIPT_PRICE):
        raise InvalidField("price", f"must be a decimal number from 0 to {MAX_RECEIPT_PRICE}, "
                                    "e.g. 0.03330000")
    return price


def _phone(params: dict[str, str], field: str) -> str:
    value = params.get(field, "")
    if not value:
        raise InvalidField(field, "is required")
    if not is_phone_number(value):
        raise InvalidField(field, "must be 6 to 15 digits, E.164 without '+'")
    return value


def _bounded_int(params: dict[str, str], field: str, low: int, high: int) -> int:
    value = params.get(field, "")
    if not value:
        raise InvalidField(field, "is required")
    if not value.isdigit() or not low <= int(value) <= high:
        raise InvalidField(field, f"must be a whole number from {low} to {high}")
    return int(value)


def _vonage_timestamp(params: dict[str, str], field: str) -> str | None:
    value = params.get(field)
    if not value:
        return None
    try:
        datetime.strptime(value, _VONAGE_TIMESTAMP)
    except ValueError:
        raise InvalidField(field, "must be YYYY-MM-DD HH:MM:SS (UTC)") from None
    return value
