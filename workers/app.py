"""The one Celery app of anti-relous, shared by the workers, beat and the web publisher.

Run with `celery -A workers.app worker` / `celery -A workers.app beat` (see Procfile).
"""

from __future__ import annotations

from datetime import timedelta

from celery import Celery
from kombu import Exchange, Queue

from shared.settings import Settings

INBOUND_QUEUE = "relous.inbound"
REPLIES_QUEUE = "relous.replies"
# How often beat hands due replies to the workers: the reply delay lives in PostgreSQL
# (`replies.due_at`), never as a countdown in the broker (STYLE.md, "Traps").
FLUSH_INTERVAL_SECONDS = 5.0
RECOVERY_INTERVAL_SECONDS = 60.0
STORM_INTERVAL_SECONDS = 15.0
# Inbound messages recorded per database transaction, at most.
INBOUND_BATCH = 100


def celery_config(settings: Settings) -> dict:
    """Celery settings for this deployment; tests and the demo start from the same dict."""
    exchange = Exchange("relous", type="direct", durable=True)
    config: dict = {
        "broker_url": settings.broker_url,
        "broker_connection_timeout": 3,
        "broker_connection_retry_on_startup": True,
        # Publisher confirms: a publish returns only once RabbitMQ has the message.
        "broker_transport_options": {"confirm_publish": True},
        "task_queues": (
            Queue(INBOUND_QUEUE, exchange, routing_key=INBOUND_QUEUE, durable=True),
            Queue(REPLIES_QUEUE, exchange, routing_key=REPLIES_QUEUE, durable=True),
        ),
        "task_default_queue": INBOUND_QUEUE,
        "task_default_exchange": "relous",
        "task_default_routing_key": INBOUND_QUEUE,
        "task_routes": {
            "relous.send_due_replies": {"queue": REPLIES_QUEUE, "routing_key": REPLIES_QUEUE},
            "relous.flush_due_replies": {"queue": REPLIES_QUEUE, "routing_key": REPLIES_QUEUE},
            "relous.recover_stale_sending": {"queue": REPLIES_QUEUE,
                                             "routing_key": REPLIES_QUEUE},
            "relous.purge": {"queue": REPLIES_QUEUE, "routing_key": REPLIES_QUEUE},
        },
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_ignore_result": True,
        "result_backend": None,
        # A message is acknowledged after its task ran, and given back if the worker dies.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        # Inbound messages are recorded a batch per transaction (workers/tasks.py): each
        # process may hold one batch of unacknowledged messages, so that its next batch
        # fills while it works. A crash gives them back, to be deduplicated on redelivery.
        "worker_prefetch_multiplier": INBOUND_BATCH,
        "task_publish_retry": True,
        # Short: the web answers Vonage within its 15 s timeout (503 lets Vonage retry).
        "task_publish_retry_policy": {"max_retries": 2, "interval_start": 0.2,
                                      "interval_step": 0.3, "interval_max": 0.5},
        "worker_hijack_root_logger": False,
        "worker_send_task_events": False,
        "beat_schedule": {
            "flush-due-replies": {"task": "relous.flush_due_replies",
                                  "schedule": timedelta(seconds=FLUSH_INTERVAL_SECONDS)},
            "recover-stale-sending": {"task": "relous.recover_stale_sending",
                                      "schedule": timedelta(seconds=RECOVERY_INTERVAL_SECONDS)},
            "evaluate-storm-mode": {"task": "relous.evaluate_storm_mode",
                                    "schedule": timedelta(seconds=STORM_INTERVAL_SECONDS)},
            "purge-retention": {"task": "relous.purge", "schedule": timedelta(days=1)},
        },
    }
    if settings.broker_url.startswith("filesystem://"):
        folder = settings.broker_folder.resolve()
        for sub in ("queue", "processed"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        config["broker_transport_options"] = {
            "data_folder_in": str(folder / "queue"),
            "data_folder_out": str(folder / "queue"),
            "processed_folder": str(folder / "processed"),
            "store_processed": False,
        }
    return config


def create_celery(settings: Settings | None = None) -> Celery:
    """Build the Celery app for `settings` (default: from the environment)."""
    settings = settings or Settings.from_env()
    celery = Celery("relous", include=["workers.tasks", "workers.metrics"])
    celery.config_from_object(celery_config(settings))
    celery.relous_settings = settings  # type: ignore[attr-defined]
    return celery


app = create_celery()
