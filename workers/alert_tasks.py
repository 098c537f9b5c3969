"""Beat's alert task (every ALERT_INTERVAL_SECONDS, on the relous.replies queue): watch,
then deliver to ALERT_WEBHOOK_URL (workers/alerts.py)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from celery import shared_task

from shared.store.db import database_for
from workers import alerts as webhook
from workers.app import settings

log = logging.getLogger(__name__)


def _now() -> datetime:
    return datetime.now(UTC)


@shared_task(name="relous.alerts")
def alerts() -> dict[str, Any]:
    """Beat: raise the alerts due and deliver them to ALERT_WEBHOOK_URL.

    Without a URL it does nothing: no watching, so that setting one later reports the
    state at that time, not a backlog (alerts that housekeeping raised meanwhile are given
    up as stale once older than `webhook.STALE_AFTER`). With one, the watch and the purge
    run in one transaction, then `deliver` posts outside it, bounded per run
    (`webhook.MAX_PER_RUN`, `webhook.RUN_SECONDS`, the POST time-outs), so a hanging
    webhook holds this worker process for seconds, not minutes.
    """
    current = settings()
    if not current.alert_webhook_url:
        return {"webhook": False}
    db, now = database_for(current.database_url), _now()
    with db.transaction() as tx:
        raised = webhook.watch(tx, now)
        purged = webhook.purge(tx, now)
    if raised:
        log.info("alerts raised: %s", ", ".join(raised))
    counts = webhook.deliver(db, current.alert_webhook_url, now)
    return {"webhook": True, "raised": len(raised), "purged": purged, **counts}
