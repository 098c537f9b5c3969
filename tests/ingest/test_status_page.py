"""`GET /status`: behind its password, absent without one, right counts from a seeded
database (PostgreSQL, and SQLite for the demo), a filterable decision log, hostile reasons
escaped, bounded, and free of senders' numbers and message texts."""

from __future__ import annotations

import base64
import os
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from html.parser import HTMLParser

import pytest

from ingest import create_app
from shared.rules.phones import pseudonym
from shared.settings import Settings
from shared.store.budgets import record_spend, set_budget
from shared.store.campaigns import (
    add_campaign,
    find_campaign,
    halt_everything,
    halt_sending,
    set_campaign_paused,
    set_storm_mode,
)
from shared.store.db import Database, Transaction, database_for, upgrade
from shared.store.parked import park
from shared.store.status_page import LOG_LIMIT
from shared.vonage.webhooks import parse_inbound
from tests.helpers import SECRET_KEY, inbound, record_inbound

PASSWORD = "status-page-password"
FIRST, SECOND = "33700000001", "33700000002"
HOSTILE = '<script>alert(1)</script>"><img src=x onerror=alert(2)>'
TEXT_MARKER = "mkprivatetext"


def _client(password: str | None, **overrides: object):
    settings = Settings.from_env().with_overrides(status_password=password, **overrides)
    return create_app(settings, configure_logs=False).test_client()


def _basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


OPERATOR = _basic("operator", PASSWORD)


class _Page(HTMLParser):
    """Text by element id, the decision log's rows, and the chart images of a page."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.by_id: dict[str, str] = {}
        self.rows: list[dict[str, str]] = []
        self.images: list[str] = []
        self._open: list[tuple[str, str | None, str | None]] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "img":
            self.images.append(found.get("src") or "")
            return
        if tag == "tr" and found.get("class") == "decision":
            self.rows.append({})
        self._open.append((tag, found.get("id"), (found.get("class") or "").split(" ")[0]))

    def handle_endtag(self, tag: str) -> None:
        if self._open and self._open[-1][0] == tag:
            self._open.pop()

    def handle_data(self, data: str) -> None:
        for _, element_id, _ in self._open:
            if element_id:
                self.by_id[element_id] = self.by_id.get(element_id, "") + data.strip()
        if self._open and self._open[-1][0] == "td" and self.rows:
            cell = self._open[-1][2]
            if cell in ("verdict", "reply", "reasons", "sender"):
                self.rows[-1][cell] = self.rows[-1].get(cell, "") + data


def seed_message(tx: Transaction, campaign: str, number: str, verdict: str, at: datetime,
                 reasons: str = "", reply: str | None = None, score: int = 0) -> int:
    """One judged message (and its reply, with `reply` status) as the workers record them."""
    campaign_id = find_campaign(tx, campaign).id
    sender = pseudonym(number, SECRET_KEY)
    row = tx.execute(
        "INSERT INTO inbound_messages (dedup_key, campaign_id, to_number, sender, text,"
        " message_type, received_at, verdict, reasons, score) VALUES (%(key)s, %(campaign)s,"
        " %(to)s, %(sender)s, %(text)s, 'text', %(at)s, %(verdict)s, %(reasons)s, %(score)s)"
        " RETURNING id",
        {"key": os.urandom(8).hex(), "campaign": campaign_id, "to": campaign,
         "sender": sender, "text": f"{TEXT_MARKER} appelle-moi au {number}", "at": at,
         "verdict": verdict, "reasons": reasons, "score": score}).fetchone()
    if reply is not None:
        tx.execute(
            "INSERT INTO replies (campaign_id, sender, inbound_message_id, to_number, text,"
            " status, due_at, created_at, updated_at) VALUES (%(campaign)s, %(sender)s,"
            " %(message)s, %(to)s, 'Laissez-la tranquille.', %(status)s, %(at)s, %(at)s,"
            " %(at)s)",
            {"campaign": campaign_id, "sender": sender, "message": row["id"],
             "to": number if reply == "pending" else None, "status": reply, "at": at})
    return int(row["id"])


def seed(tx: Transaction, now: datetime) -> None:
    """Two campaigns' traffic at known times: in the last hour, earlier today, yesterday."""
    for number in (FIRST, SECOND):
        add_campaign(tx, number, "Laissez-la tranquille.", delay_seconds=0,
                     window_seconds=86400, price_per_segment=Decimal("0.0333"),
                     allow_multipart=False, now=now)
    recent, earlier, yesterday = (now - timedelta(minutes=10), now - timedelta(hours=3),
                                  now - timedelta(hours=30))
    first = "336400000%02d"
    seed_message(tx, FIRST, first % 1, "reply", recent, "first message in the reply window",
                 reply="pending")
    seed_message(tx, FIRST, first % 2, "reply", recent, "first message in the reply window",
                 reply="sent")
    seed_message(tx, FIRST, first % 3, "reply", earlier, "first message in the reply window",
                 reply="delivered")
    seed_message(tx, FIRST, first % 4, "reply", yesterday, "first message", reply="delivered")
    for index in range(3):
        seed_message(tx, FIRST, first % (10 + index), "suppress", recent,
                     f"raid: 40 new senders in 5 min, threshold 30 = floor; lexicon: {HOSTILE}",
                     score=60)
    for index in range(2):
        seed_message(tx, FIRST, first % (20 + index), "suppress", earlier,
                     "already answered in this reply window")
    seed_message(tx, FIRST, first % 30, "block", earlier,
                 "velocity: 6 messages in 1 min (limit 5)", score=100)
    seed_message(tx, FIRST, first % 31, "block", yesterday, "velocity: 7 messages in 1 min")
    seed_message(tx, SECOND, first % 40, "reply", recent, "first message in the reply window",
                 reply="pending")
    set_budget(tx, FIRST, now, hourly=Decimal("2"), daily=Decimal("10"), total=None)
    tx.execute("UPDATE budgets SET hour_used = %(hour)s, day_used = %(day)s,"
               " total_used = %(total)s WHERE campaign_id = %(id)s",
               {"hour": Decimal("-0.00002"), "day": Decimal("1.25"), "total": Decimal("3.5"),
                "id": find_campaign(tx, FIRST).id})
    record_spend(tx, find_campaign(tx, FIRST).id, Decimal("0.0333"), recent)
    park(tx, "inbound", "stuck-1", "sealed", "DataError 22P02", now)


@pytest.fixture
def seeded(db):
    now = datetime.now(UTC)
    with database_for(os.environ["DATABASE_URL"]).transaction() as tx:
        seed(tx, now)
    return now


def _page(client, query: str = "") -> _Page:
    response = client.get("/status" + query, headers=OPERATOR)
    assert response.status_code == 200, response.data[:300]
    return _Page(response.get_data(as_text=True))


def test_the_page_does_not_exist_without_a_password(db):
    assert _client(None).get("/status").status_code == 404


@pytest.mark.parametrize("headers", [{}, _basic("operator", "wrong"), _basic("admin", PASSWORD),
                                     {"Authorization": "Bearer " + PASSWORD}])
def test_the_page_refuses_missing_or_wrong_credentials(db, headers):
    response = _client(PASSWORD).get("/status?verdict=nonsense", headers=headers)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Basic")
    assert b"campaign" not in response.data


def test_each_section_counts_what_the_database_holds(seeded):
    page = _page(_client(PASSWORD))
    cells = page.by_id
    assert [cells[f"c{FIRST}-hour-{v}"] for v in ("reply", "suppress", "block")] == \
        ["2", "3", "0"]
    assert [cells[f"c{FIRST}-day-{v}"] for v in ("reply", "suppress", "block")] == \
        ["3", "5", "1"]
    assert [cells[f"c{FIRST}-reply-{s}"] for s in ("pending", "sent", "delivered", "failed")] \
        == ["1", "1", "1", "0"]
    assert cells[f"c{SECOND}-day-reply"] == "1"
    # Spend: used / cap / left per period, a refund's rounding is no negative zero.
    assert [cells[f"c{FIRST}-hour-{k}"] for k in ("used", "cap", "left")] == \
        ["0.0000", "2.00", "2.0000"]
    assert [cells[f"c{FIRST}-day-{k}"] for k in ("used", "cap", "left")] == \
        ["1.2500", "10.00", "8.7500"]
    assert [cells[f"c{FIRST}-total-{k}"] for k in ("used", "cap")] == ["3.5000", "no cap"]
    assert cells[f"c{SECOND}-day-cap"] == "no cap"
    assert cells["parked-inbound"] == "1" and cells["parked-receipt"] == "0"
    assert "raid3" in cells[f"campaign-{FIRST}"].replace(" ", "")  # top reasons (24 h)
    assert "active" in cells[f"campaign-{FIRST}"]
    # One chart per campaign, a real PNG inline.
    assert len(page.images) == 2
    for image in page.images:
        assert base64.b64decode(image.removeprefix("data:image/png;base64,"))[:4] == \
            b"\x89PNG"
    # The log: the last 24 h of both campaigns, newest first, with the reply's status.
    assert len(page.rows) == 10
    assert {row.get("reply") for row in page.rows} == {"pending", "sent", "delivered", "–"}


def test_states_show_halts_with_their_reasons_pause_and_storm(seeded):
    with database_for(os.environ["DATABASE_URL"]).transaction() as tx:
        halt_sending(tx, find_campaign(tx, FIRST).id, "price overrun: 0.5 > 0.0333", seeded)
        set_campaign_paused(tx, SECOND, True)
        set_storm_mode(tx, find_campaign(tx, SECOND).id, True, seeded)
    cells = _page(_client(PASSWORD)).by_id
    assert cells[f"c{FIRST}-halted"] == "sending halted: price overrun: 0.5 > 0.0333"
    assert "paused" in cells[f"campaign-{SECOND}"] and "storm" in cells[f"campaign-{SECOND}"]
    assert "active" not in cells[f"campaign-{SECOND}"]
    with database_for(os.environ["DATABASE_URL"]).transaction() as tx:
        halt_everything(tx, "provider barred the account", seeded)
    cells = _page(_client(PASSWORD)).by_id
    assert "provider barred the account" in cells["halted-everywhere"]
    assert "sending halted (all campaigns)" in cells[f"campaign-{FIRST}"]


@pytest.mark.parametrize("verdict, count", [("reply", 4), ("suppress", 5), ("block", 1)])
def test_the_log_filters_by_verdict(seeded, verdict, count):
    rows = _page(_client(PASSWORD), f"?verdict={verdict}").rows
    assert len(rows) == count and {row["verdict"] for row in rows} == {verdict}


def test_the_log_filters_by_campaign(seeded):
    page = _page(_client(PASSWORD), f"?campaign={SECOND}&verdict=")
    assert len(page.rows) == 1 and f"campaign-{FIRST}" not in page.by_id


@pytest.mark.parametrize("query", ["?verdict=spam", "?verdict=%3Cscript%3E", "?verdict=REPLY",
                                   "?campaign=abc%3Cb%3E", "?campaign=33799999999"])
def test_a_bad_parameter_is_a_400_that_does_not_echo_it(seeded, query):
    response = _client(PASSWORD).get("/status" + query, headers=OPERATOR)
    assert response.status_code == 400
    assert response.mimetype == "text/plain"
    assert b"script" not in response.data and b"spam" not in response.data
    assert b"<b>" not in response.data and b"33799999999" not in response.data


def test_hostile_reasons_are_escaped_and_no_script_may_run(seeded):
    response = _client(PASSWORD).get("/status", headers=OPERATOR)
    page = response.get_data(as_text=True)
    assert HOSTILE not in page and "<script" not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&#34;&gt;&lt;img src=x" in page
    policy = response.headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy and "img-src data:" in policy
    assert "unsafe" not in policy and "script-src" not in policy
    nonce = re.search(r"'nonce-([^']+)'", policy).group(1)
    assert f'<style nonce="{nonce}">' in page
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert _client(PASSWORD).get("/status", headers=OPERATOR).headers[
        "Content-Security-Policy"] != policy, "a fresh nonce per page"


def test_no_raw_number_no_full_pseudonym_and_no_text(seeded):
    page = _client(PASSWORD).get("/status", headers=OPERATOR).get_data(as_text=True)
    for index in (1, 2, 3, 10, 11, 12, 20, 21, 30, 40):
        number = f"336400000{index:02d}"
        assert number not in page and number[-9:] not in page
        assert pseudonym(number, SECRET_KEY) not in page
    assert pseudonym("33640000001", SECRET_KEY)[:12] + "…" in page
    assert TEXT_MARKER not in page and "appelle-moi" not in page


def test_the_log_is_bounded_whatever_the_traffic(seeded):
    with database_for(os.environ["DATABASE_URL"]).transaction() as tx:
        for index in range(LOG_LIMIT + 20):
            seed_message(tx, FIRST, f"3364100{index:04d}", "block", seeded
                         - timedelta(seconds=index), "sender blocked for abuse")
    rows = _page(_client(PASSWORD), "?verdict=block").rows
    assert len(rows) == LOG_LIMIT and all(row["verdict"] == "block" for row in rows)


def test_a_message_recorded_by_the_workers_shows_no_sender_number(db, campaign):
    number = campaign()
    sender = "33612345621"
    with database_for(os.environ["DATABASE_URL"]).transaction() as tx:
        record_inbound(tx, parse_inbound(inbound(msisdn=sender, to=number)), SECRET_KEY,
                       datetime.now(UTC))
    response = _client(PASSWORD).get("/status", headers=OPERATOR)
    assert response.status_code == 200 and response.mimetype == "text/html"
    page = response.get_data(as_text=True)
    assert number in page
    assert sender not in page and sender[-9:] not in page
    assert _Page(page).by_id[f"c{number}-day-reply"] == "1"


def test_the_demos_sqlite_database_serves_the_same_page(tmp_path):
    url = f"sqlite:///{tmp_path}/relous.db"
    database = Database(url)
    upgrade(database)
    now = datetime.now(UTC)
    with database.transaction() as tx:
        seed(tx, now)
    client = _client(PASSWORD, database_url=url)
    page = _page(client)
    assert page.by_id[f"c{FIRST}-day-suppress"] == "5"
    assert page.by_id[f"c{FIRST}-hour-reply"] == "2"
    assert page.by_id[f"c{FIRST}-reply-delivered"] == "1"
    assert page.by_id[f"c{FIRST}-day-used"] == "1.2500"
    assert len(page.images) == 2 and len(page.rows) == 10
    blocked = _page(client, "?verdict=block").rows
    assert len(blocked) == 1 and blocked[0]["verdict"] == "block"
