"""The storage layer on both dialects it supports: PostgreSQL (production) and SQLite (the
embedded default), through the same SQL and the same migrations."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from shared.rules.messages import DeliveryReceipt, SendResult, SentPart
from shared.store.budgets import budget_of, set_budget
from shared.store.campaigns import add_campaign, find_campaign, set_campaign_paused
from shared.store.db import Database, upgrade
from shared.store.receipts import apply_receipt
from shared.store.replies import (
    campaigns_with_due_replies,
    claim_batch,
    expire_replies,
    record_send,
    recover_stale_claims,
    start_sending,
)
from shared.vonage.webhooks import parse_inbound
from tests.helpers import inbound, record_inbound

KEY = "store-test-key-0123456789"
NOW = datetime(2026, 11, 25, 20, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request, tmp_path, db) -> Database:
    if request.param == "sqlite":
        database = Database(f"sqlite:///{tmp_path / 'store.db'}")
        upgrade(database)
    else:
        database = Database(os.environ["DATABASE_URL"], pool_size=1)
    with database.transaction() as tx:
        add_campaign(tx, "33700000001", "Stop.", delay_seconds=3600,
                           window_seconds=86400, price_per_segment=Decimal("0.08"),
                           allow_multipart=False, now=NOW)
    yield database
    database.close()


def _record(database: Database, at: datetime = NOW, **fields):
    with database.transaction() as tx:
        return record_inbound(tx, parse_inbound(inbound(**fields)), KEY, at)


def test_migrations_are_idempotent(database):
    assert upgrade(database) == []


def test_duplicate_message_id_is_recorded_once(database):
    assert _record(database, message_id="A").verdict == "reply"
    assert _record(database, message_id="A").verdict == "duplicate"


def test_second_message_in_window_is_suppressed_and_after_window_replied(database):
    first = _record(database, message_id="A")
    assert first.due_at == NOW + timedelta(hours=1)
    assert _record(database, NOW + timedelta(hours=2), message_id="B").verdict == "suppress"
    assert _record(database, NOW + timedelta(days=2), message_id="C").verdict == "reply"


def test_parts_are_assembled_when_the_last_arrives(database):
    parts = {"concat": "true", "concat-ref": "9", "concat-total": "2"}
    second = _record(database, message_id="P2", text="monde", **parts, **{"concat-part": "2"})
    assert second.verdict == "partial"
    first = _record(database, message_id="P1", text="bonjour ", **parts,
                    **{"concat-part": "1"})
    assert first.verdict == "reply"
    with database.transaction() as tx:
        row = tx.execute("SELECT text, dedup_key FROM inbound_messages").fetchone()
    assert (row["text"], row["dedup_key"]) == ("bonjour monde", "concat:P1")


def test_a_due_reply_is_claimed_once_and_recorded_with_its_price(database):
    outcome = _record(database, message_id="A")
    later = NOW + timedelta(hours=1, seconds=1)
    with database.transaction() as tx:
        assert claim_batch(tx, outcome.campaign_id, NOW, 10) == [], "not due yet"
        assert campaigns_with_due_replies(tx, later) == [outcome.campaign_id]
        [claimed] = claim_batch(tx, outcome.campaign_id, later, 10)
        assert claimed.to_number == "33612345621" and claimed.reserved == Decimal("0.08")
        assert claim_batch(tx, outcome.campaign_id, later, 10) == [], "claimed once"
        assert start_sending(tx, claimed, later)
        assert not start_sending(tx, claimed, later), "another worker gets nothing"
        result = SendResult("sent", (SentPart("MSG1", Decimal("0.0333")),), segments=1)
        assert record_send(tx, claimed, result, later, None) == "sent"
        row = tx.execute("SELECT * FROM replies").fetchone()
        budget = budget_of(tx, outcome.campaign_id, later)
    assert row["to_number"] is None and Decimal(str(row["price"])) == Decimal("0.0333")
    assert budget.total_used == Decimal("0.0333"), "the reservation settled to the price"


def test_paused_campaign_keeps_its_replies_waiting(database):
    outcome = _record(database, message_id="A")
    later = NOW + timedelta(hours=2)
    with database.transaction() as tx:
        set_campaign_paused(tx, "33700000001", True)
        assert campaigns_with_due_replies(tx, later) == []
        assert claim_batch(tx, outcome.campaign_id, later, 10) == []
        set_campaign_paused(tx, "33700000001", False)
        assert len(claim_batch(tx, outcome.campaign_id, later, 10)) == 1


def test_stale_sending_becomes_unknown_and_a_late_receipt_reconciles_it(database):
    outcome = _record(database, message_id="A")
    due = NOW + timedelta(hours=1)
    with database.transaction() as tx:
        [claimed] = claim_batch(tx, outcome.campaign_id, due, 10)
        start_sending(tx, claimed, due)
        assert recover_stale_claims(tx, due + timedelta(minutes=5)) == (0, 0)
        assert recover_stale_claims(tx, due + timedelta(minutes=11)) == (0, 1)
        receipt = DeliveryReceipt("LOST1", "delivered", 0, "0.0333", str(claimed.id), "",
                                  None)
        assert apply_receipt(tx, receipt, due + timedelta(minutes=12)) == "delivered"
        row = tx.execute("SELECT status, to_number FROM replies").fetchone()
    assert (row["status"], row["to_number"]) == ("delivered", None)


def test_budget_caps_hold_back_what_does_not_fit_until_it_expires(database):
    for index in range(5):
        _record(database, message_id=f"B{index}", msisdn=f"3361111111{index}")
    due = NOW + timedelta(hours=1)
    with database.transaction() as tx:
        set_budget(tx, "33700000001", due, hourly=Decimal("0.20"))
        campaign_id = find_campaign(tx, "33700000001").id
        claimed = claim_batch(tx, campaign_id, due, 10)
        assert len(claimed) == 2, "0.08 each: two fit under 0.20"
        assert claim_batch(tx, campaign_id, due, 10) == []
        waiting = tx.execute("SELECT due_at FROM replies WHERE status = 'pending'").fetchall()
        assert len(waiting) == 3
        assert all(row["due_at"] == due.replace(minute=0) + timedelta(hours=1)
                   for row in waiting), "they wait for the next hour"
        next_hour = due + timedelta(hours=1)
        assert len(claim_batch(tx, campaign_id, next_hour, 10)) == 2
        assert expire_replies(tx, due + timedelta(hours=7)) == 1
        expired = tx.execute("SELECT to_number FROM replies WHERE status = 'expired'")
        assert [row["to_number"] for row in expired.fetchall()] == [None]
