"""SMS providers: `vonage` (the real SDK) and `console` (prints, spends nothing).

A provider returns a `SendResult` whose `outcome` says what the bookkeeping may do next:
`sent` (billed: record it), `retry` (certainly not sent: try again later), `failed`
(refused for good) or `unknown` (it may have gone out: never send it again).
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Protocol, TextIO

from shared.rules.messages import SendResult, SentPart
from shared.rules.phones import mask
from shared.rules.segments import encode
from shared.settings import Settings

log = logging.getLogger(__name__)

# Vonage SMS API statuses (HTTP 200) that mean "not sent, try later".
RETRYABLE_STATUSES = {"1", "5"}
SEND_TIMEOUT_SECONDS = 10


class SmsProvider(Protocol):
    name: str

    def send(self, to: str, sender_id: str, text: str, client_ref: str) -> SendResult: ...


@dataclass
class ConsoleProvider:
    """Prints the reply with the number masked; for the demo and local runs."""

    stream: TextIO = field(default_factory=lambda: sys.stdout)
    name: str = "console"

    def send(self, to: str, sender_id: str, text: str, client_ref: str) -> SendResult:
        encoding = encode(text)
        print(f"[console] reply {client_ref} to {mask(to)} from {sender_id} "
              f"({encoding.segments} segment(s), {encoding.name}): {text}",
              file=self.stream, flush=True)
        return SendResult(
            "sent", parts=(SentPart(f"console-{client_ref}", Decimal(0)),),
            segments=encoding.segments,
        )


class VonageProvider:
    """Sends through the vonage 4.x SDK (form POST to `https://{rest_host}/sms/json`)."""

    name = "vonage"

    def __init__(self, api_key: str, api_secret: str, rest_host: str | None = None,
                 timeout: int = SEND_TIMEOUT_SECONDS) -> None:
        from vonage import Auth, HttpClientOptions, Vonage

        # One connection, so one attempt: the SDK re-POSTs a request whose connection
        # closed before the answer (RemoteDisconnected) up to `pool_maxsize` times, and
        # that request may have been sent already: a second SMS. Here it is `unknown`
        # (at most once). A process sends one SMS at a time, so one connection suffices.
        options: dict[str, object] = {"timeout": timeout, "pool_maxsize": 1}
        if rest_host:
            options["rest_host"] = rest_host
        # Sending uses the API secret only: a signature secret here would make the SDK sign
        # fields it does not send (VONAGE.md).
        self._client = Vonage(Auth(api_key=api_key, api_secret=api_secret),
                              HttpClientOptions(**options))

    def send(self, to: str, sender_id: str, text: str, client_ref: str) -> SendResult:
        import requests
        from vonage_http_client.errors import (
            AuthenticationError,
            ForbiddenError,
            HttpRequestError,
            RateLimitedError,
            ServerError,
        )
        from vonage_sms import PartialFailureError, SmsError, SmsMessage

        encoding = encode(text)
        message = SmsMessage(to=to, from_=sender_id, text=text, type=encoding.vonage_type,
                             client_ref=client_ref)
        try:
            response = self._client.sms.send(message)
        except PartialFailureError as error:
            # Some parts went out and were billed: record them, never resend the text.
            data = error.response if isinstance(error.response, dict) else self._last_json()
            return _result_from_parts("sent", data, encoding.segments,
                                      error="partial failure: some parts were refused",
                                      reason="partial_failure")
        except SmsError:
            data = self._last_json()
            status = str(((data or {}).get("messages") or [{}])[0].get("status", ""))
            reason = f"status_{status or 'unknown'}"
            outcome = "retry" if status in RETRYABLE_STATUSES else "failed"
            return SendResult(outcome, error=f"Vonage status {status}", reason=reason)
        except (RateLimitedError, ServerError) as error:
            return SendResult("retry", error=type(error).__name__, reason="http_retryable")
        except (AuthenticationError, ForbiddenError) as error:
            return SendResult("retry", error=type(error).__name__, reason="http_auth")
        except HttpRequestError as error:
            status_code = getattr(error.response, "status_code", 0)
            if status_code >= 500:
                return SendResult("retry", error=f"HTTP {status_code}", reason="http_retryable")
            return SendResult("unknown", error=f"HTTP {status_code}", reason="http_other")
        except (requests.ConnectTimeout, requests.exceptions.SSLError) as error:
            return SendResult("retry", error=type(error).__name__, reason="connect")
        except requests.ConnectionError as error:
            if _never_connected(error):
                return SendResult("retry", error="connection refused", reason="connect")
            return SendResult("unknown", error=type(error).__name__, reason="connection_lost")
        except requests.Timeout as error:
            return SendResult("unknown", error=type(error).__name__, reason="timeout")
        data = response.model_dump(by_alias=True)
        return _result_from_parts("sent", data, encoding.segments)

    def _last_json(self) -> dict | None:
        try:
            return self._client.http_client.last_response.json()
        except (AttributeError, ValueError):
            return None


def _never_connected(error: Exception) -> bool:
    """True when the request cannot have reached the provider (nothing was sent)."""
    text = repr(error)
    return any(marker in text for marker in ("NewConnectionError", "Connection refused",
                                             "Name or service not known"))


def _result_from_parts(outcome: str, data: dict | None, segments: int,
                       error: str = "", reason: str = "") -> SendResult:
    parts = []
    for entry in (data or {}).get("messages", []):
        if str(entry.get("status", "0")) != "0":
            continue
        message_id = entry.get("message-id") or entry.get("message_id")
        if message_id:
            parts.append(SentPart(str(message_id), _price(entry)))
    return SendResult(outcome, parts=tuple(parts), error=error, reason=reason,
                      segments=len(parts) or segments)


def _price(entry: dict) -> Decimal | None:
    raw = entry.get("message-price") or entry.get("message_price")
    try:
        return Decimal(str(raw)) if raw is not None else None
    except InvalidOperation:
        return None


def build_provider(settings: Settings) -> SmsProvider:
    """The provider named by SMS_PROVIDER."""
    if settings.sms_provider == "vonage":
        assert settings.vonage_api_key and settings.vonage_api_secret  # checked by Settings
        return VonageProvider(settings.vonage_api_key, settings.vonage_api_secret,
                              settings.vonage_rest_host)
    return ConsoleProvider()
