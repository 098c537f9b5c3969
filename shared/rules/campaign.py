"""A campaign and its rule knobs: the domain types every floor passes around."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from shared.rules.phones import default_time_zone, parse_reply_countries


def _countries(raw: str) -> str:
    return ",".join(parse_reply_countries(raw))


# The abuse rules an operator can switch (`relous rules set NUMBER RULE=MODE`): `enforce`
# changes the verdict, `record` only writes what it would have done, `off` does nothing.
RULES = ("velocity", "repetition", "raid_same_text", "prefix_cluster", "lexicon", "storm",
         "destination_gate")
MODES = ("enforce", "record", "off")


def _mode(raw: str) -> str:
    mode = raw.strip().lower()
    if mode not in MODES:
        raise ValueError(f"a rule's mode is one of {', '.join(MODES)}, got {raw!r}")
    return mode


# Knobs with an upper bound: how far back the rollups go (ROLLUP_DAYS).
_MAXIMA = {"baseline_peak_day": 30, "baseline_days": 30}
# Every other number: finite and at most this (a billion seconds is 31 years; a larger
# `block_seconds` would overflow a worker's date arithmetic).
MAX_KNOB = 10**9

# How each string knob is checked and written back (a bad value raises ValueError).
_STRING_KNOBS = {"reply_countries": _countries} | {f"mode_{rule}": _mode for rule in RULES}


@dataclass(frozen=True)
class CampaignRules:
    """A campaign's knobs (stored as JSON in `campaigns.rules`; missing keys = defaults)."""

    sender_per_minute: int = 5
    sender_per_hour: int = 15
    sender_per_day: int = 40
    repeat_per_day: int = 3
    raid_window_seconds: int = 300
    # Adaptive thresholds (`shared/rules/baselines.py`): max(floor, ratio × the campaign's
    # peak of normal traffic: over `baseline_days`, the `baseline_peak_day`-th busiest
    # day's busiest window). A new campaign runs on the floors.
    baseline_days: int = 14
    baseline_peak_day: int = 3
    raid_min_new_senders: int = 30
    raid_ratio: float = 3.0
    raid_same_text_senders: int = 4
    prefix_cluster_senders: int = 5
    lexicon_points: int = 30
    suppress_score: int = 50
    block_score: int = 100
    block_seconds: int = 86400
    storm_threshold_per_minute: int = 120
    storm_ratio: float = 3.0
    storm_exit_ratio: float = 0.5
    # Ten minutes: two raid windows, so bursts spaced over a minute apart (the 2017 raids')
    # change the mode at most twice per ten minutes; returning senders wait that at most.
    storm_min_hold_seconds: int = 600
    reply_freshness_seconds: int = 6 * 3600
    # The kill switch trips itself when 10 minutes' spend passes max(floor, ratio × the
    # campaign's usual busiest 10 minutes): a person must start sending again.
    spend_trip_floor_euros: float = 50.0
    spend_trip_ratio: float = 10.0
    # A text sent by this many first-time senders whom the rules let through while the
    # campaign was calm, on this many different days (within `baseline_days`), is usual
    # for the campaign: never a raid signal on its own.
    usual_text_senders: int = 20
    usual_text_days: int = 3
    # ISO 3166 codes ("FR,BE") whose mobiles may get a reply; "" = the campaign number's.
    reply_countries: str = ""
    mode_velocity: str = "enforce"
    mode_repetition: str = "enforce"
    mode_raid_same_text: str = "enforce"
    mode_prefix_cluster: str = "enforce"
    mode_lexicon: str = "enforce"
    mode_storm: str = "enforce"
    mode_destination_gate: str = "enforce"

    @property
    def raid_window(self) -> timedelta:
        return timedelta(seconds=self.raid_window_seconds)

    def mode(self, rule: str) -> str:
        """`enforce`, `record` or `off` (see RULES)."""
        return str(getattr(self, f"mode_{rule}"))

    def with_modes(self, modes: dict[str, str]) -> CampaignRules:
        """`{"lexicon": "record"}` → these rules' modes changed; ValueError names a bad one."""
        unknown = sorted(set(modes) - set(RULES))
        if unknown:
            raise ValueError(f"unknown rule {unknown[0]!r}; rules: {', '.join(RULES)}")
        return self.with_changes({f"mode_{rule}": mode for rule, mode in modes.items()})

    @classmethod
    def from_json(cls, raw: str | None) -> CampaignRules:
        data = json.loads(raw or "{}")
        known = {field.name for field in fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in known})

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    def with_changes(self, changes: dict[str, str]) -> CampaignRules:
        """Parse `key=value` strings from the CLI; raise ValueError naming a bad one."""
        types = {field.name: field.type for field in fields(self)}
        data = asdict(self)
        for key, raw in changes.items():
            if key not in types:
                raise ValueError(f"unknown rule {key!r}; known: {', '.join(sorted(types))}")
            if types[key] in ("str", str):
                data[key] = _STRING_KNOBS.get(key, str.strip)(raw)
                continue
            try:
                value = float(raw) if types[key] in ("float", float) else int(raw)
            except ValueError:
                raise ValueError(f"{key} must be a number, got {raw!r}") from None
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{key} must be a finite number, not negative, got {raw!r}")
            if value > _MAXIMA.get(key, MAX_KNOB):
                raise ValueError(f"{key} must be at most {_MAXIMA.get(key, MAX_KNOB)}")
            data[key] = value
        return CampaignRules(**data)


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
    storm_changed_at: datetime | None = None
    # Why sending is halted (a price overrun), until a person resumes it; None: it is not.
    sending_halted_reason: str | None = None

    @property
    def sending_halted(self) -> bool:
        return self.sending_halted_reason is not None

    @property
    def time_zone(self) -> str:
        """Where the campaign's days start, for its daily cap: its number's zone
        (Europe/Paris for +33), UTC when that is not one zone."""
        return default_time_zone(self.number)

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Campaign:
        return cls(
            id=row["id"], number=row["number"], reply_text=row["reply_text"],
            reply_delay_seconds=row["reply_delay_seconds"],
            reply_window_seconds=row["reply_window_seconds"],
            price_per_segment=Decimal(str(row["price_per_segment"])),
            allow_multipart=bool(row["allow_multipart"]), paused=bool(row["paused"]),
            rules=CampaignRules.from_json(row["rules"]), storm_mode=bool(row["storm_mode"]),
            observed_price_per_segment=Decimal(str(row["observed_price_per_segment"])),
            storm_changed_at=row.get("storm_changed_at"),
            sending_halted_reason=row.get("sending_halted_reason"),
        )
