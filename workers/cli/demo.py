"""`relous demo`: ingest, a worker and beat in one process, on the embedded default.

The same Flask app, Celery app and tasks as production; only the parts around them are
embedded: SQLite instead of PostgreSQL, kombu's filesystem transport instead of RabbitMQ,
the console provider instead of Vonage.
"""

from __future__ import annotations

import os
import secrets
import shlex
import threading
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import click

DEMO_CAMPAIGN_NUMBER = "33700000001"
DEMO_SENDER_NUMBER = "33612345678"
# One GSM-7 segment: no character that forces UCS-2 (ê, ç, ’ would), at most 160.
DEMO_REPLY = (
    "Ce numéro est un faux : la personne que vous cherchez ne veut pas vous parler. "
    "Merci de la laisser tranquille."
)


def demo_environment(data_dir: Path, port: int) -> dict[str, str]:
    """The variables the demo runs with: everything embedded, fresh keys if none are set."""
    from cryptography.fernet import Fernet

    return {
        "DATABASE_URL": f"sqlite:///{data_dir.resolve() / 'relous-demo.db'}",
        "BROKER_URL": "filesystem://",
        "RELOUS_BROKER_DIR": str(data_dir.resolve() / "broker"),
        "SMS_PROVIDER": "console",
        "PORT": str(port),
        "RELOUS_SECRET_KEY": os.environ.get("RELOUS_SECRET_KEY") or secrets.token_urlsafe(32),
        "RELOUS_EVIDENCE_KEY": os.environ.get("RELOUS_EVIDENCE_KEY")
        or Fernet.generate_key().decode(),
    }


def sample_curl(host: str, port: int) -> str:
    """A ready-to-paste curl that sends one test SMS to the demo campaign."""
    fields = {
        "msisdn": DEMO_SENDER_NUMBER,
        "to": DEMO_CAMPAIGN_NUMBER,
        "messageId": f"demo-{secrets.token_hex(6)}",
        "text": "Salut, on se voit ce soir ?",
        "type": "text",
        "message-timestamp": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S"),
    }
    args = " ".join(f"--data-urlencode {shlex.quote(f'{k}={v}')}" for k, v in fields.items())
    return f"curl -sS -X POST http://{host}:{port}/webhooks/inbound {args}"


def run_demo(host: str, port: int, data_dir: str) -> None:
    folder = Path(data_dir)
    folder.mkdir(parents=True, exist_ok=True)
    os.environ.update(demo_environment(folder, port))

    from celery.beat import EmbeddedService
    from werkzeug.serving import make_server

    from ingest import create_app
    from shared.broker import INBOUND_QUEUE, REPLIES_QUEUE
    from shared.settings import Settings
    from shared.store.campaigns import add_campaign
    from shared.store.db import Database, upgrade
    from workers.app import create_celery

    settings = Settings.from_env()
    celery = create_celery(settings)
    database = Database(settings.database_url, pool_size=1)
    upgrade(database)
    with database.transaction() as tx:
        add_campaign(tx, DEMO_CAMPAIGN_NUMBER, DEMO_REPLY, delay_seconds=0,
                     window_seconds=30 * 86400, price_per_segment=Decimal("0.08"),
                     allow_multipart=False, now=datetime.now(UTC))

    server = make_server(host, port, create_app(settings), threaded=True)
    threading.Thread(target=server.serve_forever, name="ingest", daemon=True).start()
    beat = EmbeddedService(celery, thread=True,
                           schedule_filename=str(folder / "celerybeat-schedule"))
    beat.start()

    print(f"anti-relous demo: ingest on http://{host}:{port}, campaign {DEMO_CAMPAIGN_NUMBER} "
          f"(reply delay 0), console provider, data in {folder}/", flush=True)
    print("Send a test SMS from another terminal:\n", flush=True)
    print("  " + sample_curl(host, port) + "\n", flush=True)
    print("The reply appears below, printed by the console provider. Ctrl-C stops.", flush=True)
    worker = celery.Worker(pool="threads", concurrency=2, loglevel=settings.log_level,
                           queues=[INBOUND_QUEUE, REPLIES_QUEUE], hostname="demo@localhost",
                           without_mingle=True, without_gossip=True, without_heartbeat=True,
                           redirect_stdouts=False)
    try:
        worker.start()
    finally:
        beat.stop()
        server.shutdown()


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(1, 65535), default=None,
              help="Default: $PORT, else 8000.")
@click.option("--data-dir", default=".relous", show_default=True,
              help="Folder of the demo's database and embedded broker.")
def demo(host: str, port: int | None, data_dir: str) -> None:
    """Run the whole service on the embedded default: no RabbitMQ, PostgreSQL or Vonage."""
    run_demo(host=host, port=port or int(os.environ.get("PORT") or 8000), data_dir=data_dir)
