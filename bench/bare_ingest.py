"""The ingest ceiling for bench/ingest.py: a bare Flask endpoint that only publishes the
same payload with publisher confirms, through the same publisher and gunicorn settings.

    gunicorn --config deploy/gunicorn.conf.py 'bench.bare_ingest:create_app()'
"""

from __future__ import annotations

from flask import Flask, request

from shared.broker import create_publisher
from shared.settings import Settings


def create_app() -> Flask:
    app = Flask(__name__)
    publisher = create_publisher(Settings.from_env())

    @app.post("/webhooks/inbound")
    def inbound() -> tuple[str, int]:
        publisher.publish("relous.process_inbound", request.form.to_dict())
        return '{"status":"queued"}', 200

    return app
