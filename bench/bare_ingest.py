"""The ingest ceiling for bench/ingest.py: a bare Flask endpoint that only publishes the
same payload with publisher confirms, through the same Celery app and gunicorn settings.

    gunicorn --config deploy/gunicorn.conf.py 'bench.bare_ingest:create_app()'
"""

from __future__ import annotations

from flask import Flask, request

from ingest.publisher import CeleryPublisher


def create_app() -> Flask:
    from workers.app import app as celery

    app = Flask(__name__)
    publisher = CeleryPublisher(celery)

    @app.post("/webhooks/inbound")
    def inbound() -> tuple[str, int]:
        publisher.publish("relous.process_inbound", request.form.to_dict())
        return '{"status":"queued"}', 200

    return app
