"""The workers' Celery app, built by `create_celery(settings)`; never at import.

`celery -A workers.app worker|beat` (the Procfile) finds `app` here: it is built from the
environment on first use (module `__getattr__`). The settings live in one holder,
`settings()`, which the tasks read; the web never imports this module.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from celery import Celery

from shared.broker import broker_config
from shared.settings import Settings

# How often beat hands due replies to the workers: the reply delay lives in PostgreSQL
# (`replies.due_at`), never as a countdown in the broker (STYLE.md, "Traps").
FLUSH_INTERVAL_SECONDS = 5.0
RECOVERY_INTERVAL_SECONDS = 60.0
STORM_INTERVAL_SECONDS = 15.0
ALERT_INTERVAL_SECONDS = 10.0
# Inbound messages recorded per database transaction, at most.
INBOUND_BATCH = 100

_settings: Settings | None = None
_app: Celery | None = None


def settings() -> Settings:
    """The settings the app was built with (what the tasks run with)."""
    if _settings is None:
        raise RuntimeError("the Celery app is not built yet: call create_celery(settings)")
    return _settings


def worker_config(settings: Settings) -> dict[str, Any]:
    """The broker's shared settings plus the consumers' policy and beat's schedule."""
    return broker_config(settings) | {
        # A message is acknowledged after its task ran, and given back if the worker dies.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        # Inbound messages are recorded a batch per transaction (workers/batching.py): each
        # process may hold one batch of unacknowledged messages, so that its next batch
        # fills while it works. A crash gives them back, to be deduplicated on redelivery.
        "worker_prefetch_multiplier": INBOUND_BATCH,
        # Celery's consumer without its native delayed delivery (workers/consumer.py).
        "worker_consumer": "workers.consumer:PipelineConsumer",
        "worker_hijack_root_logger": False,
        "worker_send_task_events": False,
        "beat_schedule": {
            "flush-due-replies": {"task": "relous.flush_due_replies",
                                  "schedule": timedelta(seconds=FLUSH_INTERVAL_SECONDS)},
            "recover-stale-sending": {"task": "relous.recover_stale_sending",
                                      "schedule": timedelta(seconds=RECOVERY_INTERVAL_SECONDS)},
            "evaluate-storm-mode": {"task": "relous.evaluate_storm_mode",
                                    "schedule": timedelta(seconds=STORM_INTERVAL_SECONDS)},
            # A run not started within its interval is dropped: the next one does its work.
            "alerts": {"task": "relous.alerts",
                       "schedule": timedelta(seconds=ALERT_INTERVAL_SECONDS),
                       "options": {"expires": ALERT_INTERVAL_SECONDS}},
            "purge-retention": {"task": "relous.purge", "schedule": timedelta(days=1)},
        },
    }


def create_celery(settings: Settings) -> Celery:
    """Build the workers' app for `settings` and make it the process's app (the tasks are
    `shared_task`s: they run on it)."""
    global _settings, _app
    _settings = settings
    celery = Celery("relous", include=["workers.tasks", "workers.alert_tasks", "workers.metrics"])
    celery.config_from_object(worker_config(settings))
    if not settings.uses_embedded_broker:
        from workers.dead_letters import DeadLetters

        celery.steps["consumer"].add(DeadLetters)
    celery.set_default()
    _app = celery
    return celery


def __getattr__(name: str) -> Any:
    """`workers.app.app`: the app built from the environment, on first use (Celery's CLI)."""
    if name == "app":
        return _app or create_celery(Settings.from_env())
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
