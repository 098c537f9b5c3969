"""Campaigns: one row per inbound number, with its reply, knobs and storm mode."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from shared.rules.campaign import Campaign, CampaignRules
from shared.store.db import Transaction

_COLUMNS = (
    "id, number, reply_text, reply_delay_seconds, reply_window_seconds, price_per_segment,"
    " allow_multipart, paused, rules, storm_mode, observed_price_per_segment,"
    " storm_changed_at, sending_halted_reason"
)


def _read(tx: Transaction, where: str, params: dict[str, Any],
          suffix: str = "") -> list[Campaign]:
    """The one reader of campaign rows; `where` and `suffix` are constants of this module."""
    rows = tx.execute(
        f"SELECT {_COLUMNS} FROM campaigns {where} {suffix}", params  # noqa: S608
    ).fetchall()
    return [Campaign.from_row(row) for row in rows]


def find_campaign(tx: Transaction, number: str) -> Campaign | None:
    found = _read(tx, "WHERE number = %(number)s", {"number": number})
    return found[0] if found else None


def campaign_by_id(tx: Transaction, campaign_id: int) -> Campaign | None:
    found = _read(tx, "WHERE id = %(id)s", {"id": campaign_id})
    return found[0] if found else None


def lock_campaign(tx: Transaction, number: str) -> Campaign | None:
    """The campaign answering on `number`, its row locked until commit: inbound batches of
    one campaign are judged one after the other (see workers/inbound.py)."""
    found = _read(tx, "WHERE number = %(number)s", {"number": number}, "FOR NO KEY UPDATE")
    return found[0] if found else None


def list_campaigns(tx: Transaction) -> list[Campaign]:
    return _read(tx, "", {}, "ORDER BY number")


def campaign_numbers(tx: Transaction) -> dict[int, str]:
    rows = tx.execute("SELECT id, number FROM campaigns").fetchall()
    return {row["id"]: row["number"] for row in rows}


def add_campaign(tx: Transaction, number: str, reply_text: str, *, delay_seconds: int,
                 window_seconds: int, price_per_segment: Decimal, allow_multipart: bool,
                 now: datetime) -> bool:
    """Create a campaign; False when one already answers on this number."""
    cur = tx.execute(
        "INSERT INTO campaigns (number, reply_text, reply_delay_seconds, reply_window_seconds,"
        " price_per_segment, allow_multipart, created_at)"
        " VALUES (%(number)s, %(text)s, %(delay)s, %(window)s, %(price)s, %(multipart)s, %(now)s)"
        " ON CONFLICT (number) DO NOTHING",
        {"number": number, "text": reply_text, "delay": delay_seconds, "window": window_seconds,
         "price": price_per_segment, "multipart": allow_multipart, "now": now},
    )
    return cur.rowcount == 1


def set_campaign_paused(tx: Transaction, number: str, paused: bool) -> bool:
    """Pause or resume a campaign's sending; resuming also lifts an automatic halt."""
    cur = tx.execute(
        "UPDATE campaigns SET paused = %(paused)s,"
        " sending_halted_reason = CASE WHEN %(paused)s THEN sending_halted_reason END,"
        " sending_halted_at = CASE WHEN %(paused)s THEN sending_halted_at END"
        " WHERE number = %(number)s",
        {"paused": paused, "number": number})
    return cur.rowcount == 1


def halt_sending(tx: Transaction, campaign_id: int, reason: str, now: datetime) -> None:
    """Stop a campaign's sending until a person resumes it (`relous campaign resume`);
    the first reason is kept. Inbound is still recorded and decided."""
    tx.execute(
        "UPDATE campaigns SET sending_halted_reason = %(reason)s, sending_halted_at = %(now)s"
        " WHERE id = %(id)s AND sending_halted_reason IS NULL",
        {"reason": reason, "now": now, "id": campaign_id})


def update_campaign(tx: Transaction, campaign_id: int, *, reply_text: str | None,
                    delay_seconds: int | None, window_seconds: int | None,
                    price_per_segment: Decimal, allow_multipart: bool,
                    rules: CampaignRules) -> None:
    """Change a campaign; None keeps a value. Pending replies keep the text they had."""
    tx.execute(
        "UPDATE campaigns SET reply_text = COALESCE(%(text)s, reply_text),"
        " reply_delay_seconds = COALESCE(%(delay)s, reply_delay_seconds),"
        " reply_window_seconds = COALESCE(%(window)s, reply_window_seconds),"
        " price_per_segment = %(price)s, allow_multipart = %(multipart)s, rules = %(rules)s"
        " WHERE id = %(id)s",
        {"text": reply_text, "delay": delay_seconds, "window": window_seconds,
         "price": price_per_segment, "multipart": allow_multipart, "rules": rules.to_json(),
         "id": campaign_id},
    )


def set_storm_mode(tx: Transaction, campaign_id: int, storm: bool, now: datetime) -> None:
    tx.execute(
        "UPDATE campaigns SET storm_mode = %(storm)s, storm_changed_at = %(now)s"
        " WHERE id = %(id)s", {"storm": storm, "now": now, "id": campaign_id},
    )


EVERY_CAMPAIGN = "*"


def halt_everything(tx: Transaction, reason: str, now: datetime) -> bool:
    """Stop sending for every campaign (the kill switch); False when already stopped."""
    return tx.execute(
        "INSERT INTO sending_halts (scope, reason, halted_at) VALUES (%(scope)s, %(reason)s,"
        " %(now)s) ON CONFLICT (scope) DO NOTHING",
        {"scope": EVERY_CAMPAIGN, "reason": reason, "now": now}).rowcount == 1


def resume_everything(tx: Transaction) -> bool:
    """Lift the kill switch; False when it was not on."""
    return tx.execute("DELETE FROM sending_halts WHERE scope = %(scope)s",
                      {"scope": EVERY_CAMPAIGN}).rowcount == 1


def global_halt(tx: Transaction) -> str | None:
    """Why sending is stopped for every campaign; None when it is not."""
    row = tx.execute("SELECT reason FROM sending_halts WHERE scope = %(scope)s",
                     {"scope": EVERY_CAMPAIGN}).fetchone()
    return str(row["reason"]) if row else None


def resume_sending(tx: Transaction, campaign_id: int) -> bool:
    """Lift a campaign's halt (an operator's stop or a price overrun); False if none."""
    return tx.execute(
        "UPDATE campaigns SET sending_halted_reason = NULL, sending_halted_at = NULL"
        " WHERE id = %(id)s AND sending_halted_reason IS NOT NULL",
        {"id": campaign_id}).rowcount == 1


def observe_price(tx: Transaction, campaign_id: int, per_segment: Decimal) -> None:
    """Remember the highest reported price per segment, so estimates never fall below it."""
    tx.execute(
        "UPDATE campaigns SET observed_price_per_segment = %(price)s"
        " WHERE id = %(id)s AND observed_price_per_segment < %(price)s",
        {"price": per_segment, "id": campaign_id},
    )
