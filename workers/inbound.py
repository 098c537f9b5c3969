"""Use case: judge a batch of inbound SMS, in one transaction.

Read through the store, decide with the rules, write through the store. The batch is the
unit of work that makes the pipeline fast: what every message of a batch would look up
(the campaign, the raid window's counts) is read once and kept current as the batch adds
senders, and what it writes (verdicts, reply windows, replies, counters) goes out in a few
round trips at the end. Nothing a later message's judging reads is deferred, except the
reply windows, which the batch keeps.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from shared.metrics import INBOUND
from shared.rules import abuse
from shared.rules.abuse import BLOCK, REPLY, SUPPRESS, CampaignStats, SenderStats
from shared.rules.campaign import Campaign
from shared.rules.messages import InboundSms
from shared.rules.phones import destination_verdict, pseudonym
from shared.rules.replies import ReplyDecision, decide_reply
from shared.store import campaigns, counters, evidence, inbound, replies, senders
from shared.store.db import Transaction
from shared.vault import seal
from workers.signals import BatchSignals

# Prefix clustering compares senders' numbers without their last digits (keyed, like the
# pseudonyms, so the prefix itself is not stored).
PREFIX_HIDDEN_DIGITS = 4


@dataclass(frozen=True)
class InboundOutcome:
    """What happened to one inbound SMS; `due_at` is set when a reply was scheduled."""

    verdict: str
    campaign: str | None
    due_at: datetime | None = None
    campaign_id: int | None = None


@dataclass(frozen=True)
class Keys:
    """The keys the use case needs: pseudonyms, and evidence encryption (empty: none)."""

    secret_key: str
    evidence_key: str = ""


def judge_batch(tx: Transaction, messages: list[InboundSms], keys: Keys, now: datetime,
                lexicon: tuple[str, ...] = ()) -> list[InboundOutcome]:
    """Deduplicate, reassemble, record, score and decide inbound SMS in one transaction;
    the outcomes are in the order of `messages`.

    Messages are handled in the order of their campaign and sender (a sender's own
    messages keep their order), so that concurrent batches take sender locks in one order
    and cannot deadlock each other. With an evidence key, the number of a sender flagged
    abusive is kept, encrypted, for `relous evidence export`.
    """
    batch = _Batch(tx, now, keys, lexicon)
    who = [pseudonym(sms.msisdn, keys.secret_key) for sms in messages]
    order = sorted(range(len(messages)), key=lambda i: (messages[i].to, who[i]))
    outcomes: dict[int, InboundOutcome] = {}
    for index in order:
        sms = messages[index]
        outcome = batch.judge(sms, who[index])
        if outcome.verdict != "partial":  # a concatenated SMS counts once, when complete
            batch.count(INBOUND, outcome.campaign or sms.to, outcome.verdict)
        outcomes[index] = outcome
    batch.write()
    return [outcomes[index] for index in range(len(messages))]


class _Batch:
    """One transaction's worth of inbound messages (see the module's docstring)."""

    def __init__(self, tx: Transaction, now: datetime, keys: Keys,
                 lexicon: tuple[str, ...]) -> None:
        self.tx, self.now, self.keys, self.lexicon = tx, now, keys, lexicon
        self._campaigns: dict[str, Campaign | None] = {}
        self.signals = BatchSignals(tx, now)
        self.counts: dict[tuple[str, str, str], int] = {}
        self.verdicts: list[dict[str, Any]] = []
        self.windows: dict[tuple[int, str], datetime] = {}
        self.blocks: dict[tuple[int, str], datetime] = {}
        self.replies: list[dict[str, Any]] = []

    def judge(self, sms: InboundSms, sender: str) -> InboundOutcome:
        tx, now = self.tx, self.now
        campaign = self.campaign(sms.to)
        if campaign is None:
            inbound_id = inbound.insert_inbound(
                tx, sms.message_id, None, sms, sender, sms.text, text_key(sms.text),
                now, "unroutable", "no campaign answers on this number")
            return InboundOutcome("unroutable" if inbound_id else "duplicate", None)
        prefix_group = pseudonym(sms.msisdn[:-PREFIX_HIDDEN_DIGITS], self.keys.secret_key)
        if sms.concat_ref is None:
            inbound_id = inbound.insert_inbound(
                tx, sms.message_id, campaign.id, sms, sender, sms.text,
                text_key(sms.text), now, "pending", "")
            if inbound_id is None:
                return InboundOutcome("duplicate", campaign.number)
            state = self.lock_sender(campaign.id, sender, prefix_group)
            text = sms.text
        else:
            if not inbound.insert_part(tx, campaign.id, sender, sms, now):
                return InboundOutcome("duplicate", campaign.number)
            # The sender's row lock serialises its parts: the last part to commit sees them
            # all. The whole SMS counts as one message (a first contact stays one).
            self.lock_sender(campaign.id, sender, prefix_group, new_message=False)
            assembled = self.assemble(campaign.id, sender, sms)
            if assembled is None:
                return InboundOutcome("partial", campaign.number)
            inbound_id, text = assembled
            state = self.lock_sender(campaign.id, sender, prefix_group)
        return self.decide(campaign, sms, sender, prefix_group, state, inbound_id, text)

    def decide(self, campaign: Campaign, sms: InboundSms, sender: str, prefix_group: str,
               state: dict[str, Any], inbound_id: int, text: str) -> InboundOutcome:
        """Score a recorded message, then block, keep evidence or schedule its reply."""
        tx, now, rules = self.tx, self.now, campaign.rules
        key = text_key(text)
        window_ends_at = self.windows.get((campaign.id, sender), state["reply_window_ends_at"])
        listed = state["listed"]
        blocked_until = self.blocks.get((campaign.id, sender), state["blocked_until"])
        blocked = blocked_until is not None and blocked_until > now
        hits = abuse.lexicon_hits(text, self.lexicon)
        if listed or blocked:
            sender_stats = SenderStats(0, 0, 0, 0, False, blocked=blocked, listed=listed)
            campaign_stats = CampaignStats(0, 0.0, 0, 0, campaign.storm_mode)
        else:
            sender_stats = self.sender_stats(campaign.id, sender, key, state)
            campaign_stats = self.signals.stats(campaign, text, key, sender, prefix_group,
                                                bool(hits) and rules.mode("lexicon") != "off")
        verdict = abuse.score_message(rules, sender_stats, campaign_stats, hits)
        reasons, would_stop = list(verdict.reasons), verdict.would_stop
        if self.keys.evidence_key and verdict.score >= rules.suppress_score:
            evidence.keep_evidence(tx, campaign.id, sender,
                                   seal(sms.msisdn, self.keys.evidence_key),
                                   "; ".join(verdict.reasons), now)
        if (verdict.verdict == BLOCK or verdict.caught_raiding) and not blocked \
                and listed != "block":
            self.blocks[(campaign.id, sender)] = abuse.block_until(rules, now)
        decision = None
        gate_mode = rules.mode("destination_gate")
        gate = destination_verdict(sms.msisdn, campaign.number, rules.reply_countries) \
            if verdict.verdict == REPLY and gate_mode != "off" else None
        if gate is not None and gate_mode == "enforce":  # money by construction
            decision = ReplyDecision(SUPPRESS, (gate,))
            reasons.append(gate)
        elif verdict.verdict == REPLY:
            if gate is not None:
                reasons.append(f"would suppress: {gate}")
                would_stop = (*would_stop, "destination_gate")
            decision = decide_reply(campaign, window_ends_at, now)
            reasons.extend(decision.reasons)
        final = decision.verdict if decision else verdict.verdict
        self.signals.judged(campaign, sender, text, key, verdict,
                            state["message_count"] == 1, would_stop,
                            gate is not None and gate_mode == "enforce")
        self.verdicts.append({"verdict": final, "reasons": "; ".join(reasons),
                              "score": verdict.score, "id": inbound_id,
                              "would_stop": ",".join(would_stop)})
        if decision is None or decision.verdict != "reply":
            return InboundOutcome(final, campaign.number)
        return self.schedule_reply(campaign, sender, sms.msisdn, inbound_id, decision)

    def campaign(self, number: str) -> Campaign | None:
        """The campaign answering on `number`, its row locked until commit: batches of one
        campaign are judged one after the other, each seeing all the senders and texts
        before it, as the raid signals need (concurrent batches would each miss the
        others' uncommitted messages)."""
        if number not in self._campaigns:
            self._campaigns[number] = campaigns.lock_campaign(self.tx, number)
        return self._campaigns[number]

    def lock_sender(self, campaign_id: int, sender: str, prefix_group: str,
                    new_message: bool = True) -> dict[str, Any]:
        state = senders.lock_sender(self.tx, campaign_id, sender, prefix_group, self.now,
                                    new_message=new_message)
        if state["message_count"] == 1:  # a sender new to the campaign: counts go up
            self.signals.new_sender(campaign_id, prefix_group)
        return state

    def sender_stats(self, campaign_id: int, sender: str, text_key: str,
                     state: dict[str, Any]) -> SenderStats:
        """The sender's counts, the message being judged included."""
        if state["message_count"] == 1:  # its first message: nothing else to count
            return SenderStats(1, 1, 1, 1 if text_key else 0, first_contact=True)
        counts = senders.sender_counts(self.tx, campaign_id, sender, text_key, self.now)
        return SenderStats(counts["per_minute"], counts["per_hour"], counts["per_day"],
                           counts["same"], first_contact=False)

    def assemble(self, campaign_id: int, sender: str, sms: InboundSms) -> tuple[int, str] | None:
        """When every part of a concatenated SMS is here, record it once; else None."""
        rows = inbound.unassembled_parts(self.tx, campaign_id, sender, sms, self.now)
        first_of_each: dict[int, dict[str, Any]] = {}
        for row in rows:
            first_of_each.setdefault(row["part"], row)
        if len(first_of_each) < (sms.concat_total or 0):
            return None
        parts = [first_of_each[number] for number in sorted(first_of_each)]
        text = "".join(part["text"] for part in parts)
        inbound_id = inbound.insert_inbound(
            self.tx, "concat:" + parts[0]["provider_message_id"], campaign_id, sms, sender,
            text, text_key(text), self.now, "pending", "", parts=len(parts))
        assert inbound_id is not None  # parts are unique, so their whole is new
        inbound.link_parts(self.tx, inbound_id, [row["provider_message_id"] for row in rows])
        return inbound_id, text

    def schedule_reply(self, campaign: Campaign, sender: str, msisdn: str, inbound_id: int,
                       decision: ReplyDecision) -> InboundOutcome:
        """Open the sender's reply window and queue the reply (both written by `write`)."""
        assert decision.due_at is not None and decision.window_ends_at is not None
        self.windows[(campaign.id, sender)] = decision.window_ends_at
        expires_at = decision.due_at + timedelta(seconds=campaign.rules.reply_freshness_seconds)
        self.replies.append({"campaign": campaign.id, "sender": sender, "inbound": inbound_id,
                             "to": msisdn, "text": campaign.reply_text, "due": decision.due_at,
                             "expires": expires_at, "window": decision.window_ends_at,
                             "now": self.now})
        return InboundOutcome("reply", campaign.number, decision.due_at, campaign.id)

    def count(self, metric: str, campaign: str, label: str) -> None:
        key = (metric, campaign, label)
        self.counts[key] = self.counts.get(key, 0) + 1

    def write(self) -> None:
        """Write what the batch deferred (executemany: one pipelined round trip each)."""
        inbound.write_verdicts(self.tx, self.verdicts)
        senders.open_reply_windows(self.tx, self.windows)
        senders.block_senders(self.tx, self.blocks)
        replies.queue_replies(self.tx, self.replies)
        counters.count_many(self.tx, self.counts)
        self.signals.write()


def text_key(text: str) -> str:
    """What the same-text signals compare and the database indexes: a fixed-length hash of
    the text's fingerprint (an SMS is unbounded; an index row is not). Empty for texts too
    short to compare."""
    fingerprint = abuse.fingerprint(text)
    return hashlib.sha256(fingerprint.encode()).hexdigest()[:32] if fingerprint else ""
