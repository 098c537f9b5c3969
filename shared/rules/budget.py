"""The budget guard's arithmetic: estimates, periods and what still fits.

Every send reserves its estimated cost first, against the hourly, daily and total caps of
its campaign, and settles with the price the provider reported. The storage layer applies
these rules under the campaign's budget row lock (`shared.store.reserve_budget`).

With a time zone (IANA name, e.g. "Europe/Paris") a day starts at local midnight, so a
daily cap resets when the campaign's day does, not at 00:00 UTC (01:00 or 02:00 in Paris);
days are computed on local dates, so a 23- or 25-hour DST day is still one day. Without a
zone, periods are those of `now` as given (UTC in the service), as before.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from shared.rules.segments import encode

PERIODS = ("hour", "day", "total")


def estimate_cost(text: str, price_per_segment: Decimal,
                  observed_price_per_segment: Decimal = Decimal(0)) -> Decimal:
    """Upper estimate of one reply: its segments at the highest known price per segment."""
    return encode(text).segments * max(price_per_segment, observed_price_per_segment)


def _local(now: datetime, zone: str) -> datetime:
    return (now if now.tzinfo else now.replace(tzinfo=UTC)).astimezone(ZoneInfo(zone))


def _back(local: datetime, now: datetime) -> datetime:
    """`local` in the representation of `now` (naive `now` is read as UTC)."""
    if now.tzinfo:
        return local.astimezone(now.tzinfo)
    return local.astimezone(UTC).replace(tzinfo=None)


def _midnight(day: date, zone: str) -> datetime:
    """The first instant of `day` in `zone` (a midnight skipped by DST resolves forward)."""
    return datetime.combine(day, time(0), ZoneInfo(zone)).astimezone(UTC)


def hour_start(now: datetime, zone: str | None = None) -> datetime:
    """Start of the hour of `now` (in `zone` if given: half-hour offsets differ)."""
    if zone is None:
        return now.replace(minute=0, second=0, microsecond=0)
    return _back(_local(now, zone).replace(minute=0, second=0, microsecond=0), now)


def day_start(now: datetime, zone: str | None = None) -> datetime:
    """Start of the day of `now`: midnight of `now`'s date in `zone` if given."""
    if zone is None:
        return now.replace(hour=0, minute=0, second=0, microsecond=0)
    return _back(_midnight(_local(now, zone).date(), zone), now)


def next_day_start(now: datetime, zone: str | None = None) -> datetime:
    """When the next day starts (24 h later without a zone, local midnight with one)."""
    if zone is None:
        return day_start(now) + timedelta(days=1)
    return _back(_midnight(_local(now, zone).date() + timedelta(days=1), zone), now)


@dataclass(frozen=True)
class BudgetState:
    """A campaign's caps (None = no cap) and what is used in each current period."""

    hourly_cap: Decimal | None
    daily_cap: Decimal | None
    total_cap: Decimal | None
    hour_start: datetime
    hour_used: Decimal
    day_start: datetime
    day_used: Decimal
    total_used: Decimal

    def rolled(self, now: datetime, zone: str | None = None) -> BudgetState:
        """The same budget seen at `now`: a new hour or day (in `zone`) starts from zero."""
        hour, day = hour_start(now, zone), day_start(now, zone)
        return BudgetState(
            self.hourly_cap, self.daily_cap, self.total_cap,
            hour, self.hour_used if self.hour_start == hour else Decimal(0),
            day, self.day_used if self.day_start == day else Decimal(0),
            self.total_used,
        )

    def remaining(self) -> dict[str, Decimal | None]:
        """What each period still allows (None: no cap)."""
        return {
            "hour": None if self.hourly_cap is None else self.hourly_cap - self.hour_used,
            "day": None if self.daily_cap is None else self.daily_cap - self.day_used,
            "total": None if self.total_cap is None else self.total_cap - self.total_used,
        }

    def fitting(self, costs: list[Decimal]) -> int:
        """How many of `costs`, taken in order, fit under every cap together."""
        room = [value for value in self.remaining().values() if value is not None]
        used = Decimal(0)
        for count, cost in enumerate(costs):
            if any(used + cost > value for value in room):
                return count
            used += cost
        return len(costs)

    def next_room(self, now: datetime, zone: str | None = None) -> datetime | None:
        """When more room can appear (the next hour or day, in `zone`), None if only the
        total blocks."""
        remaining = self.remaining()
        if remaining["total"] is not None and remaining["total"] <= 0:
            return None
        if remaining["day"] is not None and remaining["day"] <= 0:
            return next_day_start(now, zone)
        return hour_start(now, zone) + timedelta(hours=1)
