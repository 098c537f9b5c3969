"""The workers' Celery consumer: Celery's own, less its native delayed delivery.

Celery 5.5 adds that step as soon as a queue is a quorum queue. It declares a tree of
delay exchanges and queues and binds every queue to a topic exchange (ours is direct), at
each start and for each broker URL. The pipeline never delays a message in the broker:
due times live in PostgreSQL (STYLE.md, "Traps"), so the step would only add queues.
"""

from __future__ import annotations

from celery.worker.consumer import Consumer

_DELAYED_DELIVERY = "celery.worker.consumer.delayed_delivery:DelayedDelivery"


class PipelineConsumer(Consumer):
    class Blueprint(Consumer.Blueprint):
        default_steps = tuple(step for step in Consumer.Blueprint.default_steps
                         if step != _DELAYED_DELIVERY)
