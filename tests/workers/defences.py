"""Helpers of the defence tests: judge messages through the inbound use case at a chosen
time, and draw senders from allocated French mobile ranges."""

from __future__ import annotations

import os
import random
from datetime import UTC, datetime

from shared.rules.abuse import load_lexicon
from shared.store.db import database_for
from shared.vonage.webhooks import parse_inbound
from tests.helpers import SECRET_KEY, inbound
from workers.inbound import Keys, judge_batch
from workers.replay.scenarios import _number

NOW = datetime.now(UTC).replace(microsecond=0)


def judge(messages: list[tuple[str, str]], to: str, now: datetime) -> list[str]:
    """Judge (number, text) messages in batches of 50 at `now`; their verdicts."""
    verdicts = []
    with database_for(os.environ["DATABASE_URL"]).transaction() as tx:
        for first in range(0, len(messages), 50):
            batch = [parse_inbound(inbound(msisdn=number, to=to, text=text))
                     for number, text in messages[first:first + 50]]
            verdicts += [outcome.verdict for outcome in judge_batch(
                tx, batch, Keys(SECRET_KEY), now, load_lexicon())]
    return verdicts


def reasons(db, to: str) -> list[str]:
    return [row["reasons"] for row in db.execute(
        "SELECT reasons FROM inbound_messages m JOIN campaigns c ON c.id = m.campaign_id"
        " WHERE c.number = %s ORDER BY m.id", (to,)).fetchall()]


def senders(count: int, seed: int) -> list[str]:
    rng, used = random.Random(seed), set()
    return [_number(rng, used) for _ in range(count)]


def block_numbers(count: int, seed: int, block: str) -> list[str]:
    """`count` numbers of one 10,000-number block (`block` + 4 digits): a SIM farm."""
    rng = random.Random(seed)
    return [f"{block}{number:04d}" for number in rng.sample(range(10_000), count)]
