"""Privacy after an end-to-end run of the Procfile's `web` and `worker`: raw numbers only
where CONTRACT.md allows them ("Phone numbers"), keyed pseudonyms, and a retention purge
that leaves nothing behind.

The run (once per module) sends ordinary messages in every encoding, a concatenated SMS,
a flood (its sender is flagged abusive, so encrypted evidence exists), a message to a
campaign whose reply waits an hour (a raw number rightly kept on a pending reply),
rejected webhooks (400 and 401) and delivery receipts. Then every text column of every
table, the processes' logs, a /metrics scrape and the status page (unfiltered and for each
verdict) are searched for each raw number.
"""

from __future__ import annotations

import hashlib
import os
import random
import string
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
import requests
from cryptography.fernet import Fernet

from shared.rules.phones import pseudonym
from tests.faults.stack import Stack, create_campaign, fresh_vhost
from tests.helpers import (
    FAKE_VONAGE,
    SECRET_KEY,
    TABLES,
    broker_url,
    inbound,
    receipt,
    sign,
    venv_bin,
    wait_for,
)
from tests.helpers import wait_until_idle as wait_idle

pytestmark = [pytest.mark.faults, pytest.mark.e2e]
ANSWERED = "33700000001"  # replies at once
DELAYED = "33700000002"  # replies after an hour: the number waits on the pending reply
ORDINARY = ("33640000011", "33640000012", "33640000013", "33640000014")
FLOODER = "33640000021"
PENDING = "33640000031"  # texts the delayed campaign
CONCAT = "33640000041"
REJECTED = ("33640000051", "33640000052")  # a 400 and a 401: never queued
NUMBERS = (*ORDINARY, FLOODER, PENDING, CONCAT, *REJECTED)
TOKEN = "metrics-token-for-the-privacy-test"
STATUS_PASSWORD = "status-password-for-the-privacy-test"


@dataclass
class Run:
    database_url: str
    logs: str
    metrics: str
    status_pages: dict[str, str]  # query -> the page's HTML
    cells: list[tuple[str, str, str, str | None]]  # table, column, value, reply status
    markers: list[str]  # a word unique to each message text
    evidence_key: str


def _marked_text(rng: random.Random, markers: list[str]) -> str:
    marker = "mk" + "".join(rng.choices(string.ascii_lowercase, k=10))
    markers.append(marker)
    return f"{marker} coucou, tu es la ce soir"


def _text_cells(database_url: str) -> list[tuple[str, str, str, str | None]]:
    """Every non-empty value of every text column of every table (with the reply's status
    for `replies`)."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        columns = conn.execute(
            "SELECT table_name, column_name FROM information_schema.columns"
            " WHERE table_schema = 'public'"
            " AND data_type IN ('text', 'character varying', 'character', 'json', 'jsonb')"
            " ORDER BY table_name, column_name").fetchall()
        cells = []
        for table, column in columns:
            status = "status" if table == "replies" else "NULL"
            for value, reply_status in conn.execute(
                    f'SELECT "{column}"::text, {status} FROM "{table}"'
                    f' WHERE "{column}" IS NOT NULL AND "{column}"::text <> \'\''):
                cells.append((table, column, value, reply_status))
    return cells


def _appearances(number: str, cells: list[tuple[str, str, str, str | None]]
                 ) -> set[tuple[str, str, str | None]]:
    return {(table, column, status) for table, column, value, status in cells
            if number in value}


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Iterator[Run]:
    """The end-to-end run, once; what it left in the database, logs and metrics."""
    database_url = os.environ["DATABASE_URL"]
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE")
    fake = FAKE_VONAGE.fake
    fake.reset()
    create_campaign(database_url, delay=0, number=ANSWERED, total_cap=Decimal("10"))
    create_campaign(database_url, delay=3600, number=DELAYED)
    rng = random.Random(6)
    markers: list[str] = []
    with fresh_vhost() as vhost:
        stack = Stack(broker_url(vhost), database_url, tmp_path_factory.mktemp("privacy"),
                      concurrency=2, METRICS_TOKEN=TOKEN, STATUS_PASSWORD=STATUS_PASSWORD)
        try:
            stack.start()
            metrics = _traffic(stack, vhost, rng, markers)
            pages = _status_pages(stack)
        finally:
            stack.stop()
    yield Run(database_url, stack.logs(), metrics, pages, _text_cells(database_url), markers,
              os.environ["RELOUS_EVIDENCE_KEY"])
    fake.reset()


def _traffic(stack: Stack, vhost: str, rng: random.Random, markers: list[str]) -> str:
    """Send the run's webhooks and receipts; return the /metrics scrape."""
    session = requests.Session()

    def send(path: str, params: dict[str, str], encoding: str) -> int:
        """A webhook as Vonage may send it: GET query string, form or JSON POST."""
        url = f"{stack.base}{path}"
        if encoding == "query":
            return session.get(url, params=params, timeout=30).status_code
        if encoding == "json":
            return session.post(url, json=params, timeout=30).status_code
        return session.post(url, data=params, timeout=30).status_code

    for number, encoding in zip(ORDINARY, ("form", "query", "json", "form"), strict=True):
        params = sign(inbound(msisdn=number, text=_marked_text(rng, markers)))
        assert send("/webhooks/inbound", params, encoding) == 200
    for _ in range(10):
        assert stack.post(sign(inbound(msisdn=FLOODER, text=_marked_text(rng, markers)))) == 200
    assert stack.post(sign(inbound(msisdn=PENDING, to=DELAYED,
                                   text=_marked_text(rng, markers)))) == 200
    for part in (2, 1):
        assert stack.post(sign(inbound(
            msisdn=CONCAT, text=_marked_text(rng, markers) + " ", message_id=f"PRIV-C{part}",
            concat="true", **{"concat-ref": "9", "concat-total": "2",
                              "concat-part": str(part)}))) == 200
    assert stack.post(sign(inbound(msisdn=REJECTED[0], to="not-a-number"))) == 400
    assert stack.post(dict(sign(inbound(msisdn=REJECTED[1])), sig="0" * 64)) == 401

    fake = FAKE_VONAGE.fake
    wait_for(lambda: len(fake.sent) == len(ORDINARY) + 2, message="6 replies")
    wait_idle(vhost)
    for index, sms in enumerate(list(fake.sent)):  # Vonage's receipts carry the number
        params = sign(receipt(sms.message_ids[0], msisdn=sms.to, to=sms.sender,
                              **{"client-ref": sms.client_ref or ""}))
        assert send("/webhooks/status", params, ("query", "form")[index % 2]) == 200
    wait_idle(vhost)

    metrics_url = f"{stack.base}/metrics"
    assert session.get(metrics_url, timeout=30).status_code == 401
    wrong = {"Authorization": "Bearer not-the-token"}
    assert session.get(metrics_url, headers=wrong, timeout=30).status_code == 401
    scrape = session.get(metrics_url, headers={"Authorization": f"Bearer {TOKEN}"},
                         timeout=30)
    assert scrape.status_code == 200 and "relous_inbound_messages_total" in scrape.text
    return scrape.text


def _status_pages(stack: Stack) -> dict[str, str]:
    """The status page behind its password: unfiltered, then for each verdict."""
    url = f"{stack.base}/status"
    assert requests.get(url, timeout=30).status_code == 401
    pages = {}
    for query in ("", "?verdict=reply", "?verdict=suppress", "?verdict=block",
                  f"?campaign={DELAYED}"):
        page = requests.get(url + query, auth=("operator", STATUS_PASSWORD), timeout=30)
        assert page.status_code == 200 and ANSWERED in page.text
        pages[query] = page.text
    return pages


def test_raw_numbers_only_where_the_contract_allows(run: Run):
    assert "relous.process_inbound" in run.logs, "the worker's log was captured"
    for number in NUMBERS:
        for form in (number, "+" + number):
            assert form not in run.logs, "a raw number in the processes' logs"
            assert form not in run.metrics, "a raw number in /metrics"
            for query, page in run.status_pages.items():
                assert form not in page, f"a raw number in /status{query}"
        assert not _appearances("+" + number, run.cells)
    # The one place a raw number may be: the reply not sent yet (an hour's delay).
    for number in NUMBERS:
        expected = {("replies", "to_number", "pending")} if number == PENDING else set()
        assert _appearances(number, run.cells) == expected
    # The flooder's number is kept for a complaint, encrypted (so found nowhere above).
    [evidence] = [value for table, column, value, _ in run.cells
                  if (table, column) == ("evidence", "encrypted_number")]
    assert Fernet(run.evidence_key).decrypt(evidence.encode()).decode() == FLOODER
    statuses = {status for table, _, _, status in run.cells if table == "replies"}
    assert statuses == {"delivered", "pending"}, "replies went out and were receipted"


def test_the_status_page_shows_decisions_but_no_number_nor_text(run: Run):
    """The log names senders by the start of their pseudonym only, never a whole one,
    and shows no message text; the pending reply's held number stays unshown."""
    pseudonyms = {pseudonym(number, SECRET_KEY) for number in NUMBERS}
    for query, page in run.status_pages.items():
        assert not any(value in page for value in pseudonyms), query
        assert not [marker for marker in run.markers if marker in page], query
        for number in NUMBERS:
            assert number[2:] not in page, f"a national number in /status{query}"
    assert pseudonym(FLOODER, SECRET_KEY)[:12] in run.status_pages["?verdict=block"]
    assert pseudonym(PENDING, SECRET_KEY)[:12] in run.status_pages[f"?campaign={DELAYED}"]


def test_metrics_hold_neither_numbers_nor_pseudonyms(run: Run):
    pseudonyms = {pseudonym(number, SECRET_KEY) for number in NUMBERS}
    assert not any(value in run.metrics for value in pseudonyms)
    assert ANSWERED in run.metrics, "campaign numbers are the labels"


def test_pseudonyms_are_keyed(run: Run):
    """The same number under another RELOUS_SECRET_KEY gives another pseudonym, and the
    stored one is not a plain hash (which anyone could reverse by trying every number)."""
    number = ORDINARY[0]
    other_key = "another-secret-key-0123456789"
    assert pseudonym(number, SECRET_KEY) == pseudonym(number, SECRET_KEY)
    assert pseudonym(number, SECRET_KEY) != pseudonym(number, other_key)
    stored = {value for table, column, value, _ in run.cells
              if (table, column) == ("senders", "sender")}
    texted = (*ORDINARY, FLOODER, PENDING, CONCAT)
    assert stored == {pseudonym(number, SECRET_KEY) for number in texted}
    unkeyed = {hashlib.sha256(number.encode()).hexdigest() for number in texted}
    elsewhere = {pseudonym(number, other_key) for number in texted}
    assert not stored & (unkeyed | elsewhere)


def test_purge_leaves_no_raw_number_nor_text_past_retention(run: Run):
    """`relous purge` with everything older than both retentions (90 and 365 days)."""
    with psycopg.connect(run.database_url, autocommit=True) as conn:
        for table, column in (("inbound_messages", "received_at"),
                              ("inbound_parts", "received_at"), ("replies", "created_at"),
                              ("evidence", "flagged_at")):
            conn.execute(f"UPDATE {table} SET {column} = {column} - interval '400 days'")
    purge = subprocess.run([str(Path(venv_bin()) / "relous"), "purge"], env=dict(os.environ),
                           capture_output=True, text=True, timeout=120, check=False)
    assert purge.returncode == 0, purge.stderr
    assert "1 evidence record(s)" in purge.stdout and "1 number(s)" in purge.stdout

    cells = _text_cells(run.database_url)
    for number in NUMBERS:
        assert not _appearances(number, cells), "a raw number left past retention"
    assert not [cell for cell in cells if cell[0] == "evidence"]
    left = {(table, column) for table, column, value, _ in cells
            for marker in run.markers if marker in value.lower()}
    assert not left, f"purge left message text in {sorted(left)}"
