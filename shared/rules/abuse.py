"""Abuse scoring and storm mode: plain data in, a verdict with its reasons out.

Each signal answers one attack seen in 2017 and adds points; the total decides:
below `suppress_score` the message may be answered, from it on it is recorded and not
answered, from `block_score` on the sender is blocked for `block_seconds`.

| signal | attack it answers |
|---|---|
| sender velocity (per minute, hour, day) | one troll firing thousands of SMS |
| repetition (same text from one sender) | scripted floods of one message |
| same text from many new senders during a raid | a forum raid pasting one slogan |
| number-prefix cluster during a raid | SIM farms / number ranges |
| lexicon (insults, raid slogans) | raids; alone it never suppresses a reply |

The legitimate pattern every rule must leave alone: a person who texts a few times in an
evening (they get one reply; the window rule, not a penalty, keeps it to one).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache, lru_cache
from importlib import resources
from pathlib import Path

from shared.rules.campaign import CampaignRules
from shared.rules.skeleton import fold

REPLY, SUPPRESS, BLOCK = "reply", "suppress", "block"
MIN_FINGERPRINT_LENGTH = 12


@dataclass(frozen=True)
class SenderStats:
    """What the database knows of this sender, counting the message being judged."""

    per_minute: int
    per_hour: int
    per_day: int
    same_text_today: int
    first_contact: bool
    blocked: bool = False
    listed: str | None = None  # "allow" or "block" (operators' lists)


@dataclass(frozen=True)
class CampaignStats:
    """The campaign's recent traffic, for the raid signals."""

    new_senders_recent: int          # first-time senders in the raid window
    new_senders_baseline: float      # the usual number per raid window (last 24 h)
    same_text_senders: int           # distinct senders of this text in the raid window
    prefix_new_senders: int          # first-time senders of this prefix in the raid window
    storm_mode: bool = False


@dataclass(frozen=True)
class Verdict:
    verdict: str
    score: int
    reasons: tuple[str, ...]


def raid_threshold(rules: CampaignRules, baseline: float) -> float:
    """First-time senders per raid window from which a burst is a raid."""
    return max(rules.raid_min_new_senders, rules.raid_ratio * baseline)


def raid_in_progress(rules: CampaignRules, stats: CampaignStats) -> bool:
    """A burst of first-time senders far above the campaign's usual rate."""
    return stats.new_senders_recent >= raid_threshold(rules, stats.new_senders_baseline)


def score_message(rules: CampaignRules, sender: SenderStats, campaign: CampaignStats,
                  lexicon_hits: tuple[str, ...]) -> Verdict:
    """Judge one inbound message. The reply window is applied after, by `decide_reply`."""
    if sender.listed == "allow":
        return Verdict(REPLY, 0, ("allowlisted sender",))
    if sender.listed == "block":
        return Verdict(BLOCK, rules.block_score, ("blocklisted sender",))
    if sender.blocked:
        return Verdict(BLOCK, rules.block_score, ("sender blocked for abuse",))
    points: list[tuple[int, str]] = []
    for count, limit, unit in ((sender.per_minute, rules.sender_per_minute, "minute"),
                               (sender.per_hour, rules.sender_per_hour, "hour"),
                               (sender.per_day, rules.sender_per_day, "day")):
        if count > limit:
            points.append((rules.block_score, f"velocity: {count} messages in a {unit} "
                                              f"(limit {limit})"))
            break
    if sender.same_text_today >= rules.repeat_per_day:
        points.append((rules.suppress_score,
                       f"repetition: same text {sender.same_text_today} times today"))
    if raid_in_progress(rules, campaign):
        if campaign.same_text_senders >= rules.raid_same_text_senders:
            points.append((rules.lexicon_points, f"raid: same text from "
                                                 f"{campaign.same_text_senders} new senders"))
        if campaign.prefix_new_senders >= rules.prefix_cluster_senders:
            points.append((rules.lexicon_points, f"raid: {campaign.prefix_new_senders} new "
                                                 f"senders share this number prefix"))
    if lexicon_hits:
        points.append((rules.lexicon_points, "lexicon: " + ", ".join(lexicon_hits[:3])))
    total = sum(value for value, _ in points)
    reasons = tuple(reason for _, reason in points)
    if total >= rules.block_score:
        return Verdict(BLOCK, total, reasons)
    if total >= rules.suppress_score:
        return Verdict(SUPPRESS, total, reasons)
    if campaign.storm_mode and not sender.first_contact:
        return Verdict(SUPPRESS, total, (*reasons, "storm mode: only first contacts answered"))
    return Verdict(REPLY, total, reasons)


def next_storm_mode(rules: CampaignRules, storm_mode: bool, per_minute: float,
                    changed_at: datetime | None, now: datetime) -> bool:
    """Storm mode with hysteresis and a minimum hold: on above the threshold at once, off
    below a fraction of it but never within `storm_min_hold_seconds` of being switched on,
    so that bursts spaced just over a minute apart cannot flap it (at most two changes per
    hold). Entering is never delayed: protection first."""
    if storm_mode:
        held = (changed_at is not None
                and now - changed_at < timedelta(seconds=rules.storm_min_hold_seconds))
        return held or per_minute >= rules.storm_threshold_per_minute * rules.storm_exit_ratio
    return per_minute > rules.storm_threshold_per_minute


@lru_cache(maxsize=4096)  # a message's text is normalised for its key and its lexicon
def normalise(text: str) -> str:
    """Lower case, no accents, invisibles or look-alikes (`fold`), no punctuation, single
    spaces: what the lexicon, the fingerprint and the same-text counts compare."""
    return " ".join(re.sub(r"[^a-z0-9]+", " ", fold(text).lower()).split())


def fingerprint(text: str) -> str:
    """The near-same key of a text (digits dropped); empty for texts too short to compare."""
    key = " ".join(re.sub(r"[0-9]+", " ", normalise(text)).split())
    return key if len(key) >= MIN_FINGERPRINT_LENGTH else ""


def lexicon_hits(text: str, lexicon: tuple[str, ...]) -> tuple[str, ...]:
    padded = f" {normalise(text)} "
    return tuple(term for term in lexicon if f" {term} " in padded)


@cache
def load_lexicon(path: str | None = None) -> tuple[str, ...]:
    """The lexicon file (default: shared/rules/lexicon/fr.txt), normalised, one term a line."""
    raw = (Path(path).read_text() if path
           else (resources.files("shared.rules") / "lexicon" / "fr.txt").read_text())
    terms = (normalise(line) for line in raw.splitlines() if not line.startswith("#"))
    return tuple(sorted({term for term in terms if term}))


def block_until(rules: CampaignRules, now: datetime) -> datetime:
    return now + timedelta(seconds=rules.block_seconds)
