"""`GET /status`: behind its password, absent without one, and free of senders' numbers."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest

from ingest import create_app
from shared.settings import Settings
from shared.store.db import database_for
from shared.vonage.webhooks import parse_inbound
from tests.helpers import SECRET_KEY, inbound, record_inbound

PASSWORD = "status-page-password"


def _client(password: str | None):
    settings = Settings.from_env().with_overrides(status_password=password)
    return create_app(settings, configure_logs=False).test_client()


def _basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def test_the_page_does_not_exist_without_a_password(db):
    assert _client(None).get("/status").status_code == 404


@pytest.mark.parametrize("headers", [{}, _basic("operator", "wrong"), _basic("admin", PASSWORD),
                                     {"Authorization": "Bearer " + PASSWORD}])
def test_the_page_refuses_missing_or_wrong_credentials(db, headers):
    response = _client(PASSWORD).get("/status", headers=headers)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Basic")
    assert b"campaign" not in response.data


def test_the_operator_sees_each_campaign_and_no_sender_number(db, campaign):
    number = campaign()
    sender = "33612345621"
    with database_for(Settings.from_env().database_url).transaction() as tx:
        record_inbound(tx, parse_inbound(inbound(msisdn=sender, to=number)), SECRET_KEY,
                       datetime.now(UTC))
    response = _client(PASSWORD).get("/status", headers=_basic("operator", PASSWORD))
    assert response.status_code == 200 and response.mimetype == "text/html"
    page = response.get_data(as_text=True)
    assert number in page
    assert sender not in page and sender[-9:] not in page
    assert response.headers["Cache-Control"] == "no-store"
