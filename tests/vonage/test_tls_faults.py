"""TLS failures through the real SDK, against local servers: a POST is made once, never
again by the transport, and a TLS error is `retry` only when it arose in the handshake
(before any byte of the request was written); after it, the SMS may have gone: `unknown`."""

from __future__ import annotations

import socketserver
import threading
from collections.abc import Iterator

import pytest

from shared.vonage.sms import VonageProvider
from tests.fake_vonage import Behaviour, FakeVonageServer
from tests.helpers import FAKE_VONAGE


@pytest.fixture
def vonage(fake_vonage) -> VonageProvider:
    return VonageProvider(fake_vonage.api_key, fake_vonage.api_secret, FAKE_VONAGE.host,
                          timeout=2)


def test_tls_error_while_the_answer_is_read_is_unknown_and_posted_once(vonage, fake_vonage):
    """The SDK's urllib3 Retry(total=3) re-POSTed after such an SSLError: 4 SMS, then
    `retry` (a fifth later). The server read the POST, sent the SMS, then broke TLS."""
    fake_vonage.default = Behaviour(drop="corrupt")
    result = vonage.send("33612345621", "33700000001", "Stop.", client_ref="1")
    assert fake_vonage.requests == 1, "the transport must never POST a send again"
    assert len(fake_vonage.sent) == 1
    assert (result.outcome, result.reason) == ("unknown", "tls_lost"), result
    assert not result.parts


def test_one_corrupt_answer_then_good_ones_is_still_one_post(vonage, fake_vonage):
    """A retried POST that then succeeds would be recorded `sent`: two SMS, one billed."""
    fake_vonage.script(Behaviour(drop="corrupt"))
    result = vonage.send("33612345621", "33700000001", "Stop.", client_ref="1")
    assert (fake_vonage.requests, result.outcome) == (1, "unknown"), result


class _NotTls(socketserver.BaseRequestHandler):
    """Answers the ClientHello with plain text: the handshake fails, no POST can follow."""

    def handle(self) -> None:
        server = self.server
        assert isinstance(server, _CountingServer)
        with server.lock:
            server.connections += 1
        self.request.recv(4096)
        self.request.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")


class _CountingServer(socketserver.TCPServer):
    allow_reuse_address = True
    connections = 0
    lock = threading.Lock()


@pytest.fixture
def not_tls() -> Iterator[_CountingServer]:
    server = _CountingServer(("127.0.0.1", 0), _NotTls)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


def test_handshake_failure_is_retried_later_and_tried_once(not_tls):
    host = f"127.0.0.1:{not_tls.server_address[1]}"
    result = VonageProvider("k", "s", host, timeout=2).send(
        "33612345621", "33700000001", "Stop.", client_ref="1")
    assert not_tls.connections == 1, "one connection, no transport-level retry"
    assert (result.outcome, result.reason) == ("retry", "tls_handshake"), result


def test_untrusted_certificate_is_retried_later_and_nothing_posted():
    """A second fake has its own CA, which the process does not trust: verification fails
    in the handshake, before the request is written."""
    other = FakeVonageServer().start()
    try:
        result = VonageProvider(other.fake.api_key, other.fake.api_secret, other.host,
                                timeout=2).send("33612345621", "33700000001", "Stop.", "1")
    finally:
        other.stop()
    assert (result.outcome, result.reason) == ("retry", "tls_handshake"), result
    assert other.fake.requests == 0
