"""The reply rule: at most one reply per sender, per campaign, per reply window.

Plain data in, a decision out. The worker applies it while it holds the sender's row lock,
so two messages of one sender handled at once cannot both win.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from shared.rules.campaign import Campaign


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
