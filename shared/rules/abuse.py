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

from shared.rules.baselines import Threshold
from shared.rules.campaign import CampaignRules
from shared.rules.neardup import joined_pieces, skeleton
from shared.rules.skeleton import fold

REPLY, SUPPRESS, BLOCK = "reply", "suppress", "block"
RAID_RULES = frozenset({"raid_same_text", "prefix_cluster"})
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
    new_senders_baseline: float      # the usual number per raid window (baselines.py)
    same_text_senders: int           # distinct senders of this text in the raid window
    prefix_new_senders: int          # first-time senders of this prefix in the raid window
    storm_mode: bool = False


@dataclass(frozen=True)
class Verdict:
    verdict: str
    score: int
    reasons: tuple[str, ...]
    # Rules in `record` mode that would have made the verdict stricter (the reasons then
    # say "would suppress: …"); the verdict itself is what the enforced rules decided.
    would_stop: tuple[str, ...] = ()
    # The enforced rules that fired.
    fired: tuple[str, ...] = ()

    @property
    def caught_raiding(self) -> bool:
        """Suppressed by the raid signals: the sender's later messages are held too (they
        would otherwise be answered once the raid's burst is over)."""
        return self.verdict != REPLY and bool(RAID_RULES & set(self.fired))


@dataclass(frozen=True)
class Signal:
    """One rule that fired on a message: its points and the reason operators read."""

    rule: str
    points: int
    reason: str


def raid_threshold(rules: CampaignRules, baseline: float) -> Threshold:
    """First-time senders per raid window from which a burst is a raid."""
    return Threshold(rules.raid_min_new_senders, rules.raid_ratio, baseline,
                     rules.baseline_days, rules.baseline_peak_day)


def storm_threshold(rules: CampaignRules, baseline: float) -> Threshold:
    """Inbound messages per minute from which the campaign goes into storm mode."""
    return Threshold(rules.storm_threshold_per_minute, rules.storm_ratio, baseline,
                     rules.baseline_days, rules.baseline_peak_day)


def raid_in_progress(rules: CampaignRules, stats: CampaignStats) -> bool:
    """A burst of first-time senders far above the campaign's usual rate."""
    return stats.new_senders_recent >= raid_threshold(rules, stats.new_senders_baseline).value


def signals(rules: CampaignRules, sender: SenderStats, campaign: CampaignStats,
            lexicon_hits: tuple[str, ...]) -> list[Signal]:
    """Every rule that fires on this message, whatever its mode; each reason quotes its
    limit (and, for the raid signals, the raid threshold and where it came from)."""
    fired: list[Signal] = []
    for count, limit, unit in ((sender.per_minute, rules.sender_per_minute, "minute"),
                               (sender.per_hour, rules.sender_per_hour, "hour"),
                               (sender.per_day, rules.sender_per_day, "day")):
        if count > limit:
            fired.append(Signal("velocity", rules.block_score,
                                f"velocity: {count} messages in a {unit} (limit {limit})"))
            break
    if sender.same_text_today >= rules.repeat_per_day:
        fired.append(Signal("repetition", rules.suppress_score,
                            f"repetition: same text {sender.same_text_today} times today "
                            f"(limit {rules.repeat_per_day})"))
    raid = ""
    if raid_in_progress(rules, campaign):
        threshold = raid_threshold(rules, campaign.new_senders_baseline)
        raid = (f"raid: {campaign.new_senders_recent} new senders in "
                f"{rules.raid_window_seconds // 60} min, threshold {threshold.explain()}; ")
        if campaign.same_text_senders >= rules.raid_same_text_senders:
            fired.append(Signal("raid_same_text", rules.lexicon_points,
                                f"{raid}same or near-same text from "
                                f"{campaign.same_text_senders} senders (limit "
                                f"{rules.raid_same_text_senders})"))
    # A block of numbers is a SIM farm with or without a raid on the whole campaign.
    if campaign.prefix_new_senders >= rules.prefix_cluster_senders:
        fired.append(Signal("prefix_cluster", rules.lexicon_points,
                            f"{raid}{campaign.prefix_new_senders} new senders share this "
                            f"number prefix in {rules.raid_window_seconds // 60} min "
                            f"(limit {rules.prefix_cluster_senders})"))
    if lexicon_hits:
        fired.append(Signal("lexicon", rules.lexicon_points,
                            "lexicon: " + ", ".join(lexicon_hits[:3])))
    return fired


def score_message(rules: CampaignRules, sender: SenderStats, campaign: CampaignStats,
                  lexicon_hits: tuple[str, ...]) -> Verdict:
    """Judge one inbound message. The reply window is applied after, by `decide_reply`.

    Rules in `enforce` mode decide; rules in `record` mode are judged as if enforced too,
    and when that would have been stricter the verdict says so ("would suppress: …")
    without changing; rules `off` are not looked at."""
    if sender.listed == "allow":
        return Verdict(REPLY, 0, ("allowlisted sender",))
    if sender.listed == "block":
        return Verdict(BLOCK, rules.block_score, ("blocklisted sender",))
    if sender.blocked:
        return Verdict(BLOCK, rules.block_score, ("sender blocked for abuse",))
    fired = signals(rules, sender, campaign, lexicon_hits)
    if campaign.storm_mode and not sender.first_contact:
        fired.append(Signal("storm", 0, "storm mode: only first contacts answered"))
    enforced = [signal for signal in fired if rules.mode(signal.rule) == "enforce"]
    recorded = [signal for signal in fired if rules.mode(signal.rule) == "record"]
    verdict = _total(rules, enforced)
    if not recorded:
        return verdict
    shadow = _total(rules, enforced + recorded)
    if _STRICTNESS[shadow.verdict] <= _STRICTNESS[verdict.verdict]:
        return verdict
    would = f"would {shadow.verdict}: " + "; ".join(signal.reason for signal in recorded)
    return Verdict(verdict.verdict, verdict.score, (*verdict.reasons, would),
                   tuple(signal.rule for signal in recorded), verdict.fired)


_STRICTNESS = {REPLY: 0, SUPPRESS: 1, BLOCK: 2}


def _total(rules: CampaignRules, fired: list[Signal]) -> Verdict:
    """The verdict of these signals' points (storm mode suppresses a returning sender)."""
    total = sum(signal.points for signal in fired)
    reasons = tuple(signal.reason for signal in fired)
    names = tuple(signal.rule for signal in fired)
    if total >= rules.block_score:
        return Verdict(BLOCK, total, reasons, fired=names)
    if total >= rules.suppress_score:
        return Verdict(SUPPRESS, total, reasons, fired=names)
    if "storm" in names:  # a returning sender in a storm: held by nothing else
        return Verdict(SUPPRESS, total, reasons, fired=("storm",))
    return Verdict(REPLY, total, reasons, fired=names)


def next_storm_mode(rules: CampaignRules, storm_mode: bool, per_minute: float,
                    changed_at: datetime | None, now: datetime,
                    threshold: float | None = None) -> bool:
    """Storm mode with hysteresis and a minimum hold: on above the threshold at once, off
    below a fraction of it but never within `storm_min_hold_seconds` of being switched on,
    so that bursts spaced just over a minute apart cannot flap it (at most two changes per
    hold). Entering is never delayed: protection first. `threshold`: the campaign's
    adaptive one (`storm_threshold`), else the floor."""
    limit = rules.storm_threshold_per_minute if threshold is None else threshold
    if storm_mode:
        held = (changed_at is not None
                and now - changed_at < timedelta(seconds=rules.storm_min_hold_seconds))
        return held or per_minute >= limit * rules.storm_exit_ratio
    return per_minute > limit


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
    """The lexicon's terms in `text`, as written or disguised (leetspeak, look-alikes,
    marks or spaces inside words: `neardup.joined_pieces`; a plural in -s), on word
    boundaries either way."""
    padded, pieces = f" {normalise(text)} ", joined_pieces(text)
    written = tuple(term for term in lexicon if f" {term} " in padded)
    seen = {skeleton(term) for term in written}  # "conasse" is "connasse" respelt
    disguised = []
    for term in lexicon:
        form = skeleton(term)
        if form not in seen and (form in pieces or form + "s" in pieces):  # a plural
            seen.add(form)
            disguised.append(term)
    return written + tuple(disguised)


@cache
def load_lexicon(path: str | None = None) -> tuple[str, ...]:
    """The lexicon file (default: shared/rules/lexicon/fr.txt), normalised, one term a line."""
    raw = (Path(path).read_text() if path
           else (resources.files("shared.rules") / "lexicon" / "fr.txt").read_text())
    terms = (normalise(line) for line in raw.splitlines() if not line.startswith("#"))
    return tuple(sorted({term for term in terms if term}))


def block_until(rules: CampaignRules, now: datetime) -> datetime:
    return now + timedelta(seconds=rules.block_seconds)
