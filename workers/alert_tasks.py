"""Beat's alert task (placeholder until the alert webhook lands)."""

from __future__ import annotations

from typing import Any

from celery import shared_task


@shared_task(name="relous.alerts")
def alerts() -> dict[str, Any]:
    """Beat: raise the alerts due and deliver them to ALERT_WEBHOOK_URL."""
    return {}
