"""What the crash tests count once the pipeline has recovered, from the database and from
the fake Vonage's record of the SMS it sent, and the invariants those counts must meet."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal

import psycopg
import pytest
from psycopg.rows import tuple_row

from tests.fake_vonage import FakeVonage

FINAL = {"sent", "delivered", "failed", "expired", "unknown"}


@dataclass
class Audit:
    acked: int  # distinct webhooks (message ids) answered 2xx
    recorded: int  # of those, recorded (a message, or a part of a concatenated one)
    missing: int  # acked but not recorded, or parts all here but the message not whole
    duplicates: int  # a message recorded twice, or one inbound message with two replies
    replies_twice: int  # senders given two replies in one reply window
    sms: int
    sms_twice: int  # numbers that received more than one SMS
    resent: int  # replies handed to the provider more than once (same client-ref)
    sent_unrecorded: int  # SMS at the provider whose reply says neither sent nor unknown
    recorded_unsent: int  # replies recorded as sent that the provider never got
    in_between: int  # replies still claimed or sending after recovery
    pending_due: int  # replies due but not sent after recovery
    statuses: Counter[str]
    spend: Decimal  # what the provider charged, by its own record
    cap: Decimal | None
    reserved: Decimal  # the budget's total used: settled spend plus kept reservations
    numbers_in_logs: int = 0
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def overspend(self) -> Decimal:
        return max(Decimal(0), self.spend - self.cap) if self.cap is not None else Decimal(0)

    def line(self, scenario: str, seed: int | None = None) -> str:
        """The counts, one line, with no number in it."""
        head = f"faults[{scenario}]" + (f" seed={seed}" if seed is not None else "")
        extra = " ".join(f"{key}={value}" for key, value in self.extra.items())
        statuses = ",".join(f"{key}:{value}" for key, value in sorted(self.statuses.items()))
        return (f"{head} {extra} acked={self.acked} recorded={self.recorded} "
                f"missing={self.missing} duplicates={self.duplicates} sms={self.sms} "
                f"sms_twice={self.sms_twice} resent={self.resent} "
                f"in_between={self.in_between} overspend={self.overspend} "
                f"spend={self.spend} cap={self.cap} replies={statuses} "
                f"numbers_in_logs={self.numbers_in_logs}").replace("  ", " ")

    def report(self, capsys: pytest.CaptureFixture[str], scenario: str,
               seed: int | None = None) -> None:
        """Print the counts past pytest's capture, so that CI output shows them."""
        with capsys.disabled():
            print(f"\n{self.line(scenario, seed)}", flush=True)

    def check(self) -> None:
        """The invariants of the crash tests (issue 6)."""
        assert self.missing == 0, f"{self.missing} acknowledged webhook(s) lost"
        assert self.duplicates == 0, "a message recorded or answered twice"
        assert self.replies_twice == 0, "a sender given two replies in one window"
        assert self.sms_twice == 0, "a number received two SMS in one reply window"
        assert self.resent == 0, "a reply handed to the provider twice"
        assert self.sent_unrecorded == 0, "an SMS went out for a reply that may be resent"
        assert self.recorded_unsent == 0, "a reply recorded as sent that never went out"
        assert self.in_between == 0, "a reply left claimed or sending after recovery"
        assert self.pending_due == 0, "a due reply left unsent after recovery"
        assert self.numbers_in_logs == 0, "a raw sender number in the processes' logs"
        if self.cap is not None:
            assert self.spend <= self.cap, f"spent {self.spend} over the cap {self.cap}"
            assert self.reserved <= self.cap, f"reserved {self.reserved} over {self.cap}"


def expected_records(webhooks: Iterable[dict[str, str]]) -> tuple[set[str], set[str]]:
    """(dedup keys of whole messages, ids of parts) that acked webhooks must produce.

    A concatenated SMS is whole once every part was acked: its key is `concat:` and the
    id of its first part."""
    keys: set[str] = set()
    parts: set[str] = set()
    groups: dict[tuple[str, str, str], dict[str, str]] = defaultdict(dict)
    for params in webhooks:
        if params.get("concat") == "true":
            parts.add(params["messageId"])
            group = (params["msisdn"], params["concat-ref"], params["concat-total"])
            groups[group][params["concat-part"]] = params["messageId"]
        else:
            keys.add(params["messageId"])
    for (_, _, total), got in groups.items():
        if len(got) == int(total):
            keys.add("concat:" + got["1"])
    return keys, parts


def audit(connection: psycopg.Connection, fake: FakeVonage, acked: Iterable[dict[str, str]],
          campaign: str, logs: str = "", numbers: Iterable[str] = ()) -> Audit:
    """Count, after recovery, what the invariants are about (see `Audit`)."""
    acked = list(acked)
    keys, parts = expected_records(acked)
    conn = connection.cursor(row_factory=tuple_row)  # whatever rows the caller's uses
    recorded_keys = Counter(row[0] for row in conn.execute(
        "SELECT dedup_key FROM inbound_messages"))
    recorded_parts = {row[0] for row in conn.execute(
        "SELECT provider_message_id FROM inbound_parts")}
    single = {params["messageId"] for params in acked if params.get("concat") != "true"}
    recorded = len(single & set(recorded_keys)) + len(parts & recorded_parts)
    duplicates = sum(n - 1 for n in recorded_keys.values()) + conn.execute(
        "SELECT count(*) FROM (SELECT inbound_message_id FROM replies"
        " GROUP BY inbound_message_id HAVING count(*) > 1) AS twice").fetchone()[0]
    replies_twice = conn.execute(
        "SELECT count(*) FROM (SELECT sender FROM replies GROUP BY campaign_id, sender"
        " HAVING count(*) > 1) AS twice").fetchone()[0]
    replies = {row[0]: row[1] for row in conn.execute("SELECT id, status FROM replies")}
    sms = [sms for sms in list(fake.sent) if sms.sender == campaign]
    per_reply = Counter(sms.client_ref for sms in sms)
    sent_unrecorded = sum(
        replies.get(int(ref)) not in ("sent", "delivered", "unknown")
        for ref in per_reply if ref and ref.isdigit())
    recorded_unsent = sum(str(reply_id) not in per_reply for reply_id, status
                          in replies.items() if status in ("sent", "delivered"))
    statuses = Counter(replies.values())
    pending_due = conn.execute("SELECT count(*) FROM replies WHERE status = 'pending'"
                               " AND due_at <= now()").fetchone()[0]
    budget = conn.execute(
        "SELECT b.total_cap, b.total_used FROM budgets b JOIN campaigns c"
        " ON c.id = b.campaign_id WHERE c.number = %s", (campaign,)).fetchone()
    cap, reserved = (budget if budget else (None, Decimal(0)))
    numbers = list(numbers)
    return Audit(
        acked=len(single) + len(parts), recorded=recorded,
        missing=len(keys - set(recorded_keys)) + len(parts - recorded_parts),
        duplicates=duplicates, replies_twice=replies_twice, sms=len(sms),
        sms_twice=sum(n > 1 for n in Counter(sms.to for sms in sms).values()),
        resent=sum(n > 1 for n in per_reply.values()), sent_unrecorded=sent_unrecorded,
        recorded_unsent=recorded_unsent,
        in_between=statuses["claimed"] + statuses["sending"], pending_due=pending_due,
        statuses=statuses, spend=sum((sms.price for sms in sms), Decimal(0)),
        cap=Decimal(cap) if cap is not None else None, reserved=Decimal(reserved),
        numbers_in_logs=sum(number in logs for number in numbers),
    )
