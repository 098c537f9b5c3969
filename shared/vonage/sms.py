"""SMS providers: `vonage` (the real SDK) and `console` (prints, spends nothing).

A provider returns a `SendResult` whose `outcome` says what the bookkeeping may do next:
`sent` (billed: record it), `retry` (certainly not sent: try again later), `failed`
(refused for good) or `unknown` (it may have gone out: never send it again).

One POST per send: the SDK's own re-POST on RemoteDisconnected is bounded by
`pool_maxsize=1`, urllib3's by `max_retries=0` (its Retry re-POSTs after any "other" error,
e.g. an SSLError while the answer is read, whatever the method).

What an answer proves. Nothing was sent: connection refused, a connect time-out, a TLS
error raised inside the handshake (no byte of the request is written before it completes;
told apart by the handshake frame on the SSL error's traceback, or a failed certificate
verification), 401/403 (refused at authentication), 429 (a rate limiter refused it, RFC
6585) and 503 *with* Retry-After (the server shed load and says when to come back).
Maybe sent, `unknown`: a TLS error after the handshake, a time-out or connection lost
after the request left, and every other 5xx. A 500 is Vonage (or a proxy) failing while
handling the request, possibly after the SMS was queued; a 502 or 504 is an edge proxy
that forwarded the request and got no valid answer in time, or none at all; a 503
without Retry-After is also what proxies answer when the upstream reset the connection
after the request reached it (Envoy's "upstream reset before headers",
envoyproxy/envoy#17432). A second SMS to a harasser is worse than a missing one, so
these are never retried.

A multipart answer with no accepted part is classed like one part, by its statuses: all
retryable (1, 5) `retry`, else `failed` (a status-0 part without message-id: `unknown`).
A part without `message-price` keeps `price` None (unknown, not 0).
"""

from __future__ import annotations

import logging
import ssl
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
    """Prints the reply with the number masked (nothing with no stream: a demo storm sends
    thousands); for the demo and local runs. It reports no price, so a reply is charged
    its estimate, as a real send whose price Vonage did not give: the demo's spend is what
    the replies would have cost."""

    stream: TextIO | None = field(default_factory=lambda: sys.stdout)
    name: str = "console"

    def send(self, to: str, sender_id: str, text: str, client_ref: str) -> SendResult:
        encoding = encode(text)
        if self.stream is not None:
            print(f"[console] reply {client_ref} to {mask(to)} from {sender_id} "
                  f"({encoding.segments} segment(s), {encoding.name}): {text}",
                  file=self.stream, flush=True)
        return SendResult(
            "sent", parts=(SentPart(f"console-{client_ref}", None),),
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
        # And no transport-level retry at all (urllib3's Retry), for the same reason.
        options: dict[str, object] = {"timeout": timeout, "pool_maxsize": 1, "max_retries": 0}
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
            result = _result_from_parts("sent", data, encoding.segments,
                                        error="partial failure: some parts were refused",
                                        reason="partial_failure")
            return result if result.parts else _refused(data)
        except SmsError:
            return _refused(self._last_json())
        except RateLimitedError as error:
            return SendResult("retry", error=type(error).__name__, reason="http_retryable")
        except (AuthenticationError, ForbiddenError) as error:
            return SendResult("retry", error=type(error).__name__, reason="http_auth")
        except HttpRequestError as error:  # ServerError (500) included
            response = error.response
            status_code = getattr(response, "status_code", 0)
            if status_code == 503 and getattr(response, "headers", {}).get("Retry-After"):
                return SendResult("retry", error="HTTP 503", reason="http_retryable")
            reason = "http_ambiguous" if status_code >= 500 else "http_other"
            return SendResult("unknown", error=f"HTTP {status_code}", reason=reason)
        except requests.ConnectTimeout as error:
            return SendResult("retry", error=type(error).__name__, reason="connect")
        except requests.exceptions.SSLError as error:
            if _in_tls_handshake(error):
                return SendResult("retry", error=type(error).__name__, reason="tls_handshake")
            return SendResult("unknown", error=type(error).__name__, reason="tls_lost")
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


def _refused(data: dict | None) -> SendResult:
    """No part accepted: `retry` when every status says "try later", else `failed`."""
    statuses = [str(entry.get("status", "")) for entry in (data or {}).get("messages") or []]
    statuses = statuses or [""]
    if "0" in statuses:  # accepted, yet no message-id to record: it may have gone out
        return SendResult("unknown", error="accepted part without message-id",
                          reason="status_0_unidentified")
    outcome = "retry" if all(s in RETRYABLE_STATUSES for s in statuses) else "failed"
    status = next((s for s in statuses if s not in RETRYABLE_STATUSES), statuses[0])
    return SendResult(outcome, error=f"Vonage status {status}",
                      reason=f"status_{status or 'unknown'}")


def _in_tls_handshake(error: BaseException) -> bool:
    """True when the SSL error under `error` was raised inside the TLS handshake (or is a
    failed certificate verification): no byte of the request had been written."""
    seen: set[int] = set()
    todo: list[object] = [error]
    while todo:
        item = todo.pop()
        if not isinstance(item, BaseException) or id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, ssl.SSLCertVerificationError):
            return True
        if isinstance(item, ssl.SSLError):
            frame = item.__traceback__
            while frame is not None:
                if frame.tb_frame.f_code.co_name == "do_handshake":
                    return True
                frame = frame.tb_next
        todo.extend((*item.args, getattr(item, "reason", None), item.__cause__,
                     item.__context__))
    return False


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
    return ConsoleProvider(stream=sys.stdout if settings.console_replies_printed else None)
