"""Builders of Vonage webhooks for tests, signed the way Vonage signs them."""

from __future__ import annotations

import time
import uuid

from vonage import Auth

from tests.conftest import SIGNATURE_SECRET


def sign(params: dict[str, str], secret: str = SIGNATURE_SECRET,
         method: str = "sha256", timestamp: int | None = None) -> dict[str, str]:
    """Add `timestamp` and `sig` as Vonage would (HMAC, computed by the vonage SDK)."""
    signed = dict(params)
    signed["timestamp"] = str(timestamp if timestamp is not None else int(time.time()))
    signed["sig"] = Auth(api_key="k", signature_secret=secret,
                         signature_method=method).sign_params(dict(signed))
    return signed


def inbound(msisdn: str = "33612345621", to: str = "33700000001", text: str = "Salut",
            message_id: str | None = None, **extra: str) -> dict[str, str]:
    """An inbound-SMS webhook's fields, unsigned."""
    params = {
        "msisdn": msisdn, "to": to, "messageId": message_id or uuid.uuid4().hex[:16].upper(),
        "text": text, "type": "text", "keyword": text.split(" ")[0].upper(),
        "message-timestamp": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
        "api-key": "k",
    }
    params.update(extra)
    return params


def receipt(message_id: str, status: str = "delivered", price: str = "0.03330000",
            **extra: str) -> dict[str, str]:
    params = {
        "msisdn": "33612345621", "to": "33700000001", "network-code": "20801",
        "messageId": message_id, "price": price, "status": status, "scts": "2611251200",
        "err-code": "0", "api-key": "k",
        "message-timestamp": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
    }
    params.update(extra)
    return params
