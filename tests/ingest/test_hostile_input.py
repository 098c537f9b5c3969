"""Hostile bytes before authentication: NUL and lone surrogates in any field and encoding,
non-finite or absurd numbers, nested JSON, and log lines that a sender tries to write.

Each is refused with 400 naming the field, before the signature is checked (so a 400, not
a 401, even unsigned) and with nothing queued.
"""

from __future__ import annotations

import json
import logging
from urllib.parse import quote

import pytest

from tests.helpers import inbound, receipt, sign

UNSAFE = ["\x00", "\ud800", "\udfff", "a\udc80b"]
PATHS = {"inbound": "/webhooks/inbound", "status": "/webhooks/status"}


def _fields(kind: str) -> dict[str, str]:
    return inbound() if kind == "inbound" else receipt("FAKE1")


def _urlencoded(params: dict[str, str]) -> str:
    """Percent-encode as a raw client would, surrogates included (as UTF-8-like bytes)."""
    def q(text: str) -> str:
        return quote(text.encode("utf-8", "surrogatepass"), safe="")

    return "&".join(f"{q(key)}={q(value)}" for key, value in params.items())


def _send(client, kind: str, params: dict[str, str], encoding: str):
    path = PATHS[kind]
    if encoding == "json":  # json.dumps escapes a lone surrogate as \udXXX
        return client.post(path, data=json.dumps(params), content_type="application/json")
    if encoding == "query":
        return client.get(path, query_string=_urlencoded(params))
    return client.post(path, data=_urlencoded(params),
                       content_type="application/x-www-form-urlencoded")


def _refused(response, field: str | None) -> None:
    assert response.status_code == 400, (response.status_code, response.data)
    assert response.is_json and response.json["error"]
    assert response.json["field"] == field


@pytest.mark.parametrize("kind", ["inbound", "status"])
@pytest.mark.parametrize("encoding", ["form", "query", "json"])
def test_nul_in_any_field_is_400_before_the_signature(client, queued, kind, encoding):
    """NUL passes UTF-8 and the signature, then fails in PostgreSQL: refused at the door."""
    for field in _fields(kind):
        params = sign(_fields(kind))
        params[field] = params[field][:3] + "\x00" + params[field][3:]
        _refused(_send(client, kind, params, encoding), field)
    assert queued() == 0


@pytest.mark.parametrize("kind", ["inbound", "status"])
@pytest.mark.parametrize("value", UNSAFE)
def test_lone_surrogate_or_nul_in_json_is_400_not_500(client, queued, kind, value):
    """The signature code encodes: a lone surrogate used to raise there, a 500 before any
    authentication. Unsigned, it is still a 400 (checked first), and so is a bad key."""
    for field in ("text", "to", "messageId", "nonce"):
        params = dict(_fields(kind), **{field: value})
        _refused(_send(client, kind, params, "json"), field)
    _refused(_send(client, kind, {**_fields(kind), f"k{value}": "v"}, "json"),
             ascii(f"k{value}")[1:-1])
    assert queued() == 0


@pytest.mark.parametrize("encoding", ["form", "query"])
def test_surrogate_bytes_in_a_form_are_not_a_500(client, queued, encoding):
    """Percent-encoded surrogate bytes are invalid UTF-8: decoded as U+FFFD, never a 5xx."""
    params = dict(sign(inbound()), text="\ud800")
    response = _send(client, "inbound", params, encoding)
    assert response.status_code == 401  # the replacement character breaks the signature
    assert queued() == 0


@pytest.mark.parametrize("body", ['{"msisdn": NaN}', '{"msisdn": Infinity}',
                                  '{"price": -Infinity}', "[" * 5000 + "]" * 5000,
                                  '{"a":' * 2500 + "1" + "}" * 2500, '{"to": 1' + "0" * 5000 + "}"])
def test_json_that_is_not_plain_json_is_400(client, queued, body):
    """NaN/Infinity are not JSON; deep nesting raised RecursionError (a 500)."""
    response = client.post("/webhooks/inbound", data=body, content_type="application/json")
    _refused(response, "body")
    assert queued() == 0


def test_json_number_too_large_for_a_float_is_400(client, queued):
    body = json.dumps(sign(receipt("FAKE1"))).replace('"price": "0.03330000"', '"price": 1e400')
    _refused(client.post("/webhooks/status", data=body, content_type="application/json"),
             "price")
    assert queued() == 0


@pytest.mark.parametrize("price", ["Infinity", "inf", "-inf", "NaN", "sNaN", "1e400", "1E2",
                                   "-0.01", "100.00000001", "1000000", "0x1", "\u0661",
                                   " 0.1", "0.1\n", "1_0", "0.", ".5", "+1",
                                   "0." + "1" * 13])
def test_receipt_price_must_be_a_plain_bounded_decimal(client, queued, price):
    _refused(client.post("/webhooks/status", data=sign(receipt("FAKE1", price=price))),
             "price")
    assert queued() == 0


@pytest.mark.parametrize("price", ["0", "0.03330000", "12.5", "100", "0.000000000001"])
def test_plausible_receipt_prices_are_accepted(client, queued, price):
    response = client.post("/webhooks/status", data=sign(receipt("FAKE1", price=price)))
    assert response.status_code == 200, response.json
    assert queued() == 1


INJECTIONS = ["x\nINFO ingest.webhooks: forged line", "\x1b[2J\rwiped", "k" * 5000,
              "\u2028next", "\ud800"]


@pytest.mark.parametrize("key", INJECTIONS)
def test_request_values_reach_the_log_escaped_and_bounded(client, queued, caplog, key):
    """A JSON key used to be logged verbatim as the rejected `field`: a sender could forge
    log lines before authentication."""
    with caplog.at_level(logging.INFO, logger="ingest"):
        rejected = [client.post("/webhooks/inbound", data=json.dumps({key: {"x": 1}}),
                                content_type="application/json"),
                    client.post("/webhooks/inbound", data=json.dumps({key: "\x00"}),
                                content_type="application/json"),
                    client.post("/webhooks/inbound", data=_urlencoded({key: "\x00"}),
                                content_type="application/x-www-form-urlencoded"),
                    client.post("/webhooks/inbound", data="{}",
                                content_type="text/" + quote(key.encode("utf-8", "surrogatepass")))]
    assert [response.status_code for response in rejected] == [400, 400, 400, 415]
    lines = [record.getMessage() for record in caplog.records
             if record.name.startswith("ingest")]
    assert len(lines) == 4
    for line in lines:
        assert line.isascii() and line.isprintable(), line
        assert len(line) < 500, len(line)
    for response in rejected:
        field = response.json["field"]
        assert field.isascii() and field.isprintable() and len(field) <= 64
    assert queued() == 0
