"""The sending side of `bench/cost.py` on a scenario's clock: beat's flush, storm mode and
the spend-rate trip, and send rounds making the calls of `workers/sending.py` in the same
order (`send_due` itself reads the wall clock), with an in-process provider that bills a
price per segment."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from shared.rules.messages import SendResult, SentPart
from shared.rules.segments import encode
from shared.store import replies
from shared.store.db import Database, Transaction
from workers.housekeeping import due_campaigns, evaluate_storm_mode, trip_on_spend_rate
from workers.sending import RATE_BUCKET, SEND_BATCH

STORM_EVERY = timedelta(seconds=15)  # beat's schedule (workers/app.py)
FLUSH_EVERY = timedelta(seconds=5)
RATE = 30.0  # SMS_RATE_PER_SECOND's default


@dataclass
class BilledProvider:
    """An in-process `shared.vonage.sms.SmsProvider` that accepts every reply and reports
    `price` per segment, as Vonage's `message-price`."""

    price: Decimal
    name: str = "bench"
    billed: Decimal = Decimal(0)

    def send(self, to: str, sender_id: str, text: str, client_ref: str) -> SendResult:
        segments = encode(text).segments
        self.billed += self.price * segments
        parts = tuple(SentPart(f"bench-{client_ref}-{part}", self.price)
                      for part in range(segments))
        return SendResult("sent", parts=parts, segments=segments)


class Beat:
    """Beat and the send rounds on the scenario's clock (see the module's docstring)."""

    def __init__(self, database: Database, provider: BilledProvider, start: datetime) -> None:
        self.database, self.provider, self.start = database, provider, start
        self.last_tick = start - FLUSH_EVERY
        self.next_storm = start
        self.clock = start  # sends never go back in time, so neither do the budget's periods
        self.due: datetime | None = None

    def every_15s(self, tx: Transaction, now: datetime) -> None:
        """Beat's `evaluate_storm_mode` task: storm mode, then the spend-rate trip."""
        if now >= self.next_storm:
            evaluate_storm_mode(tx, now)
            trip_on_spend_rate(tx, now)
            self.next_storm = now + STORM_EVERY

    def refresh_due(self, tx: Transaction) -> None:
        row = tx.execute("SELECT due_at FROM replies WHERE status = 'pending'"
                         " ORDER BY due_at LIMIT 1").fetchone()
        self.due = row["due_at"] if row else None

    def beats_until(self, until: datetime | None) -> None:
        """Every flush that finds replies due, up to `until` (None: until none is left)."""
        while self.due is not None:
            ticks = math.ceil((max(self.due, self.last_tick + FLUSH_EVERY) - self.start)
                              / FLUSH_EVERY)
            tick = self.start + ticks * FLUSH_EVERY
            if until is not None and tick > until:
                return
            with self.database.transaction() as tx:
                self.every_15s(tx, tick)
                campaign_ids, _ = due_campaigns(tx, tick)
            for campaign_id in campaign_ids:
                self.send_round(campaign_id, tick)
            self.last_tick = tick
            with self.database.transaction() as tx:
                self.refresh_due(tx)

    def send_round(self, campaign_id: int, tick: datetime) -> None:
        """What `workers.sending.send_due` does, at the scenario's time."""
        self.clock = max(self.clock, tick)
        while True:
            with self.database.transaction() as tx:
                batch = replies.claim_batch(tx, campaign_id, self.clock, SEND_BATCH)
            if not batch:
                return
            for reply in batch:
                while True:
                    with self.database.transaction() as tx:
                        wait = replies.take_send_token(tx, RATE_BUCKET, RATE, self.clock)
                    if not wait:
                        break
                    # Whole microseconds, rounded up: the database keeps no finer time.
                    self.clock += timedelta(microseconds=math.ceil(wait * 1e6))
                with self.database.transaction() as tx:
                    if not replies.start_sending(tx, reply, self.clock):
                        continue
                result = self.provider.send(reply.to_number, reply.campaign_number,
                                            reply.text, str(reply.id))
                with self.database.transaction() as tx:
                    replies.record_send(tx, reply, result, self.clock, None)
