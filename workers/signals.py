"""The campaign-wide signals of one batch: the raid window's counts against the campaign's
adaptive baseline, near-duplicate texts, number-prefix clusters, and the rollups and band
keys the batch adds for the batches after it.

Read once per batch (and the baselines once a minute per process), then kept current as
the batch judges messages; what the batch adds is written by `write`, in its transaction.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from shared.rules import abuse, neardup
from shared.rules.abuse import REPLY, CampaignStats, Verdict
from shared.rules.campaign import Campaign
from shared.store import rollups, senders, texts
from shared.store.db import Transaction
from shared.store.rollups import INBOUND, NEW_SENDERS, WOULD_STOP, minute_of

# The usual rate of new senders changes slowly: computed from the rollups at most every
# BASELINE_TTL of the caller's clock, per process and campaign.
BASELINE_TTL = timedelta(seconds=60)
# Near-same senders are counted up to this many times the same-text limit: past it, more
# reads would change no verdict.
SAME_TEXT_ENOUGH = 5
_baselines: dict[int, tuple[datetime, float]] = {}


class BatchSignals:
    """One transaction's view of its campaigns' raid signals (see the module's docstring)."""

    def __init__(self, tx: Transaction, now: datetime) -> None:
        self.tx, self.now = tx, now
        self._new_senders: dict[int, tuple[int, float]] = {}
        self._prefix_senders: dict[tuple[int, str], int] = {}
        self._band_senders: dict[tuple[int, str], set[str]] = {}  # read from the database
        self._batch_bands: dict[tuple[int, str], set[str]] = {}  # this batch's, unwritten
        self._usual: dict[tuple[int, str], bool] = {}
        self.rollups: dict[tuple[int, str, int], int] = {}
        self.bands: list[dict[str, object]] = []
        self.usual_counts: dict[tuple[int, str], int] = {}

    def new_sender(self, campaign_id: int, prefix_group: str) -> None:
        """A sender new to the campaign was just recorded: the counts go up."""
        if campaign_id in self._new_senders:
            recent, baseline = self._new_senders[campaign_id]
            self._new_senders[campaign_id] = (recent + 1, baseline)
        if (campaign_id, prefix_group) in self._prefix_senders:
            self._prefix_senders[(campaign_id, prefix_group)] += 1

    def stats(self, campaign: Campaign, text: str, text_key: str, sender: str,
              prefix_group: str, insulting: bool) -> CampaignStats:
        """The raid signals; the counts include the message being judged and its sender.
        `insulting`: the text hits the lexicon (then a greeting is no excuse)."""
        recent, baseline = self.new_sender_rates(campaign)
        stats = CampaignStats(recent, baseline, 0, 0, campaign.storm_mode)
        if not abuse.raid_in_progress(campaign.rules, stats):
            if not insulting:  # a prefix cluster alone never suppresses: not worth a query
                return stats
            return CampaignStats(recent, baseline, 0, self.prefix_senders(campaign, prefix_group),
                                 campaign.storm_mode)
        same = self.same_text_senders(campaign, text, text_key, sender, insulting)
        return CampaignStats(recent, baseline, same, self.prefix_senders(campaign, prefix_group),
                             campaign.storm_mode)

    def new_sender_rates(self, campaign: Campaign) -> tuple[int, float]:
        """(first-time senders in the raid window, counted up to the raid threshold; the
        campaign's baseline per raid window), read once per batch, then kept current."""
        if campaign.id not in self._new_senders:
            rules, window = campaign.rules, campaign.rules.raid_window
            baseline = self.baseline(campaign)
            threshold = abuse.raid_threshold(rules, baseline).value
            recent = senders.first_time_senders_since(self.tx, campaign.id, self.now - window,
                                                      math.ceil(threshold))
            self._new_senders[campaign.id] = (recent, baseline)
        return self._new_senders[campaign.id]

    def baseline(self, campaign: Campaign) -> float:
        """The campaign's usual first-time senders per raid window (shared/rules/
        baselines.py), from the rollups, before the current window."""
        cached = _baselines.get(campaign.id)
        if cached is not None and timedelta(0) <= self.now - cached[0] < BASELINE_TTL:
            return cached[1]
        baseline = rollups.baseline(self.tx, campaign, NEW_SENDERS, campaign.rules.raid_window,
                                    self.now)
        _baselines[campaign.id] = (self.now, baseline)
        return baseline

    def same_text_senders(self, campaign: Campaign, text: str, text_key: str,
                          sender: str, insulting: bool = False) -> int:
        """Distinct senders of this text or a near-duplicate of it in the raid window, this
        one included; 0 for a common greeting or a text usual in the campaign's normal
        traffic (never a raid signal on its own), unless it insults ("salut connasse")."""
        if not insulting and neardup.is_common_greeting(text):
            return 0
        keys = neardup.text_keys(text)
        if not keys:
            return 0
        enough = SAME_TEXT_ENOUGH * campaign.rules.raid_same_text_senders
        found = {sender}
        for key in keys:  # what the batch knows first: a raid's keys are seen again and again
            found |= self._batch_bands.get((campaign.id, key), set())
            found |= self._band_senders.get((campaign.id, key), set())
        since = self.now - campaign.rules.raid_window
        for key in keys:
            if len(found) >= enough:  # counted up to `enough`, as the raid's new senders are
                break
            if (campaign.id, key) not in self._band_senders:
                self._band_senders[(campaign.id, key)] = texts.senders_of_band(
                    self.tx, campaign.id, key, since, enough)
                found |= self._band_senders[(campaign.id, key)]
        if len(found) >= campaign.rules.raid_same_text_senders and not insulting \
                and self.usual(campaign, text_key):  # read only when it would matter
            return 0
        return min(len(found), enough)

    def usual(self, campaign: Campaign, text_key: str) -> bool:
        """Sent by `usual_text_senders` first-time senders on `usual_text_days` days of
        calm normal traffic: what real people type, not a slogan primed in one evening."""
        if not text_key:
            return False
        key = (campaign.id, text_key)
        if key not in self._usual:
            rules = campaign.rules
            senders_count, days = texts.usual_text_spread(
                self.tx, campaign.id, text_key, self.now - timedelta(days=rules.baseline_days))
            self._usual[key] = (senders_count >= rules.usual_text_senders
                                and days >= rules.usual_text_days)
        return self._usual[key]

    def prefix_senders(self, campaign: Campaign, prefix_group: str) -> int:
        """First-time senders of this number prefix in the raid window (counted up to
        `prefix_cluster_senders`): read once per prefix and batch, then kept current."""
        key = (campaign.id, prefix_group)
        if key not in self._prefix_senders:
            self._prefix_senders[key] = senders.prefix_senders(
                self.tx, campaign.id, prefix_group, self.now - campaign.rules.raid_window,
                campaign.rules.prefix_cluster_senders)
        return self._prefix_senders[key]

    def judged(self, campaign: Campaign, sender: str, text: str, text_key: str,
               verdict: Verdict, first_contact: bool, would_stop: tuple[str, ...],
               gated: bool) -> None:
        """What a judged message adds: its band keys (seen by the rest of the batch at
        once), and, when it is normal traffic — the rules let it through and the
        destination gate did not stop it — the rollups the baselines read. New senders
        and usual texts are counted only while the campaign is calm (well below the raid
        threshold): a raid or a surge never teaches the campaign its normal."""
        enough = SAME_TEXT_ENOUGH * campaign.rules.raid_same_text_senders
        for key in neardup.text_keys(text):
            batch = self._batch_bands.setdefault((campaign.id, key), set())
            if len(batch) < enough:  # past it, no count could change: a raid's slogan
                batch.add(sender)    # costs a few rows per batch, not one per raider
                self.bands.append({"campaign": campaign.id, "band": key, "sender": sender,
                                   "at": self.now})
        minute = minute_of(self.now)
        for rule in would_stop:
            self._roll(campaign.id, WOULD_STOP + rule, minute)
        if verdict.verdict != REPLY or gated:
            return
        self._roll(campaign.id, INBOUND, minute)
        if first_contact and self.calm(campaign):
            self._roll(campaign.id, NEW_SENDERS, minute)
            if text_key:
                usual = (campaign.id, text_key)
                self.usual_counts[usual] = self.usual_counts.get(usual, 0) + 1

    def calm(self, campaign: Campaign) -> bool:
        """First-time senders in the raid window under half the raid threshold."""
        recent, baseline = self.new_sender_rates(campaign)
        return 2 * recent < abuse.raid_threshold(campaign.rules, baseline).value

    def _roll(self, campaign_id: int, series: str, minute: int) -> None:
        key = (campaign_id, series, minute)
        self.rollups[key] = self.rollups.get(key, 0) + 1

    def write(self) -> None:
        rollups.add_rollups(self.tx, self.rollups)
        texts.add_bands(self.tx, self.bands)
        texts.count_usual_texts(self.tx, self.usual_counts, self.now)
