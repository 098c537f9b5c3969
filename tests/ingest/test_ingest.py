"""The web process through Flask's test client, publishing to a real RabbitMQ virtual host
that no worker consumes, so that each test can count what was queued (conftest.py)."""

from __future__ import annotations

import time

import pytest

from ingest import create_app
from tests.helpers import SIGNATURE_SECRET, inbound, receipt, sign


def test_signed_form_post_is_queued_once_confirmed(client, queued):
    response = client.post("/webhooks/inbound", data=sign(inbound()))
    assert response.status_code == 200
    assert response.json == {"status": "queued"}
    assert queued() == 1


def test_signed_get_query_is_queued(client, queued):
    assert client.get("/webhooks/inbound", query_string=sign(inbound())).status_code == 200
    assert queued() == 1


def test_signed_json_post_is_queued(client, queued):
    assert client.post("/webhooks/inbound", json=sign(inbound())).status_code == 200
    assert queued() == 1


def test_concatenated_part_is_queued(client, queued):
    params = inbound(concat="true", **{"concat-ref": "12", "concat-total": "2",
                                       "concat-part": "1"})
    assert client.post("/webhooks/inbound", data=sign(params)).status_code == 200
    assert queued() == 1


def test_delivery_receipt_is_queued(client, queued):
    assert client.post("/webhooks/status", data=sign(receipt("FAKE1"))).status_code == 200
    assert queued() == 1


def test_md5hash_signatures_are_checked_when_configured(idle_settings, queued):
    from shared.vonage.webhooks import expected_signature

    settings = idle_settings.with_overrides(vonage_signature_method="md5hash")
    client = create_app(settings, configure_logs=False).test_client()
    params = inbound()
    params["timestamp"] = str(int(time.time()))
    params["sig"] = expected_signature(params, SIGNATURE_SECRET, "md5hash")
    assert client.post("/webhooks/inbound", data=params).status_code == 200
    params["sig"] = "0" * 32
    assert client.post("/webhooks/inbound", data=params).status_code == 401
    assert queued() == 1


# --- every rejected input: an error naming the field, and nothing queued -------------------

def _rejected(response, code: int, field: str | None) -> None:
    assert response.status_code == code
    assert response.is_json and response.json["error"]
    assert response.json["field"] == field


def test_bad_signature_is_401(client, queued):
    params = sign(inbound())
    params["sig"] = "f" * 64
    _rejected(client.post("/webhooks/inbound", data=params), 401, "sig")
    assert queued() == 0


def test_tampered_field_breaks_the_signature(client, queued):
    params = sign(inbound())
    params["text"] = "something else"
    _rejected(client.post("/webhooks/inbound", data=params), 401, "sig")
    assert queued() == 0


def test_missing_signature_is_401(client, queued):
    _rejected(client.post("/webhooks/inbound", data=inbound()), 401, "sig")
    assert queued() == 0


def test_signature_signed_with_another_secret_is_401(client, queued):
    params = sign(inbound(), secret="another-secret")
    _rejected(client.post("/webhooks/inbound", data=params), 401, "sig")
    assert queued() == 0


def test_replayed_webhook_older_than_max_age_is_401(client, queued):
    params = sign(inbound(), timestamp=int(time.time()) - 259200 - 60)
    _rejected(client.post("/webhooks/inbound", data=params), 401, "sig")
    assert queued() == 0


def test_signed_timestamp_far_in_the_future_is_401(client, queued):
    params = sign(inbound(), timestamp=int(time.time()) + 600)
    _rejected(client.post("/webhooks/inbound", data=params), 401, "sig")
    assert queued() == 0


def test_unsigned_receipt_is_401(client, queued):
    _rejected(client.post("/webhooks/status", data=receipt("FAKE1")), 401, "sig")
    assert queued() == 0


@pytest.mark.parametrize("field", ["msisdn", "to", "messageId", "text"])
def test_missing_field_is_400_naming_it(client, queued, field):
    params = inbound()
    del params[field]
    _rejected(client.post("/webhooks/inbound", data=sign(params)), 400, field)
    assert queued() == 0


@pytest.mark.parametrize("field, value", [
    ("msisdn", "+33612345621"),
    ("msisdn", "not-a-number"),
    ("to", "12"),
    ("messageId", "id with spaces"),
    ("messageId", "x" * 65),
    ("type", "video"),
    ("message-timestamp", "yesterday"),
    ("text", "x" * 4001),
])
def test_malformed_field_is_400_naming_it(client, queued, field, value):
    params = inbound(**{field: value})
    _rejected(client.post("/webhooks/inbound", data=sign(params)), 400, field)
    assert queued() == 0


@pytest.mark.parametrize("field, value", [
    ("concat-ref", ""), ("concat-total", "0"), ("concat-part", "3"), ("concat-part", "one"),
])
def test_malformed_concat_fields_are_400(client, queued, field, value):
    params = inbound(concat="true", **{"concat-ref": "7", "concat-total": "2",
                                       "concat-part": "1"})
    params[field] = value
    _rejected(client.post("/webhooks/inbound", data=sign(params)), 400, field)
    assert queued() == 0


@pytest.mark.parametrize("field, value", [("status", "teleported"), ("price", "-1"),
                                          ("err-code", "abc"), ("messageId", "")])
def test_malformed_receipt_is_400(client, queued, field, value):
    params = receipt("FAKE1", **{field: value})
    _rejected(client.post("/webhooks/status", data=sign(params)), 400, field)
    assert queued() == 0


def test_oversized_body_is_413(client, queued):
    params = sign(inbound())
    params["padding"] = "x" * 20_000
    _rejected(client.post("/webhooks/inbound", data=params), 413, "body")
    assert queued() == 0


def test_unsupported_content_type_is_415(client, queued):
    response = client.post("/webhooks/inbound", data="msisdn=1", content_type="text/plain")
    _rejected(response, 415, "Content-Type")
    assert queued() == 0


def test_json_body_that_is_not_an_object_is_400(client, queued):
    _rejected(client.post("/webhooks/inbound", json=["msisdn"]), 400, "body")
    assert queued() == 0


def test_invalid_json_is_400(client, queued):
    response = client.post("/webhooks/inbound", data="{not json",
                           content_type="application/json")
    _rejected(response, 400, "body")
    assert queued() == 0


def test_json_field_that_is_not_a_string_is_400(client, queued):
    params = sign(inbound())
    body = dict(params, text={"nested": True})
    _rejected(client.post("/webhooks/inbound", json=body), 400, "text")
    assert queued() == 0


def test_health_and_readiness(client):
    assert client.get("/healthz").status_code == 200
    response = client.get("/readyz")
    assert response.status_code == 200, response.json


def test_readiness_names_the_broker_when_it_is_down(idle_settings):
    settings = idle_settings.with_overrides(broker_url="amqp://guest:guest@127.0.0.1:1/")
    response = create_app(settings, configure_logs=False).test_client().get("/readyz")
    assert response.status_code == 503
    assert set(response.json["failed"]) == {"broker"}


def test_readiness_names_the_database_when_it_is_down(idle_settings):
    settings = idle_settings.with_overrides(
        database_url="postgresql://postgres@127.0.0.1:1/none")
    response = create_app(settings, configure_logs=False).test_client().get("/readyz")
    assert response.status_code == 503
    assert set(response.json["failed"]) == {"database"}


def test_web_warns_at_start_when_signatures_are_not_checked(idle_settings, caplog, queued):
    settings = idle_settings.with_overrides(vonage_signature_secret=None,
                                            allow_unsigned_webhooks=True)
    with caplog.at_level("WARNING"):
        client = create_app(settings, configure_logs=False).test_client()
    assert "VONAGE_SIGNATURE_SECRET is not set" in caplog.text
    assert client.post("/webhooks/inbound", data=inbound()).status_code == 200
    assert queued() == 1


def test_signature_with_non_hex_characters_is_401_not_500(client, queued):
    params = sign(inbound())
    params["sig"] = params["sig"][:-1] + "\u00e9"
    _rejected(client.post("/webhooks/inbound", data=params), 401, "sig")
    assert queued() == 0
