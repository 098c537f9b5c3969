"""Daily caps reset at the campaign's local midnight, across DST changes; without a zone
the periods are those of UTC, as before."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from shared.rules.budget import BudgetState, day_start, hour_start, next_day_start

PARIS = "Europe/Paris"


def _at(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def _budget(day: datetime, day_used: str, daily_cap: str = "1") -> BudgetState:
    return BudgetState(None, Decimal(daily_cap), None, hour_start(day), Decimal(0), day,
                       Decimal(day_used), Decimal(day_used))


# --- the attack: a cap that resets at 00:00 UTC lets a flood spend two days' cap overnight ---

def test_the_paris_day_starts_at_paris_midnight_not_utc_midnight():
    evening = _at(2026, 11, 25, 23, 30)                  # 00:30 in Paris, 26 November
    assert day_start(evening) == _at(2026, 11, 25)
    assert day_start(evening, PARIS) == _at(2026, 11, 25, 23)


def test_a_daily_cap_spent_before_utc_midnight_is_still_spent_until_paris_midnight():
    spent = _budget(day_start(_at(2026, 11, 25, 12), PARIS), "1")
    after_utc_midnight = _at(2026, 11, 26, 0, 30)        # 01:30 in Paris: a new day already
    assert spent.rolled(after_utc_midnight, PARIS).day_used == 0
    before_paris_midnight = _at(2026, 11, 25, 22, 30)    # 23:30 in Paris, same day
    assert spent.rolled(before_paris_midnight, PARIS).day_used == 1
    assert spent.next_room(before_paris_midnight, PARIS) == _at(2026, 11, 25, 23)


# --- across DST ------------------------------------------------------------------------------

@pytest.mark.parametrize("now, start, end, hours", [
    (_at(2026, 3, 29, 12), _at(2026, 3, 28, 23), _at(2026, 3, 29, 22), 23),     # spring
    (_at(2026, 10, 25, 12), _at(2026, 10, 24, 22), _at(2026, 10, 25, 23), 25),  # autumn
    (_at(2026, 10, 25, 0, 30), _at(2026, 10, 24, 22), _at(2026, 10, 25, 23), 25),  # 02:30
    (_at(2026, 10, 25, 1, 30), _at(2026, 10, 24, 22), _at(2026, 10, 25, 23), 25),  # 02:30 again
])
def test_a_dst_day_is_one_day_of_23_or_25_hours(now, start, end, hours):
    assert day_start(now, PARIS) == start
    assert next_day_start(now, PARIS) == end
    assert end - start == timedelta(hours=hours)
    assert _budget(start, "1").next_room(now, PARIS) == end


def test_the_repeated_autumn_hour_is_two_hours_not_one():
    first, second = _at(2026, 10, 25, 0, 30), _at(2026, 10, 25, 1, 30)  # both 02:30 local
    assert hour_start(first, PARIS) == _at(2026, 10, 25, 0)
    assert hour_start(second, PARIS) == _at(2026, 10, 25, 1)


def test_a_midnight_skipped_by_dst_starts_the_day_at_its_first_instant():
    # Santiago jumps from 00:00 to 01:00 on 6 September 2026: the day starts at 01:00 local.
    assert day_start(_at(2026, 9, 6, 12), "America/Santiago") == _at(2026, 9, 6, 4)


def test_half_hour_zones_have_half_hour_hours():
    assert hour_start(_at(2026, 1, 1, 12, 10), "Asia/Kolkata") == _at(2026, 1, 1, 11, 30)


# --- without a zone: as before -------------------------------------------------------------------

def test_without_a_zone_periods_are_unchanged():
    now = _at(2026, 3, 29, 0, 30)
    assert day_start(now) == _at(2026, 3, 29) and hour_start(now) == _at(2026, 3, 29, 0)
    assert next_day_start(now) == _at(2026, 3, 30)
    assert _budget(day_start(now), "1").next_room(now) == _at(2026, 3, 30)
    naive = datetime(2026, 3, 29, 0, 30)
    assert day_start(naive, PARIS) == datetime(2026, 3, 28, 23)
