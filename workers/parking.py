"""Use case: record one message, or park it. The policy behind "nothing the web answered
200 disappears": a message is recorded, or given back to the queue while the database is
unavailable, or parked (sealed, for `relous parked`) when it fails on its own: at once
when the database refuses it or the code cannot handle it, after MAX_BUSY_ATTEMPTS when it
keeps losing races or timing out. Never requeued forever, never dropped silently.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

from shared.settings import Settings
from shared.store.db import Database, Transaction
from shared.store.failures import DatabaseBusy, DatabaseError, DatabaseUnavailable
from shared.store.parked import park
from shared.vault import seal

log = logging.getLogger(__name__)

DONE, RETRY = "done", "retry"
MAX_BUSY_ATTEMPTS = 3
# A message given back to its quorum queue comes straight back, and every return counts
# toward the queue's delivery limit (shared/broker.py): pausing before each keeps a
# database outage of DELIVERY_LIMIT × this from dead-lettering it (it is parked then).
GIVE_BACK_PAUSE_SECONDS = 1.0
Result = TypeVar("Result")


def record_or_park(db: Database, settings: Settings, kind: str, key: str, payload: Any,
                   work: Callable[[Transaction], Result],
                   now: datetime) -> tuple[str, Result | None]:
    """Run `work` in a transaction of its own: (DONE, its result); (DONE, None) when the
    message was parked instead; (RETRY, None) when the database is unavailable."""
    failure: BaseException | None = None
    for _ in range(MAX_BUSY_ATTEMPTS):
        try:
            with db.transaction() as tx:
                return DONE, work(tx)
        except DatabaseUnavailable:
            return RETRY, None
        except DatabaseBusy as error:
            failure = error
        except Exception as error:  # refused by the database, or a bug: it fails alone
            failure = error
            break
    return park_message(db, settings, kind, key, payload, describe(failure), now), None


def park_message(db: Database, settings: Settings, kind: str, key: str, payload: Any,
                 error: str, now: datetime) -> str:
    """Keep a message that cannot be recorded: DONE once parked, RETRY when even parking
    is impossible now (the database is unavailable: the broker keeps it)."""
    sealed = seal(json.dumps(payload, default=str, ensure_ascii=True), settings.evidence_key)
    try:
        with db.transaction() as tx:
            park(tx, kind, key, sealed, error, now)
    except DatabaseError as failure:
        log.warning("%s %r not parked (%s): back to the queue", kind, key[:80], failure)
        return RETRY
    log.error("%s %r parked: %s (see `relous parked list`)", kind, key[:80], error)
    return DONE


def pause_before_giving_back() -> None:
    """Wait a moment before a message goes back to the queue (see GIVE_BACK_PAUSE_SECONDS)."""
    time.sleep(GIVE_BACK_PAUSE_SECONDS)


def describe(error: BaseException | None) -> str:
    """What a parked row says of its failure: the exception's class and, for a database
    failure, its SQLSTATE; never the message text (it may quote the sender's data)."""
    if error is None:
        return "unknown failure"
    if isinstance(error, DatabaseError):
        return f"{type(error).__name__}: {error}"
    return type(error).__name__
