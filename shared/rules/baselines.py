"""Adaptive thresholds: each campaign judged against its own normal.

A threshold is `max(floor, ratio × baseline)`, where the baseline is the campaign's busiest
windows of *normal* traffic (what the abuse rules let through) over the last
`baseline_days`, taken at `baseline_percentile` (100: the busiest window; 99: the window
that 1 % of windows exceed). Windows without traffic count as zeros, so a quiet number's
baseline is about zero and its threshold stays at the floor; a busy one's grows with it.
Counting only normal traffic, and a percentile rather than the maximum, keeps an attacker
from raising the bar with a few floods (the rollups that feed this are in
shared/store/rollups.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Threshold:
    """A threshold and where it came from, for the reasons operators read."""

    floor: float
    ratio: float
    baseline: float
    days: int
    percentile: float

    @property
    def value(self) -> float:
        return max(self.floor, self.ratio * self.baseline)

    @property
    def adaptive(self) -> bool:
        return self.ratio * self.baseline > self.floor

    def explain(self) -> str:
        """`90 = 3 × 14-day p99 30`, or `30 = floor` (no history above it)."""
        if not self.adaptive:
            return f"{_number(self.value)} = floor"
        which = "max" if self.percentile >= 100 else f"p{_number(self.percentile)}"
        return (f"{_number(self.value)} = {_number(self.ratio)} × {self.days}-day {which} "
                f"{_number(self.baseline)}")


def baseline_rank(days: int, window_minutes: int, percentile: float) -> int:
    """Which window, counted from the busiest (1), is the baseline: over `days` of
    `window_minutes` windows, the one that (100 - percentile) % of windows exceed."""
    windows = max(1, days * 1440 // max(1, window_minutes))
    return max(1, math.ceil(windows * (100 - percentile) / 100))


def _number(value: float) -> str:
    """A figure as operators read it: `3`, `2.5`, `0.08`."""
    return f"{value:.2f}".rstrip("0").rstrip(".") if value != int(value) else str(int(value))
