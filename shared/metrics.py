"""The catalogue of every metric anti-relous exposes (CONTRACT.md, "Metrics").

Two kinds, so that a scrape reaching any one of many processes reads the truth:
- business figures come from PostgreSQL: counters kept up to date in the same transaction
  as the event (`metric_counters`, via `shared.store.count`), gauges read at scrape time;
- per-process figures (webhook requests and latency) use prometheus-client's
  multiprocess mode under gunicorn.
A test fails on any exposed metric that is not listed here.
"""

from __future__ import annotations

CATALOGUE: dict[str, tuple[str, tuple[str, ...], str]] = {
    "relous_inbound_messages_total": ("counter", ("campaign", "verdict"),
                                      "Inbound SMS by campaign and verdict."),
    "relous_replies_total": ("counter", ("campaign", "status"),
                             "Replies reaching a status (sent, delivered, failed, expired)."),
    "relous_replies_pending": ("gauge", ("campaign",), "Replies waiting to be sent."),
    "relous_spend_euros_total": ("counter", ("campaign",),
                                 "EUR spent, as reported by the provider."),
    "relous_budget_remaining_euros": ("gauge", ("campaign", "period"),
                                      "EUR left under each cap (capped periods only)."),
    # Extension (README): the caps themselves, so that alerts can say "below 20%".
    "relous_budget_cap_euros": ("gauge", ("campaign", "period"),
                                "Each cap in EUR (capped periods only)."),
    "relous_storm_mode": ("gauge", ("campaign",), "1 while the campaign is in storm mode."),
    "relous_queue_depth_messages": ("gauge", ("queue",),
                                    "Messages ready in each RabbitMQ queue."),
    "relous_webhook_requests_total": ("counter", ("endpoint", "code"),
                                      "Webhook requests by endpoint and HTTP code."),
    "relous_webhook_duration_seconds": ("histogram", ("endpoint",),
                                        "Webhook handling time, publish confirm included."),
    "relous_provider_errors_total": ("counter", ("reason",),
                                     "Provider answers other than accepted, by reason."),
    "relous_sending_halted": ("gauge", ("campaign",),
                              "1 while a campaign's sending is halted (`*`: every campaign)."),
    "relous_price_overruns_total": ("counter", ("campaign",),
                                    "Sends billed above their reservation (each halts sending)."),
    "relous_parked_messages": ("gauge", ("kind",),
                               "Messages that could not be recorded, waiting for an operator."),
    # Extension (README): worker task latency, per process (multiprocess mode).
    "relous_task_duration_seconds": ("histogram", ("task",),
                                     "Celery task run time, by task."),
}

VERDICTS = ("reply", "suppress", "block", "duplicate", "unroutable")
REPLY_STATUSES = ("sent", "delivered", "failed", "expired")
BUDGET_PERIODS = ("hour", "day", "total")

# Names of the database counters (`metric_counters.metric`).
INBOUND, REPLIES, SPEND, PROVIDER_ERRORS = "inbound", "replies", "spend", "provider_errors"
PRICE_OVERRUNS = "price_overruns"
