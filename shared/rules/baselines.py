"""Adaptive thresholds: each campaign judged against its own normal.

A threshold is `max(floor, ratio × baseline)`. The baseline is the campaign's *peak* of
normal traffic (what it answered, or would have, outside raids) over the last
`baseline_days`: each day's busiest window, and of those the `baseline_peak_day`-th
busiest day (3: the third busiest day's busiest window). A quiet number has no busy day
and stays at its floor; a busy one is judged against its usual evenings.

Why the k-th busiest *day* rather than the busiest window or a percentile of windows: an
attacker who gets their own traffic counted as normal (real SIMs, answered, outside a
raid) must do it on k different days to move the baseline, where a percentile of 5-minute
windows moved after one evening of 41 windows (red team, SECURITY.md). The rollups that
feed this are in shared/store/rollups.py.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Threshold:
    """A threshold and where it came from, for the reasons operators read."""

    floor: float
    ratio: float
    baseline: float
    days: int
    peak_day: int

    @property
    def value(self) -> float:
        return max(self.floor, self.ratio * self.baseline)

    @property
    def adaptive(self) -> bool:
        return self.ratio * self.baseline > self.floor

    def explain(self) -> str:
        """`90 = 3 × 14-day peak 30`, or `30 = floor` (no history above it)."""
        if not self.adaptive:
            return f"{_number(self.value)} = floor"
        which = "max" if self.peak_day <= 1 else "peak"
        return (f"{_number(self.value)} = {_number(self.ratio)} × {self.days}-day {which} "
                f"{_number(self.baseline)}")


def _number(value: float) -> str:
    """A figure as operators read it: `3`, `2.5`, `0.08`."""
    return f"{value:.2f}".rstrip("0").rstrip(".") if value != int(value) else str(int(value))
