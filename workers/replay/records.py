"""A replay's replies and spend from the service's own records, not from a provider's log:
`relous demo --storm` and bench/cost.py read the database they ran on."""

from __future__ import annotations

from shared.rules.phones import pseudonym
from shared.store.db import Database
from shared.store.reports import replies_by_sender
from workers.replay.runner import StormResult

BILLED = ("sent", "delivered")


def read_records(result: StormResult, database: Database, campaign: str,
                 secret_key: str) -> None:
    """Fill `result.replies` (what went out, at its charge and send time) and
    `result.unsent` (senders whose reply was queued and never went out: caps, a halt),
    matching the replay's numbers to the service's pseudonyms with its key."""
    number_of = {pseudonym(number, secret_key): number for number in result.senders}
    with database.transaction() as tx:
        rows = replies_by_sender(tx, campaign)
    billed = [row for row in rows if row["status"] in BILLED]
    result.replies = [{"to": number_of.get(row["sender"], row["sender"]),
                       "price": str(row["charged"]), "at": row["sent_at"].timestamp()}
                      for row in billed]
    result.unsent = ({number_of.get(row["sender"], row["sender"]) for row in rows}
                     - {sms["to"] for sms in result.replies})
