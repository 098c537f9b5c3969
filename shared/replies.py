"""The reply rule: at most one reply per sender, per campaign, per reply window.

Plain data in, a decision out. The worker applies it while it holds the sender's row lock,
so two messages of one sender handled at once cannot both win.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from shared.abuse import CampaignRules


@dataclass(frozen=True)
class Campaign:
    """A campaign: one inbound number and how it answers."""

    id: int
    number: str
    reply_text: str
    reply_delay_seconds: int
    reply_window_seconds: int
    price_per_segment: Decimal
    allow_multipart: bool
    paused: bool
    rules: CampaignRules = field(default_factory=CampaignRules)
    storm_mode: bool = False
    observed_price_per_segment: Decimal = Decimal(0)

    @classmethod
    def from_row(cls, row: dict) -> Campaign:
        return cls(
            id=row["id"], number=row["number"], reply_text=row["reply_text"],
            reply_delay_seconds=row["reply_delay_seconds"],
            reply_window_seconds=row["reply_window_seconds"],
            price_per_segment=Decimal(str(row["price_per_segment"])),
            allow_multipart=bool(row["allow_multipart"]), paused=bool(row["paused"]),
            rules=CampaignRules.from_json(row["rules"]), storm_mode=bool(row["storm_mode"]),
            observed_price_per_segment=Decimal(str(row["observed_price_per_segment"])),
        )


@dataclass(frozen=True)
class ReplyDecision:
    """`verdict` is `reply` or `suppress`; `reasons` says why, for the operator."""

    verdict: str
    reasons: tuple[str, ...]
    due_at: datetime | None = None
    window_ends_at: datetime | None = None


def decide_reply(campaign: Campaign, reply_window_ends_at: datetime | None,
                 now: datetime) -> ReplyDecision:
    """Reply unless this sender was already answered inside the campaign's window."""
    if reply_window_ends_at is not None and reply_window_ends_at > now:
        return ReplyDecision("suppress", ("already answered in this reply window",))
    return ReplyDecision(
        "reply",
        ("first message in the reply window",),
        due_at=now + timedelta(seconds=campaign.reply_delay_seconds),
        window_ends_at=now + timedelta(seconds=campaign.reply_window_seconds),
    )


MAX_SEND_ATTEMPTS = 8


def retry_delay(attempts: int, jitter: float) -> timedelta:
    """Back-off before the next try of a throttled send: 2, 4, 8 … s, capped at 5 min.

    `jitter` in [0, 1) spreads retries of many replies so they do not return together.
    """
    base = min(2 ** attempts, 300)
    return timedelta(seconds=base * (0.5 + jitter))
