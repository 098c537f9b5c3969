"""`/metrics`: a fresh registry per scrape, so that any web process answers the same.

It holds the per-process webhook metrics (all gunicorn workers' files in multiprocess
mode), the business figures read from PostgreSQL, and the queue depth asked of RabbitMQ.
"""

from __future__ import annotations

import hmac
import logging
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime

from flask import Blueprint, Flask, Response, current_app, g, request
from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from shared.metrics import (
    BUDGET_PERIODS,
    CATALOGUE,
    INBOUND,
    PRICE_OVERRUNS,
    PROVIDER_ERRORS,
    REPLIES,
    REPLY_STATUSES,
    SPEND,
    VERDICTS,
)
from shared.store.counters import counter_totals
from shared.store.db import Database
from shared.store.reports import metric_gauges

log = logging.getLogger(__name__)
bp = Blueprint("metrics", __name__)
# `*_created` series are not in the catalogue, and multiprocess mode has none anyway.
disable_created_metrics()

WEBHOOK_REQUESTS = Counter("relous_webhook_requests", CATALOGUE[
    "relous_webhook_requests_total"][2], ["endpoint", "code"])
WEBHOOK_DURATION = Histogram("relous_webhook_duration_seconds", CATALOGUE[
    "relous_webhook_duration_seconds"][2], ["endpoint"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15))
ENDPOINTS = {"/webhooks/inbound": "inbound", "/webhooks/status": "status"}


def install_request_metrics(app: Flask) -> None:
    """Time and count every webhook request, whatever its answer."""

    @app.before_request
    def _start_timer() -> None:
        g.relous_started = time.perf_counter()

    @app.after_request
    def _observe(response: Response) -> Response:
        endpoint = ENDPOINTS.get(request.path)
        if endpoint is not None and "relous_started" in g:
            WEBHOOK_DURATION.labels(endpoint).observe(time.perf_counter() - g.relous_started)
            WEBHOOK_REQUESTS.labels(endpoint, str(response.status_code)).inc()
        return response


@bp.get("/metrics")
def metrics() -> Response:
    token = current_app.extensions["relous.settings"].metrics_token
    if token:
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            return Response('{"error": "bearer token required", "field": "Authorization"}\n',
                            status=401, mimetype="application/json")
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.MultiProcessCollector(registry)
    else:
        registry.register(_ThisProcess())
    registry.register(DatabaseCollector(current_app.extensions["relous.database"]))
    registry.register(QueueDepthCollector(current_app.extensions["relous.publisher"]))
    return Response(generate_latest(registry), mimetype="text/plain; version=0.0.4")


class _ThisProcess(Collector):
    """Without multiprocess mode (tests, demo): this process's relous_* metrics only."""

    def collect(self) -> Iterator[Metric]:
        for family in REGISTRY.collect():
            if family.name.startswith("relous_"):
                yield family


class DatabaseCollector(Collector):
    """Business figures from PostgreSQL: the same for every process that is asked."""

    def __init__(self, database: Database) -> None:
        self._database = database

    def collect(self) -> Iterator[Metric]:
        try:
            with self._database.transaction() as tx:
                totals = counter_totals(tx)
                gauges = metric_gauges(tx, datetime.now(UTC))
        except Exception as error:  # a scrape reports what it can; the gap alerts
            log.warning("metrics: database unavailable (%s)", type(error).__name__)
            return
        inbound = _counter("relous_inbound_messages_total")
        replies = _counter("relous_replies_total")
        spend = _counter("relous_spend_euros_total")
        errors = _counter("relous_provider_errors_total")
        overruns = _counter("relous_price_overruns_total")
        values: dict[tuple[str, str, str], float] = {
            (row["metric"], row["campaign"], row["label"]): float(row["value"]) for row in totals
        }
        for campaign in gauges["campaigns"]:
            for verdict in VERDICTS:
                inbound.add_metric([campaign, verdict],
                                   values.pop((INBOUND, campaign, verdict), 0.0))
            for status in REPLY_STATUSES:
                replies.add_metric([campaign, status], values.pop((REPLIES, campaign, status),
                                                                  0.0))
            spend.add_metric([campaign], values.pop((SPEND, campaign, ""), 0.0))
            overruns.add_metric([campaign], values.pop((PRICE_OVERRUNS, campaign, ""), 0.0))
        for (metric, campaign, label), value in values.items():
            if metric == INBOUND:  # unroutable numbers are not campaigns
                inbound.add_metric([campaign, label], value)
            elif metric == PROVIDER_ERRORS:
                errors.add_metric([label], value)
        yield from (inbound, replies, spend, errors, overruns)

        pending = _gauge("relous_replies_pending")
        storm = _gauge("relous_storm_mode")
        remaining = _gauge("relous_budget_remaining_euros")
        caps = _gauge("relous_budget_cap_euros")
        for campaign, count in gauges["pending"].items():
            pending.add_metric([campaign], count)
        for campaign, on in gauges["storm"].items():
            storm.add_metric([campaign], 1.0 if on else 0.0)
        for campaign, left in gauges["remaining"].items():
            for period in BUDGET_PERIODS:
                if left.get(period) is not None:
                    remaining.add_metric([campaign, period], float(left[period]))
        for campaign, cap_of in gauges["caps"].items():
            for period in BUDGET_PERIODS:
                if cap_of.get(period) is not None:
                    caps.add_metric([campaign, period], float(cap_of[period]))
        halted = _gauge("relous_sending_halted")
        for campaign, reason in gauges["halted"].items():  # "*": the kill switch
            halted.add_metric([campaign], 1.0 if reason else 0.0)
        parked = _gauge("relous_parked_messages")
        for kind, count in gauges["parked"].items():
            parked.add_metric([kind], count)
        yield from (pending, storm, remaining, caps, halted, parked)


class QueueDepthCollector(Collector):
    """Messages waiting in each queue, asked of RabbitMQ at scrape time."""

    def __init__(self, publisher: object) -> None:
        self._publisher = publisher

    def collect(self) -> Iterator[Metric]:
        depth = _gauge("relous_queue_depth_messages")
        try:
            for queue, messages in self._publisher.queue_depths().items():  # type: ignore[attr-defined]
                depth.add_metric([queue], messages)
        except Exception as error:  # broker down: no sample, and the 503s alert
            log.warning("metrics: broker unavailable (%s)", type(error).__name__)
            return
        yield depth


def _counter(name: str) -> CounterMetricFamily:
    _, labels, help_text = CATALOGUE[name]
    return CounterMetricFamily(name.removesuffix("_total"), help_text, labels=labels)


def _gauge(name: str) -> GaugeMetricFamily:
    _, labels, help_text = CATALOGUE[name]
    return GaugeMetricFamily(name, help_text, labels=labels)
