"""A stateful property test of the money ledger (shared/store/budgets.py, replies.py,
receipts.py), on real PostgreSQL with several connections.

A hypothesis `RuleBasedStateMachine` drives one campaign (a French mobile number, so its
days start at midnight in Europe/Paris) with small caps, and a clock it advances itself by
seconds to hours, sometimes exactly onto an hour or a local midnight. Its rules are what the
workers and beat do, in any order: inbound messages become pending replies, workers claim,
start sending and record what the fake provider answered (sent with a price below, at or
above the reservation, or missing; retry with and without a next try; failed; unknown,
whether or not the provider really sent), workers die, recovery and expiry run, receipts
arrive (for known parts, late, twice, by client-ref only, for ids nobody knows, with absurd
prices), an operator resumes a halted campaign. Some steps run two transactions at once on
two connections: the second starts while the first is still open, and the step waits until
it either finished or is blocked on the first's locks before the first commits.

A model keeps what each reply should be (status, charge, parts) and what the fake provider
reported. After every step, the database must agree with it and the ledger must hold:

- every reply is in exactly one documented status, with the columns that status implies;
- per campaign, `total_used` = SUM(replies.charged) and `spent` = that sum over the replies
  billed by the provider (sent, delivered, failed): no reservation returned twice, no
  charge lost; each reply's charge is what the model expects from what the fake provider
  reported (its price, the estimate when it reported none or may have sent, nothing when
  it did not send; receipts only ever raise it, and not to an implausible sum);
- `hour_used`/`day_used` = the charges reserved in the stored current hour/day;
- for the current hour, day and in total, used <= cap + the overruns (prices reported
  above their reservation: the only way past a cap, README "Budget guard"); a campaign is
  halted once a send or its receipts overran, then claims and starts nothing (a claim
  left is returned) until an operator resumes it.

CI runs 40 examples of 40 steps; RELOUS_LEDGER_EXAMPLES=500 (and RELOUS_LEDGER_STEPS) run
more.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

import workers.inbound
import workers.signals
from shared.rules.budget import day_start, estimate_cost, hour_start, next_day_start
from shared.rules.messages import DeliveryReceipt, InboundSms, SendResult, SentPart
from shared.rules.phones import default_time_zone
from shared.store import replies as store
from shared.store.budgets import set_budget
from shared.store.campaigns import add_campaign, set_campaign_paused
from shared.store.db import Database, Transaction
from shared.store.receipts import (
    ADOPTING_STATUSES,
    FAILED_RECEIPT_STATUSES,
    PLAUSIBLE_PRICE_MULTIPLE,
    apply_receipt,
)
from tests.helpers import SECRET_KEY, TABLES

CAMPAIGN = "33757000001"
ZONE = default_time_zone(CAMPAIGN)
PRICE_PER_SEGMENT = Decimal("0.05")
TEXTS = {1: "Laissez-la tranquille.", 2: "Laissez-la tranquille. " * 8}
STATUSES = {"pending", "claimed", "sending", "sent", "delivered", "failed", "expired",
            "unknown"}
BILLED = ("sent", "delivered", "failed")
# Starts a little before a local midnight: an ordinary one, the nights DST starts and ends
# in Paris, and a morning.
STARTS = [datetime(2026, 11, 25, 22, 50, tzinfo=UTC), datetime(2026, 3, 28, 22, 40, tzinfo=UTC),
          datetime(2026, 10, 24, 21, 55, tzinfo=UTC), datetime(2026, 6, 1, 7, 58, tzinfo=UTC)]
# Seconds, or a jump onto (or just before) the next local hour or midnight.
STEPS: list[int | str] = [1, 30, 61, 125, 301, 605, 1800, 3600, 3 * 3600, 6 * 3600 + 60,
                          "hour", "hour-1", "midnight", "midnight-1"]
# Per-part prices (the estimate is 0.05 per segment, raised by any higher price observed).
PART_PRICES = [Decimal("0.02"), Decimal("0.0333"), Decimal("0.05"), Decimal("0.06"),
               Decimal("0.12")]
RECEIPT_STATUSES = ["delivered", "delivered", "accepted", "buffered", "failed", "rejected",
                    "expired", "undelivered"]
ABSURD_PRICE = Decimal("9.5")
EXAMPLES = int(os.environ.get("RELOUS_LEDGER_EXAMPLES", "40"))
STEP_COUNT = int(os.environ.get("RELOUS_LEDGER_STEPS", "40"))


@dataclass
class Part:
    """A row of `reply_parts` as the model expects it."""

    reply_id: int
    price: Decimal | None
    status: str = "sent"


@dataclass
class Reply:
    """A reply as the model expects it."""

    id: int
    expires_at: datetime
    status: str = "pending"
    charged: Decimal = Decimal(0)
    reserved: Decimal | None = None
    reserved_hour: datetime | None = None
    reserved_day: datetime | None = None
    claimed_at: datetime | None = None
    segments: int | None = None


@dataclass
class Handle:
    """A worker's hold on a claimed reply (what `claim_batch` returned to it)."""

    claimed: store.ClaimedReply
    started: bool = False
    done: bool = False
    # What the fake provider did with it, decided before its answer is recorded.
    provider_parts: list[tuple[str, Decimal]] = field(default_factory=list)


class LedgerMachine(RuleBasedStateMachine):
    def __init__(self, database: Database, conn: psycopg.Connection) -> None:
        super().__init__()
        self.database, self.conn = database, conn
        self.campaign_id: int | None = None
        self.now = STARTS[0]
        self.replies: dict[int, Reply] = {}
        self.parts: dict[str, Part] = {}  # reply_parts, by provider message id
        self.receipt_keys: set[tuple[str, str, int]] = set()
        self.handles: list[Handle] = []
        # Parts the fake provider sent and billed: (message id, reply id, its price).
        self.billed_parts: list[tuple[str, int, Decimal]] = []
        self.applied: list[DeliveryReceipt] = []
        self.halted = False
        self.observed = Decimal(0)
        self.segments = 1
        self.caps: dict[str, Decimal | None] = {}
        self.run = uuid.uuid4().hex[:8]
        self.serial = itertools.count(1)

    # --- set-up -----------------------------------------------------------------------

    @initialize(start=st.sampled_from(STARTS), segments=st.sampled_from([1, 2]),
                hourly=st.sampled_from([None, "0.10", "0.15", "0.25"]),
                daily=st.sampled_from([None, "0.20", "0.35"]),
                total=st.sampled_from([None, "0.40", "0.60"]))
    def setup(self, start: datetime, segments: int, hourly: str | None, daily: str | None,
              total: str | None) -> None:
        self.conn.execute(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE")
        workers.signals._baselines.clear()  # campaign ids restart with the tables
        self.now, self.segments = start, segments
        self.caps = {period: None if cap is None else Decimal(cap)
                     for period, cap in (("hourly", hourly), ("daily", daily),
                                         ("total", total))}
        with self.database.transaction() as tx:
            add_campaign(tx, CAMPAIGN, TEXTS[segments], delay_seconds=0, window_seconds=60,
                         price_per_segment=PRICE_PER_SEGMENT, allow_multipart=segments > 1,
                         now=start)
            assert set_budget(tx, CAMPAIGN, start, **self.caps)
            self.campaign_id = tx.execute("SELECT id FROM campaigns").fetchone()["id"]

    # --- helpers ----------------------------------------------------------------------

    def estimate(self) -> Decimal:
        return self.segments * max(PRICE_PER_SEGMENT, self.observed)

    def observe(self, per_segment: Decimal) -> None:
        self.observed = max(self.observed, per_segment)

    def message_id(self) -> str:
        return f"{self.run}-{next(self.serial)}"

    def live(self, started: bool) -> list[Handle]:
        return [h for h in self.handles if not h.done and h.started == started]

    def provider_send(self, handle: Handle, prices: list[Decimal]) -> None:
        """The fake provider sends the reply's parts and bills them."""
        handle.provider_parts = [(self.message_id(), price)
                                 for price in prices[:self.segments]]
        self.billed_parts += [(message_id, handle.claimed.id, price)
                              for message_id, price in handle.provider_parts]

    def result_for(self, handle: Handle, outcome: str, missing: list[bool],
                   retry_in: int) -> tuple[SendResult, datetime | None]:
        """What the worker hears from the provider, and its next try (retry only)."""
        if outcome == "sent":
            parts = tuple(SentPart(message_id, None if gone else price) for
                          (message_id, price), gone in zip(handle.provider_parts,
                                                           missing, strict=False))
            return SendResult("sent", parts, segments=len(parts)), None
        if outcome == "retry":
            return SendResult("retry", error="throttled", reason="throttled"), \
                self.now + timedelta(seconds=retry_in)
        if outcome == "retry-exhausted":
            return SendResult("retry", error="throttled", reason="throttled"), None
        if outcome == "failed":
            return SendResult("failed", error="invalid number", reason="rejected"), None
        return SendResult("unknown", error="ReadTimeout", reason="timeout"), None

    # --- the model of each store function -----------------------------------------------

    def expect_start(self, handle: Handle) -> bool:
        reply = self.replies[handle.claimed.id]
        if reply.status != "claimed" or self.halted:
            handle.done = True  # the worker gives up: "not claimed"
            if reply.status == "claimed":  # halted since the claim: the claim is returned
                reply.status, reply.charged, reply.claimed_at = "pending", Decimal(0), None
            return False
        reply.status, reply.claimed_at, handle.started = "sending", self.now, True
        return True

    def expect_record(self, handle: Handle, result: SendResult,
                      retry_at: datetime | None) -> str:
        handle.done = True
        reply, reserved = self.replies[handle.claimed.id], handle.claimed.reserved
        if result.outcome == "retry" and retry_at is not None:
            status = "pending"
            if reply.status == "sending":
                reply.status, reply.charged, reply.claimed_at = status, Decimal(0), None
        elif result.outcome == "sent":
            status = "sent"
            charge = result.price if result.price_known else max(result.price, reserved)
            if reply.status in ("sending", "unknown"):
                reply.status, reply.charged, reply.segments = status, charge, result.segments
                if result.segments and result.price_known:
                    self.observe(result.price / result.segments)
                if charge > reserved:
                    self.halted = True
        else:
            status = "unknown" if result.outcome == "unknown" else "failed"
            if reply.status == "sending":
                reply.status = status
                if status == "failed":
                    reply.charged = Decimal(0)
        for part in result.parts:
            self.parts.setdefault(part.message_id, Part(reply.id, part.price))
        return status

    def expect_recover(self) -> tuple[int, int]:
        returned = lost = 0
        for reply in self.replies.values():
            if (reply.status == "claimed"
                    and reply.claimed_at < self.now - store.CLAIMED_STALE_AFTER):
                reply.status, reply.charged, reply.claimed_at = "pending", Decimal(0), None
                returned += 1
            elif (reply.status == "sending"
                  and reply.claimed_at < self.now - store.SENDING_STALE_AFTER):
                reply.status = "unknown"
                lost += 1
        return returned, lost

    def expect_claim(self, claimed: list[store.ClaimedReply]) -> None:
        if self.halted:
            assert claimed == [], "a halted campaign claims nothing"
        for reply in claimed:
            model = self.replies[reply.id]
            assert model.status == "pending", f"claimed reply {reply.id} was {model.status}"
            assert model.expires_at >= self.now, f"claimed reply {reply.id} past its expiry"
            assert reply.reserved == self.estimate(), "the reservation is the estimate"
            model.status, model.charged, model.reserved = "claimed", reply.reserved, reply.reserved
            model.claimed_at = self.now
            model.reserved_hour, model.reserved_day = hour_start(self.now, ZONE), day_start(
                self.now, ZONE)
            self.handles.append(Handle(reply))

    def expect_receipt(self, receipt: DeliveryReceipt) -> str:
        """receipts.apply_receipt, as documented: match by part, else adopt by client-ref
        (sending/unknown only); store once; fold the parts into the reply, whose charge
        only ever rises to what they report (an implausible sum is not believed), and
        whose sending halts when that is above the reservation."""
        part = self.parts.get(receipt.message_id)
        price = Decimal(receipt.price) if receipt.price else None
        reply_id = part.reply_id if part else None
        if part is None and receipt.client_ref and receipt.client_ref.isdigit():
            candidate = self.replies.get(int(receipt.client_ref))
            if candidate is not None and candidate.status in ADOPTING_STATUSES:
                reply_id = candidate.id
                self.parts[receipt.message_id] = Part(reply_id, price)
        key = (receipt.message_id, receipt.status, receipt.err_code)
        if key in self.receipt_keys:
            return "duplicate"
        self.receipt_keys.add(key)
        if reply_id is None:
            return "unmatched"
        part = self.parts[receipt.message_id]
        part.status = receipt.status
        if price is not None:
            part.price = price
        reply = self.replies[reply_id]
        if reply.status not in ("sent", "delivered", "unknown"):
            return reply.status
        parts = [p for p in self.parts.values() if p.reply_id == reply_id]
        statuses = {p.status for p in parts}
        status = ("failed" if statuses & FAILED_RECEIPT_STATUSES
                  else "delivered" if statuses == {"delivered"} else "sent")
        reported = sum((p.price for p in parts if p.price is not None), Decimal(0))
        reserved = reply.reserved or Decimal(0)
        if reserved and reported > PLAUSIBLE_PRICE_MULTIPLE * reserved:
            reported = Decimal(0)
        charged = max(reply.charged, reported)
        if charged != reply.charged and reply.segments:
            self.observe(charged / reply.segments)
        if charged > reserved:
            self.halted = True
        reply.status, reply.charged = status, charged
        return status

    # --- rules: inbound, clock ----------------------------------------------------------

    @precondition(lambda self: self.campaign_id is not None)
    @rule(count=st.integers(1, 3))
    def inbound(self, count: int) -> None:
        messages = []
        for _ in range(count):
            serial = next(self.serial)
            # Spread over number prefixes: no SIM-farm cluster, every sender a new one.
            number = f"336{(serial * 7919 + int(self.run[:4], 16)) % 10**8:08d}"
            messages.append(InboundSms(f"{self.run}-in-{serial}", number, CAMPAIGN, "Salut",
                                       "text", "SALUT", None, None, None, None))
        known = max(self.replies, default=0)
        with self.database.transaction() as tx:
            workers.inbound.judge_batch(tx, messages, workers.inbound.Keys(SECRET_KEY),
                                        self.now)
            rows = tx.execute("SELECT id, expires_at FROM replies WHERE id > %(id)s",
                              {"id": known}).fetchall()
        for row in rows:
            self.replies[row["id"]] = Reply(row["id"], row["expires_at"])

    @precondition(lambda self: self.campaign_id is not None)
    @rule(step=st.sampled_from(STEPS))
    def advance(self, step: int | str) -> None:
        if isinstance(step, int):
            self.now += timedelta(seconds=step)
            return
        boundary = (hour_start(self.now, ZONE) + timedelta(hours=1) if step.startswith("hour")
                    else next_day_start(self.now, ZONE))
        target = boundary - timedelta(seconds=1) if step.endswith("-1") else boundary
        self.now = max(self.now, target)

    # --- rules: what workers do ---------------------------------------------------------

    @precondition(lambda self: self.campaign_id is not None)
    @rule(limits=st.tuples(st.integers(1, 4), st.integers(1, 3)), concurrently=st.booleans())
    def claim(self, limits: tuple[int, int], concurrently: bool) -> None:
        """A worker claims a batch; or two at once, on two connections."""
        def claim(limit: int) -> Callable[[Transaction], list[store.ClaimedReply]]:
            return lambda tx: store.claim_batch(tx, self.campaign_id, self.now, limit)

        if concurrently:
            first, second = self.race(claim(limits[0]), claim(limits[1]))
            self.expect_claim(first)
            self.expect_claim(second)
            return
        with self.database.transaction() as tx:
            claimed = claim(limits[0])(tx)
        self.expect_claim(claimed)

    @precondition(lambda self: self.live(started=False))
    @rule(pick=st.integers(0, 50))
    def start_sending(self, pick: int) -> None:
        handles = self.live(started=False)
        handle = handles[pick % len(handles)]
        with self.database.transaction() as tx:
            started = store.start_sending(tx, handle.claimed, self.now)
        assert started == self.expect_start(handle)

    @precondition(lambda self: self.live(started=True))
    @rule(pick=st.integers(0, 50),
          outcome=st.sampled_from(["sent", "sent", "sent", "retry", "retry-exhausted", "failed",
                                   "unknown", "unknown-but-sent"]),
          prices=st.lists(st.sampled_from(PART_PRICES), min_size=2, max_size=2),
          missing=st.lists(st.booleans(), min_size=2, max_size=2),
          retry_in=st.sampled_from([2, 40, 300]))
    def record_send(self, pick: int, outcome: str, prices: list[Decimal], missing: list[bool],
                    retry_in: int) -> None:
        handles = self.live(started=True)
        handle = handles[pick % len(handles)]
        if outcome in ("sent", "unknown-but-sent"):
            self.provider_send(handle, prices)
        result, retry_at = self.result_for(handle, outcome.removesuffix("-but-sent"), missing,
                                           retry_in)
        with self.database.transaction() as tx:
            status = store.record_send(tx, handle.claimed, result, self.now, retry_at)
        assert status == self.expect_record(handle, result, retry_at)

    @precondition(lambda self: any(not h.done for h in self.handles))
    @rule(pick=st.integers(0, 50), provider_sent=st.booleans(),
          prices=st.lists(st.sampled_from(PART_PRICES), min_size=2, max_size=2))
    def worker_dies(self, pick: int, provider_sent: bool, prices: list[Decimal]) -> None:
        """A worker is lost with its claim, or mid-send (the provider may have sent)."""
        handles = [h for h in self.handles if not h.done]
        handle = handles[pick % len(handles)]
        if handle.started and provider_sent:
            self.provider_send(handle, prices)
        handle.done = True

    @precondition(lambda self: self.halted)
    @rule()
    def operator_resumes(self) -> None:
        with self.database.transaction() as tx:
            assert set_campaign_paused(tx, CAMPAIGN, False)
        self.halted = False

    # --- rules: beat --------------------------------------------------------------------

    @precondition(lambda self: self.campaign_id is not None)
    @rule(concurrently=st.booleans())
    def recover(self, concurrently: bool) -> None:
        """Beat repairs stale claims; or two beats at once, on two connections."""
        def recover(tx: Transaction) -> tuple[int, int]:
            return store.recover_stale_claims(tx, self.now)

        if concurrently:
            moved = self.race(recover, recover)
            assert moved == (self.expect_recover(), self.expect_recover())
            return
        with self.database.transaction() as tx:
            moved = recover(tx)
        assert moved == self.expect_recover()

    @precondition(lambda self: self.campaign_id is not None)
    @rule()
    def expire(self) -> None:
        with self.database.transaction() as tx:
            expired = store.expire_replies(tx, self.now)
        expected = 0
        for reply in self.replies.values():
            if reply.status == "pending" and reply.expires_at < self.now:
                reply.status, reply.charged, expected = "expired", Decimal(0), expected + 1
        assert expired == expected

    # --- rules: receipts ----------------------------------------------------------------

    def receipt_for(self, billed: tuple[str, int, Decimal], status: str,
                    price_kind: str) -> DeliveryReceipt:
        message_id, reply_id, price = billed
        reported = {"price": str(price), "final": str(price + Decimal("0.0011")),
                    "missing": None, "absurd": str(ABSURD_PRICE)}[price_kind]
        err = 0 if status in ("delivered", "accepted", "buffered") else 5
        return DeliveryReceipt(message_id, status, err, reported, str(reply_id), "33600000000",
                               None)

    def receive(self, receipt: DeliveryReceipt) -> None:
        with self.database.transaction() as tx:
            got = apply_receipt(tx, receipt, self.now)
        self.applied.append(receipt)
        assert got == self.expect_receipt(receipt), receipt

    @precondition(lambda self: self.billed_parts)
    @rule(pick=st.integers(0, 50), status=st.sampled_from(RECEIPT_STATUSES),
          price_kind=st.sampled_from(["price", "price", "final", "missing", "absurd"]))
    def receipt(self, pick: int, status: str, price_kind: str) -> None:
        """A receipt for a part the provider sent: recorded by the worker or not (then
        adopted by client-ref), on time or late."""
        self.receive(self.receipt_for(self.billed_parts[pick % len(self.billed_parts)],
                                      status, price_kind))

    @precondition(lambda self: self.applied)
    @rule(pick=st.integers(0, 50))
    def receipt_again(self, pick: int) -> None:
        self.receive(self.applied[pick % len(self.applied)])

    @precondition(lambda self: self.campaign_id is not None)
    @rule(client_ref=st.sampled_from(["none", "999999", "x12", "a reply"]),
          pick=st.integers(0, 50))
    def receipt_for_unknown_id(self, client_ref: str, pick: int) -> None:
        """A message id nobody sent; its client-ref may name a reply of any status."""
        ids = sorted(self.replies)
        ref = {"none": None, "999999": "999999", "x12": "x12",
               "a reply": str(ids[pick % len(ids)]) if ids else None}[client_ref]
        self.receive(DeliveryReceipt(self.message_id(), "delivered", 0, "0.0333", ref,
                                     "33600000000", None))

    # --- rules: two transactions at once --------------------------------------------------

    def race(self, first: Callable[[Transaction], Any],
             second: Callable[[Transaction], Any]) -> tuple[Any, Any]:
        """Run `first` in a transaction, then `second` on another connection while `first`
        is still open; commit `first` once `second` finished or waits on its locks."""
        box: dict[str, Any] = {}

        def other() -> None:
            try:
                with self.database.transaction() as tx:
                    box["pid"] = tx.execute("SELECT pg_backend_pid() AS pid").fetchone()["pid"]
                    box["result"] = second(tx)
            except BaseException as error:  # re-raised in the test's thread
                box["error"] = error

        with self.database.transaction() as tx:
            result = first(tx)
            thread = threading.Thread(target=other)
            thread.start()
            deadline = time.monotonic() + 5
            while thread.is_alive() and time.monotonic() < deadline:
                if "pid" in box and self.conn.execute(
                        "SELECT wait_event_type = 'Lock' AS waiting FROM pg_stat_activity"
                        " WHERE pid = %(pid)s", {"pid": box["pid"]}).fetchone()["waiting"]:
                    break
                time.sleep(0.001)
        thread.join(10)
        assert not thread.is_alive(), "the second transaction never finished"
        if "error" in box:
            raise box["error"]
        return result, box["result"]

    @precondition(lambda self: self.live(started=False))
    @rule(pick=st.integers(0, 50), recovery_first=st.booleans())
    def race_recovery_and_start(self, pick: int, recovery_first: bool) -> None:
        handles = self.live(started=False)
        handle = handles[pick % len(handles)]

        def recover(tx: Transaction) -> tuple[int, int]:
            return store.recover_stale_claims(tx, self.now)

        def start(tx: Transaction) -> bool:
            return store.start_sending(tx, handle.claimed, self.now)

        if recovery_first:
            moved, started = self.race(recover, start)
            assert moved == self.expect_recover()
            assert started == self.expect_start(handle)
        else:
            started, moved = self.race(start, recover)
            assert started == self.expect_start(handle)
            assert moved == self.expect_recover()

    @precondition(lambda self: self.live(started=True))
    @rule(pick=st.integers(0, 50), recovery_first=st.booleans(),
          outcome=st.sampled_from(["sent", "unknown", "failed", "retry"]),
          prices=st.lists(st.sampled_from(PART_PRICES), min_size=2, max_size=2),
          missing=st.lists(st.booleans(), min_size=2, max_size=2))
    def race_recovery_and_answer(self, pick: int, recovery_first: bool, outcome: str,
                                 prices: list[Decimal], missing: list[bool]) -> None:
        """The provider's answer lands while recovery gives the reply up (`unknown`)."""
        handles = self.live(started=True)
        handle = handles[pick % len(handles)]
        if outcome == "sent":
            self.provider_send(handle, prices)
        result, retry_at = self.result_for(handle, outcome, missing, 40)

        def recover(tx: Transaction) -> tuple[int, int]:
            return store.recover_stale_claims(tx, self.now)

        def answer(tx: Transaction) -> str:
            return store.record_send(tx, handle.claimed, result, self.now, retry_at)

        if recovery_first:
            moved, status = self.race(recover, answer)
            assert moved == self.expect_recover()
            assert status == self.expect_record(handle, result, retry_at)
        else:
            status, moved = self.race(answer, recover)
            assert status == self.expect_record(handle, result, retry_at)
            assert moved == self.expect_recover()

    @precondition(lambda self: self.live(started=True))
    @rule(pick=st.integers(0, 50), receipt_first=st.booleans(),
          status=st.sampled_from(RECEIPT_STATUSES),
          price_kind=st.sampled_from(["price", "final", "missing"]),
          prices=st.lists(st.sampled_from(PART_PRICES), min_size=2, max_size=2))
    def race_receipt_and_answer(self, pick: int, receipt_first: bool, status: str,
                                price_kind: str, prices: list[Decimal]) -> None:
        """The receipt of a part arrives while the worker records the send."""
        handles = self.live(started=True)
        handle = handles[pick % len(handles)]
        self.provider_send(handle, prices)
        result, _ = self.result_for(handle, "sent", [False, False], 0)
        message_id, price = handle.provider_parts[0]
        receipt = self.receipt_for((message_id, handle.claimed.id, price), status, price_kind)
        self.applied.append(receipt)

        def answer(tx: Transaction) -> str:
            return store.record_send(tx, handle.claimed, result, self.now, None)

        def fold(tx: Transaction) -> str:
            return apply_receipt(tx, receipt, self.now)

        if receipt_first:
            got, status_after = self.race(fold, answer)
            assert got == self.expect_receipt(receipt)
            assert status_after == self.expect_record(handle, result, None)
        else:
            status_after, got = self.race(answer, fold)
            assert status_after == self.expect_record(handle, result, None)
            assert got == self.expect_receipt(receipt)

    @precondition(lambda self: self.billed_parts)
    @rule(pick=st.integers(0, 50), other=st.integers(0, 50),
          statuses=st.tuples(st.sampled_from(RECEIPT_STATUSES),
                             st.sampled_from(RECEIPT_STATUSES)),
          price_kinds=st.tuples(st.sampled_from(["price", "final"]),
                                st.sampled_from(["price", "final"])))
    def race_two_receipts(self, pick: int, other: int, statuses: tuple[str, str],
                          price_kinds: tuple[str, str]) -> None:
        """Two receipts of one reply at once: its two parts, or one part twice."""
        billed = self.billed_parts[pick % len(self.billed_parts)]
        siblings = [part for part in self.billed_parts if part[1] == billed[1]]
        sibling = siblings[other % len(siblings)]
        receipts = (self.receipt_for(billed, statuses[0], price_kinds[0]),
                    self.receipt_for(sibling, statuses[1], price_kinds[1]))
        self.applied += receipts
        got = self.race(lambda tx: apply_receipt(tx, receipts[0], self.now),
                        lambda tx: apply_receipt(tx, receipts[1], self.now))
        assert got == (self.expect_receipt(receipts[0]), self.expect_receipt(receipts[1])), \
            receipts

    # --- invariants ---------------------------------------------------------------------

    @invariant()
    def ledger_holds(self) -> None:
        if self.campaign_id is None:
            return
        rows = {row["id"]: row for row in self.conn.execute(
            "SELECT id, status, charged, reserved, reserved_hour, reserved_day, to_number,"
            " claimed_at FROM replies").fetchall()}
        budget = self.conn.execute("SELECT * FROM budgets").fetchone()
        halted = self.conn.execute(
            "SELECT sending_halted_reason FROM campaigns").fetchone()["sending_halted_reason"]
        assert rows.keys() == self.replies.keys()
        for reply_id, row in rows.items():
            model, status, charged = self.replies[reply_id], row["status"], row["charged"]
            assert status in STATUSES, row
            assert charged >= 0, row
            assert status == model.status, (f"reply {reply_id}: {status} in the database,"
                                            f" {model.status} expected")
            assert charged == model.charged, (f"reply {reply_id} ({status}): charged {charged},"
                                              f" {model.charged} expected")
            if status in ("pending", "expired"):
                assert charged == 0 and row["claimed_at"] is None, row
            if status in ("claimed", "sending"):
                assert charged == row["reserved"] and row["claimed_at"] is not None, row
            assert (row["to_number"] is None) == (status not in ("pending", "claimed",
                                                                   "sending")), row
        for found in self.conn.execute("SELECT provider_message_id, reply_id, price, status"
                                       " FROM reply_parts").fetchall():
            part = self.parts.get(found["provider_message_id"])
            assert part is not None, f"a part the model does not know: {found}"
            assert (found["reply_id"], found["price"], found["status"]) == (
                part.reply_id, part.price, part.status), (found, part)
        charges = [row["charged"] for row in rows.values()]
        assert budget["total_used"] == sum(charges, Decimal(0)), "total_used != SUM(charged)"
        billed = sum((row["charged"] for row in rows.values() if row["status"] in BILLED),
                     Decimal(0))
        assert budget["spent"] == billed, (
            f"spent {budget['spent']} != {billed} charged for billed replies")
        for period, used in (("hour", "hour_used"), ("day", "day_used")):
            in_period = sum((row["charged"] for row in rows.values()
                             if row[f"reserved_{period}"] == budget[f"{period}_start"]),
                            Decimal(0))
            assert budget[used] == in_period, f"{used} {budget[used]} != {in_period}"
        assert (halted is not None) == self.halted, halted

        def overrun(period: str | None, start: datetime | None) -> Decimal:
            return sum((max(Decimal(0), row["charged"] - row["reserved"])
                        for row in rows.values() if row["reserved"] is not None
                        and (period is None or row[f"reserved_{period}"] == start)),
                       Decimal(0))

        hour, day = hour_start(self.now, ZONE), day_start(self.now, ZONE)
        periods = (("hourly", budget["hour_used"] if budget["hour_start"] == hour else 0,
                    overrun("hour", hour)),
                   ("daily", budget["day_used"] if budget["day_start"] == day else 0,
                    overrun("day", day)),
                   ("total", budget["total_used"], overrun(None, None)))
        for period, used, allowance in periods:
            cap = self.caps[period]
            if cap is not None:
                assert used <= cap + allowance, (
                    f"{period}: {used} used, cap {cap}, overruns {allowance}")


@pytest.fixture
def database(db) -> Iterator[Database]:
    database = Database(os.environ["DATABASE_URL"], pool_size=4)
    yield database
    database.close()


def test_the_ledger_holds_under_any_interleaving(database: Database, db) -> None:
    run_state_machine_as_test(
        lambda: LedgerMachine(database, db),
        settings=settings(max_examples=EXAMPLES, stateful_step_count=STEP_COUNT, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow,
                                                 HealthCheck.filter_too_much]))


def test_concurrent_receipts_of_two_parts_keep_both(database: Database, db) -> None:
    """A sequence the machine found (two receipts of one two-part reply folded at once: the
    second read the first's part before it committed and overwrote its fold, leaving the
    reply `sent` with a stale charge), replayed step by step so that it runs every time."""
    state = LedgerMachine(database, db)
    state.setup(start=STARTS[0], segments=2, hourly=None, daily=None, total=None)
    state.inbound(count=1)
    state.claim(limits=(1, 1), concurrently=False)
    state.start_sending(pick=0)
    state.record_send(pick=0, outcome="sent", prices=[Decimal("0.06"), Decimal("0.06")],
                      missing=[False, True], retry_in=2)
    state.ledger_holds()
    state.race_two_receipts(pick=1, other=0, statuses=("delivered", "delivered"),
                            price_kinds=("final", "final"))
    state.ledger_holds()
    assert state.replies[1].status == "delivered"


def test_the_model_estimates_as_the_rules_do() -> None:
    for segments, text in TEXTS.items():
        assert estimate_cost(text, PRICE_PER_SEGMENT) == segments * PRICE_PER_SEGMENT
