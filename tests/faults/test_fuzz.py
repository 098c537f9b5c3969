"""Hostile input: property-based fuzzing of both webhook endpoints (hypothesis).

Only 2xx for valid input and 4xx for the rest, never 5xx; nothing queued for a rejected
request (every publish goes to a real RabbitMQ virtual host that no worker consumes, and
is counted on its way, and must be encodable and free of NUL). NUL and lone surrogates,
in any field or field name and any encoding: 400 before the signature is even checked.
Forged, tampered and stale signatures: always 401.
"""

from __future__ import annotations

import json
import string
import time
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest import create_app
from shared.broker import CeleryPublisher, publisher_celery
from shared.settings import Settings
from shared.vonage.webhooks import expected_signature
from tests.helpers import SIGNATURE_SECRET, VHOSTS, broker_url

pytestmark = pytest.mark.faults
EXAMPLES = 5000
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


class CountingPublisher(CeleryPublisher):
    """The real publisher, counting what it hands to RabbitMQ."""

    published = 0

    def publish(self, task_name: str, payload: dict) -> None:
        text = json.dumps(payload, ensure_ascii=False)
        text.encode("utf-8")  # a lone surrogate raises here: it must never be queued
        assert "\x00" not in text, "a NUL was queued: PostgreSQL would refuse it"
        super().publish(task_name, payload)
        CountingPublisher.published += 1


def _client(secret: str | None):
    base = Settings.from_env().with_overrides(broker_url=broker_url(VHOSTS["idle"]),
                                              vonage_signature_secret=secret,
                                              allow_unsigned_webhooks=secret is None)
    publisher = CountingPublisher(publisher_celery(base))
    return create_app(base, publisher, configure_logs=False).test_client()


UNSIGNED = _client(None)
SIGNED = _client(SIGNATURE_SECRET)

ODD_NUMBERS = st.sampled_from(["", "0", "-1", "1e3", "NaN", "inf", "0x1F", "１２３", "33 6",
                               "+33612345621", "3" * 40, "١٢٣٤٥٦٧", "33612345621\x00"])
UNSAFE = st.sampled_from(["\x00", "\ud800", "\udbff", "\udc00", "\udfff"])
WITH_UNSAFE = st.tuples(st.text(max_size=10), UNSAFE, st.text(max_size=10)).map("".join)
ANY_CHARACTERS = st.text(alphabet=st.characters(codec=None, exclude_categories=()),
                         max_size=40)  # surrogates included
# What a genuine webhook may hold: anything but NUL and lone surrogates.
SAFE_CHARACTERS = st.characters(exclude_categories=("Cs",), exclude_characters="\x00")
FIELD_VALUES = st.one_of(
    st.text(max_size=40), ODD_NUMBERS, WITH_UNSAFE, ANY_CHARACTERS,
    st.from_regex(r"\A[1-9][0-9]{5,14}\Z"),
    st.text(alphabet=string.printable, max_size=5000),
    st.binary(max_size=60).map(lambda raw: raw.decode("latin-1")),
)
INBOUND_FIELDS = ["msisdn", "to", "messageId", "text", "type", "keyword", "message-timestamp",
                  "concat", "concat-ref", "concat-total", "concat-part", "timestamp", "nonce"]
RECEIPT_FIELDS = ["msisdn", "to", "messageId", "status", "err-code", "price", "client-ref",
                  "network-code", "scts", "message-timestamp"]


def _valid_inbound() -> st.SearchStrategy[dict[str, str]]:
    return st.fixed_dictionaries({
        "msisdn": st.from_regex(r"\A336[0-9]{8}\Z"), "to": st.just("33700000001"),
        "messageId": st.from_regex(r"\A[A-Z0-9]{8,20}\Z"),
        "text": st.text(SAFE_CHARACTERS, max_size=300),
        "type": st.just("text")})


def _valid_receipt() -> st.SearchStrategy[dict[str, str]]:
    return st.fixed_dictionaries({
        "messageId": st.from_regex(r"\A[A-Z0-9]{8,20}\Z"),
        "status": st.sampled_from(["delivered", "failed", "expired"]),
        "price": st.from_regex(r"\A0\.[0-9]{8}\Z"), "to": st.just("33612345621")})


@st.composite
def _tainted(draw: st.DrawFn, valid: st.SearchStrategy[dict[str, str]]) -> dict[str, str]:
    """A valid webhook with a NUL or lone surrogate put in one field or field name."""
    params = draw(valid)
    field = draw(st.sampled_from([*sorted(params), "nonce"]))
    if draw(st.booleans()):
        params[field] = draw(WITH_UNSAFE)
    else:
        params[field + draw(WITH_UNSAFE)] = params.pop(field, "x")
    return params


def _params(fields: list[str]) -> st.SearchStrategy[dict[str, str]]:
    keys = st.one_of(st.sampled_from(fields), st.text(max_size=10), WITH_UNSAFE)
    return st.dictionaries(keys, FIELD_VALUES, max_size=len(fields) + 3)


def _post_raw(client, path: str, body: bytes, content_type: str):
    return client.post(path, data=body, content_type=content_type)


def _q(text: str) -> str:
    """Percent-encode as a raw client may: a lone surrogate becomes its 3 UTF-8-like bytes."""
    return quote(text.encode("utf-8", "surrogatepass"), safe="")


def _urlencoded(params: dict[str, str]) -> str:
    return "&".join(f"{_q(key)}={_q(value)}" for key, value in params.items())


def _check(response, before: int) -> None:
    assert response.status_code < 500, response.data
    if response.status_code >= 300:
        assert CountingPublisher.published == before, "a rejected request was queued"
        assert response.is_json and "error" in response.json
    else:
        assert CountingPublisher.published == before + 1


@pytest.mark.parametrize("path, fields", [("/webhooks/inbound", INBOUND_FIELDS),
                                          ("/webhooks/status", RECEIPT_FIELDS)])
def test_random_fields_in_every_encoding_never_give_5xx(path, fields):
    valid = _valid_inbound() if path.endswith("inbound") else _valid_receipt()

    @FUZZ
    @given(params=st.one_of(_params(fields), valid, _tainted(valid)),
           encoding=st.sampled_from(["form", "query", "json", "json-nested", "duplicate-keys",
                                     "invalid-utf8", "odd-content-type"]))
    def fuzz(params: dict[str, str], encoding: str) -> None:
        before = CountingPublisher.published
        if encoding == "form":
            response = _post_raw(UNSIGNED, path, _urlencoded(params).encode(),
                                 "application/x-www-form-urlencoded")
        elif encoding == "query":
            response = UNSIGNED.get(path, query_string=_urlencoded(params))
        elif encoding == "json":
            response = UNSIGNED.post(path, json=params)
        elif encoding == "json-nested":
            response = UNSIGNED.post(path, json={"payload": params, "list": [1, 2],
                                                 **{k: {"v": v} for k, v in params.items()}})
        elif encoding == "duplicate-keys":
            raw = "&".join(f"{_q(k)}={_q(v)}&{_q(k)}=x" for k, v in params.items())
            response = _post_raw(UNSIGNED, path, raw.encode(),
                                 "application/x-www-form-urlencoded")
        elif encoding == "invalid-utf8":
            raw = b"&".join(_q(k).encode() + b"=\xff\xfe" + v.encode("utf-8", "replace")
                            for k, v in params.items())
            response = _post_raw(UNSIGNED, path, raw, "application/x-www-form-urlencoded")
        else:
            response = _post_raw(UNSIGNED, path, json.dumps(params).encode(),
                                 "text/xml; charset=utf-8")
        _check(response, before)

    fuzz()


def test_valid_inbound_is_always_accepted():
    @settings(max_examples=500, deadline=None, derandomize=True)
    @given(params=_valid_inbound())
    def fuzz(params: dict[str, str]) -> None:
        before = CountingPublisher.published
        response = UNSIGNED.post("/webhooks/inbound", data=params)
        assert response.status_code == 200, response.json
        _check(response, before)

    fuzz()


def test_any_tampering_with_a_signed_webhook_is_401():
    @settings(max_examples=1000, deadline=None, derandomize=True)
    @given(params=_valid_inbound(), field=st.sampled_from(["msisdn", "to", "text", "messageId",
                                                           "timestamp", "sig", "extra"]),
           value=st.text(SAFE_CHARACTERS, min_size=1, max_size=20),
           age=st.integers(-10**6, 10**6))
    def fuzz(params, field, value, age) -> None:
        params["timestamp"] = str(int(time.time()))
        params["sig"] = expected_signature(params, SIGNATURE_SECRET, "sha256")
        tampered = dict(params)
        tampered[field] = tampered.get(field, "") + value
        before = CountingPublisher.published
        response = SIGNED.post("/webhooks/inbound", data=tampered)
        assert response.status_code == 401, response.json
        assert CountingPublisher.published == before
        stale = dict(params, timestamp=str(int(time.time()) - 259200 - 60 - abs(age)))
        stale["sig"] = expected_signature(stale, SIGNATURE_SECRET, "sha256")
        assert SIGNED.post("/webhooks/inbound", data=stale).status_code == 401
        forged = dict(params)
        forged["sig"] = expected_signature(params, "another-secret", "sha256")
        assert SIGNED.post("/webhooks/inbound", data=forged).status_code == 401
        assert CountingPublisher.published == before

    fuzz()


@pytest.mark.parametrize("path", ["/webhooks/inbound", "/webhooks/status"])
def test_nul_or_lone_surrogate_anywhere_is_400_before_the_signature(path):
    """Signed endpoint, no valid signature: a NUL or lone surrogate in any field or field
    name, in any encoding, is 400 (refused before signing, which encodes), never 401/5xx."""
    @settings(max_examples=1000, deadline=None, derandomize=True)
    @given(params=_valid_inbound(), unsafe=WITH_UNSAFE, in_key=st.booleans(),
           field=st.sampled_from(INBOUND_FIELDS + RECEIPT_FIELDS + ["sig", "api-key"]),
           encoding=st.sampled_from(["form", "query", "json"]))
    def fuzz(params, unsafe, in_key, field, encoding) -> None:
        params["timestamp"] = str(int(time.time()))
        params["sig"] = expected_signature(params, SIGNATURE_SECRET, "sha256")
        if in_key:
            params[field + unsafe] = "x"
        else:
            params[field] = unsafe
        before = CountingPublisher.published
        if encoding == "json":
            response = _post_raw(SIGNED, path, json.dumps(params).encode(), "application/json")
        elif encoding == "query":
            response = SIGNED.get(path, query_string=_urlencoded(params))
        else:
            response = _post_raw(SIGNED, path, _urlencoded(params).encode(),
                                 "application/x-www-form-urlencoded")
        if encoding != "json" and "\x00" not in unsafe:
            # A surrogate cannot travel in a form: its bytes arrive as U+FFFD.
            assert response.status_code in (400, 401), response.json
        else:
            assert response.status_code == 400, response.json
            assert response.json["field"].isascii()
        assert CountingPublisher.published == before

    fuzz()
