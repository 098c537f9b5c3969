"""A local HTTPS server that speaks Vonage's SMS API wire format (POST /sms/json).

Used through the real `vonage` SDK in tests and benchmarks: the SDK only speaks HTTPS, so
the server has a certificate for 127.0.0.1 from a throwaway CA (trustme), and clients
trust it through REQUESTS_CA_BUNDLE. Answers follow the real response shape
(`message-count`, `messages[]` with `status`, `message-id`, `message-price`,
`remaining-balance`, `network`, `client-ref`), one entry per billed part, and can be told
to answer throttled (status 1), other statuses, HTTP errors, slowly, or not at all, to
leave out `message-price`, or to answer with a corrupt TLS record after reading the POST.

Run alone: `python -m tests.fake_vonage --port 8443 --ca-out /tmp/fake-ca.pem`.
"""

from __future__ import annotations

import argparse
import base64
import itertools
import json
import os
import shutil
import socket
import ssl
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs

import trustme

from shared.rules.segments import encode

PRICE_PER_PART = Decimal("0.0333")
# `handle`'s answer for `drop="corrupt"`: the SMS went out, the reply is a corrupt TLS record.
CORRUPT = "corrupt"
CORRUPT_RECORD = b"\x17\x03\x03\x00\x20" + b"\x5a" * 32  # TLS data no key decrypts
Answer = tuple[int, dict] | tuple[int, dict, dict[str, str]] | str | None


@dataclass
class SentSms:
    to: str
    sender: str
    text: str
    type: str
    client_ref: str | None
    message_ids: list[str]
    price: Decimal
    at: float = field(default_factory=time.time)


@dataclass
class Behaviour:
    """One scripted answer: a Vonage status (HTTP 200), an HTTP error code, and/or a delay.

    `drop`: after the delay, close the connection without an answer, having sent the SMS
    (`"sent"`: the answer is lost on the way back) or not (`"unsent"`: the provider hangs
    up, or hangs past the client's time-out). A delay alone longer than the client's
    time-out is another case: the client gives up, the SMS still goes. `"corrupt"`: the
    SMS is sent, then the answer is a corrupt TLS record (an SSL error after the request
    left, while the answer is read).
    """

    status: str = "0"
    http_status: int = 200
    delay: float = 0.0
    failed_parts: int = 0  # of a multipart send, the last N parts are refused (part_status)
    drop: str = ""  # "", "sent", "unsent" or "corrupt"
    part_status: str = "5"  # the status of each refused part (failed_parts)
    retry_after: str = ""  # with an HTTP error: a Retry-After header, when set
    price: bool = True  # False: accepted parts come without `message-price`


@dataclass
class FakeVonage:
    api_key: str = "fake-key"
    api_secret: str = "fake-secret"
    price_per_part: Decimal = PRICE_PER_PART
    balance: Decimal = Decimal("1000")
    sent: list[SentSms] = field(default_factory=list)
    requests: int = 0
    # The answer when nothing is scripted (e.g. every send slow, for the crash tests).
    default: Behaviour = field(default_factory=Behaviour)
    _script: deque[Behaviour] = field(default_factory=deque)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _idle: threading.Condition = field(default_factory=threading.Condition)
    _in_flight: int = 0
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))

    # --- control -----------------------------------------------------------------------
    def script(self, *behaviours: Behaviour) -> None:
        """The next requests get these answers, in order; then normal answers again."""
        with self._lock:
            self._script.extend(behaviours)

    def reset(self) -> None:
        """Forget everything, once requests still being answered (delays) are done."""
        with self._idle:
            self._idle.wait_for(lambda: self._in_flight == 0, timeout=30)
        with self._lock:
            self.sent.clear()
            self._script.clear()
            self.requests = 0
            self.default = Behaviour()

    @property
    def in_flight(self) -> int:
        """Requests being answered now (a scripted delay may still end in a sent SMS)."""
        with self._idle:
            return self._in_flight

    def sent_to(self, number: str) -> list[SentSms]:
        with self._lock:
            return [sms for sms in self.sent if sms.to == number]

    @property
    def total_price(self) -> Decimal:
        with self._lock:
            return sum((sms.price for sms in self.sent), Decimal(0))

    # --- protocol ----------------------------------------------------------------------
    def handle(self, auth_header: str | None, form: dict[str, str]) -> Answer:
        """(HTTP status, JSON[, headers]); None: hang up unanswered; CORRUPT: see `drop`."""
        with self._idle:
            self._in_flight += 1
        try:
            return self._answer(auth_header, form)
        finally:
            with self._idle:
                self._in_flight -= 1
                self._idle.notify_all()

    def _answer(self, auth_header: str | None, form: dict[str, str]) -> Answer:
        with self._lock:
            self.requests += 1
            behaviour = self._script.popleft() if self._script else self.default
        if behaviour.delay:
            time.sleep(behaviour.delay)
        if behaviour.drop == "unsent":
            return None
        if behaviour.http_status != 200:
            headers = {"Retry-After": behaviour.retry_after} if behaviour.retry_after else {}
            return behaviour.http_status, {"type": "error", "title": "scripted failure"}, headers
        if not self._authorised(auth_header, form):
            return 200, _error("4", "Bad Credentials")
        for required in ("from", "to", "text"):
            if not form.get(required):
                return 200, _error("2", f"Missing {required}")
        if behaviour.status != "0":
            return 200, _error(behaviour.status, "scripted status")
        kind = form.get("type", "text")
        parts = encode(form["text"]).segments - behaviour.failed_parts
        with self._lock:
            ids = [f"FAKE{next(self._ids):012d}" for _ in range(parts)]
            self.balance -= self.price_per_part * parts
            balance = self.balance
            self.sent.append(SentSms(form["to"], form["from"], form["text"], kind,
                                     form.get("client-ref"), ids, self.price_per_part * parts))
        messages = []
        for message_id in ids:
            entry = {
                "to": form["to"], "message-id": message_id, "status": "0",
                "remaining-balance": f"{balance:.8f}",
                "message-price": f"{self.price_per_part:.8f}", "network": "20801",
            }
            if not behaviour.price:
                del entry["message-price"]
            if form.get("client-ref"):
                entry["client-ref"] = form["client-ref"]
            messages.append(entry)
        for _ in range(behaviour.failed_parts):
            messages.append({"status": behaviour.part_status,
                             "error-text": "scripted part failure"})
        if behaviour.drop == "sent":
            return None
        if behaviour.drop == "corrupt":
            return CORRUPT
        return 200, {"message-count": str(len(messages)), "messages": messages}

    def _authorised(self, auth_header: str | None, form: dict[str, str]) -> bool:
        expected = base64.b64encode(f"{self.api_key}:{self.api_secret}".encode()).decode()
        if auth_header == f"Basic {expected}":
            return True
        return form.get("api_key") == self.api_key and form.get("api_secret") == self.api_secret


def _error(status: str, text: str) -> dict:
    return {"message-count": "1", "messages": [{"status": status, "error-text": text}]}


class _Handler(BaseHTTPRequestHandler):
    fake: FakeVonage

    def do_GET(self) -> None:
        """`/_fake/sent`: what was sent (for `relous storm`'s report): to, price, time."""
        if self.path.split("?")[0] != "/_fake/sent":
            self._answer(404, {"error": "not found"})
            return
        with self.fake._lock:
            sent = [{"to": sms.to, "price": str(sms.price), "at": sms.at,
                     "parts": len(sms.message_ids)} for sms in self.fake.sent]
        self._answer(200, {"sent": sent})

    def do_POST(self) -> None:
        if self.path.split("?")[0] != "/sms/json":
            self._answer(404, {"error": "not found"})
            return
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode()
        form = {key: values[0] for key, values in parse_qs(body, keep_blank_values=True).items()}
        answer = self.fake.handle(self.headers.get("Authorization"), form)
        if answer is None:
            self.close_connection = True  # hang up: no status line, nothing sent
            return
        if answer == CORRUPT:  # under TLS, on the raw socket: a record no key decrypts
            with socket.socket(fileno=os.dup(self.connection.fileno())) as raw:
                raw.sendall(CORRUPT_RECORD)
            self.close_connection = True
            return
        assert isinstance(answer, tuple)
        self._answer(*answer)

    def _answer(self, code: int, payload: dict, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(code)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: request lines would only add noise to test output."""


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        """A client that timed out and hung up is expected here (scripted delays)."""


class FakeVonageServer:
    """The fake on a free port of 127.0.0.1, over TLS, in a background thread."""

    def __init__(self, fake: FakeVonage | None = None, port: int = 0,
                 folder: Path | None = None) -> None:
        self.fake = fake or FakeVonage()
        self._own_folder = folder is None
        folder = folder or Path(tempfile.mkdtemp(prefix="fake-vonage-"))
        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1", "localhost")
        self.ca_bundle = folder / "fake-vonage-ca.pem"
        ca.cert_pem.write_to_path(str(self.ca_bundle))
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(context)
        handler = type("Handler", (_Handler,), {"fake": self.fake})
        self._server = _QuietServer(("127.0.0.1", port), handler)
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FakeVonageServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._own_folder:
            shutil.rmtree(self.ca_bundle.parent, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8443)
    parser.add_argument("--ca-out", type=Path, help="copy the CA certificate here")
    args = parser.parse_args()
    server = FakeVonageServer(port=args.port).start()
    if args.ca_out:
        args.ca_out.write_bytes(server.ca_bundle.read_bytes())
    print(f"fake Vonage on https://{server.host} (key fake-key, secret fake-secret); "
          f"REQUESTS_CA_BUNDLE={args.ca_out or server.ca_bundle}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
