"""`relous demo`: ingest, a worker and beat in one process, on the embedded default.

The same Flask app, Celery app, tasks, rules and store as production; only the parts
around them are embedded: SQLite instead of PostgreSQL, the embedded broker
(shared/embedded_broker.py) instead of RabbitMQ, the console provider instead of Vonage.
Quiet by default: one line when ready, one per reply, warnings and errors as they come.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import secrets
import shlex
import shutil
import signal
import socket
import threading
import time
import warnings
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from workers.cli.demo_storm import StormPlan

DEMO_CAMPAIGN_NUMBER = "33700000001"
DEMO_SENDER_NUMBER = "33612345678"
# One GSM-7 segment: no character that forces UCS-2 (ê, ç, ’ would), at most 160.
DEMO_REPLY = (
    "Ce numéro est un faux : la personne que vous cherchez ne veut pas vous parler. "
    "Merci de la laisser tranquille."
)
# The console provider has no per-key rate: the shared bucket must not make the demo's
# replies queue behind each other (the worker's threads would all wait on it).
DEMO_SMS_RATE = "1000"
WORKER_THREADS = 8
PR_SET_PDEATHSIG = 1


def demo_environment(data_dir: Path, port: int) -> dict[str, str]:
    """The variables the demo runs with: everything embedded, and its keys (see
    `demo_keys`) unless the environment sets them."""
    keys = demo_keys(data_dir)
    return {
        "DATABASE_URL": f"sqlite:///{data_dir.resolve() / 'relous-demo.db'}",
        "BROKER_URL": "embedded://",
        "RELOUS_BROKER_DIR": str(data_dir.resolve() / "broker"),
        "SMS_PROVIDER": "console",
        "SMS_RATE_PER_SECOND": DEMO_SMS_RATE,
        "PORT": str(port),
        **{name: os.environ.get(name) or value for name, value in keys.items()},
    }


def demo_keys(data_dir: Path) -> dict[str, str]:
    """The demo's keys, drawn once and kept beside its data (`keys.json`, mode 0600): a
    restart with new keys would see every sender as new (pseudonyms change) and answer
    them again, and could not open what it sealed."""
    from cryptography.fernet import Fernet

    path = data_dir / "keys.json"
    try:
        return dict(json.loads(path.read_text()))
    except FileNotFoundError:
        keys = {"RELOUS_SECRET_KEY": secrets.token_urlsafe(32),
                "RELOUS_EVIDENCE_KEY": Fernet.generate_key().decode()}
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as file:
            json.dump(keys, file)
        return keys


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


def run_demo(host: str, port: int, data_dir: str, *, verbose: bool = False,
             storm: StormPlan | None = None) -> None:
    """Serve until Ctrl-C (or, with a storm plan, until its report is printed)."""
    _check_port(host, port)
    folder = Path(data_dir)
    if storm is not None:  # a replay starts from nothing: its senders are all new
        folder = folder / f"storm-{storm.scenario}"
        shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    os.environ.update(demo_environment(folder, port))

    from celery.beat import EmbeddedService
    from celery.signals import worker_ready
    from werkzeug.serving import make_server

    from ingest import create_app
    from shared.broker import INBOUND_QUEUE, REPLIES_QUEUE
    from shared.settings import Settings
    from shared.store.campaigns import add_campaign
    from shared.store.db import Database, upgrade
    from workers.app import create_celery

    settings = Settings.from_env().with_overrides(
        log_level=os.environ.get("LOG_LEVEL", "INFO").upper() if verbose else "WARNING",
        console_replies_printed=storm is None or verbose)
    if not verbose:
        warnings.filterwarnings("ignore", module="celery.platforms")  # running as root
    celery = create_celery(settings)
    database = Database(settings.database_url, pool_size=1)
    upgrade(database)
    with database.transaction() as tx:
        add_campaign(tx, DEMO_CAMPAIGN_NUMBER, DEMO_REPLY, delay_seconds=0,
                     window_seconds=30 * 86400, price_per_segment=Decimal("0.08"),
                     allow_multipart=False, now=datetime.now(UTC))

    if not verbose:  # the demo is unsigned on purpose: its ready line says so
        logging.getLogger("ingest").setLevel(logging.ERROR)
    server = make_server(host, port, create_app(settings), threaded=True)
    web = serve_in_child(server)
    beat = EmbeddedService(celery, thread=True,
                           schedule_filename=str(folder / "celerybeat-schedule"))
    beat.start()

    @worker_ready.connect(weak=False)
    def announce(**_: Any) -> None:
        click.echo(f"anti-relous demo ready on http://{host}:{port}: campaign "
                   f"{DEMO_CAMPAIGN_NUMBER}, console provider, webhooks unsigned, data in "
                   f"{folder}/. Try: {sample_curl(host, port)}", nl=True)
        if storm is not None:
            from workers.cli.demo_storm import start_storm

            start_storm(storm, settings, f"http://{host}:{port}")

    worker = celery.Worker(pool="threads", concurrency=WORKER_THREADS,
                           loglevel=settings.log_level, queues=[INBOUND_QUEUE, REPLIES_QUEUE],
                           hostname="demo@localhost", without_mingle=True,
                           without_gossip=True, without_heartbeat=True, quiet=not verbose,
                           redirect_stdouts=False)
    try:
        worker.start()
    finally:
        beat.stop()
        os.kill(web, signal.SIGTERM)
        os.waitpid(web, 0)
    if storm is not None and storm.failed:
        raise SystemExit(1)


def _check_port(host: str, port: int) -> None:
    """Say in one line that the port is taken (werkzeug would print two and exit)."""
    from workers.cli.common import fail

    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            fail(f"cannot listen on {host}:{port} ({error.strerror}): stop what uses it, "
                 "or give another --port")


def serve_in_child(server: Any) -> int:
    """Serve the web from a child process, so that the web and the worker each have a core
    (one process would share one interpreter lock). The child dies with the demo, even
    killed with SIGKILL (Linux's parent-death signal; elsewhere it watches its parent)."""
    parent = os.getpid()
    child = os.fork()  # before any thread of the demo starts
    if child:
        server.socket.close()
        return child
    try:
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (AttributeError, OSError):
        def watch() -> None:
            while os.getppid() == parent:
                time.sleep(0.5)  # a parent's death cannot be awaited portably
            os._exit(0)

        threading.Thread(target=watch, daemon=True).start()
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    signal.signal(signal.SIGINT, lambda *_: os._exit(0))
    server.serve_forever()
    os._exit(0)


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(1, 65535), default=None,
              help="Default: $PORT, else 8000.")
@click.option("--data-dir", default=".relous", show_default=True,
              help="Folder of the demo's database and embedded broker.")
@click.option("--storm", "scenario", default=None,
              help="Replay this scenario against the demo itself, print the report and "
                   "the chart, then stop (on a fresh database in DATA_DIR/storm-SCENARIO).")
@click.option("--speed", type=click.FloatRange(min=0.001), default=2000.0, show_default=True,
              help="With --storm: scenario seconds per real second.")
@click.option("--seed", type=int, default=2017, show_default=True)
@click.option("--chart", "chart_path", default=None,
              help="With --storm: PNG to write (default storm-SCENARIO.png).")
@click.option("--verbose", is_flag=True, help="Celery's banner and every log line.")
def demo(host: str, port: int | None, data_dir: str, scenario: str | None, speed: float,
         seed: int, chart_path: str | None, verbose: bool) -> None:
    """Run the whole service on the embedded default: no RabbitMQ, PostgreSQL or Vonage."""
    plan = None
    if scenario is not None:
        from workers.cli.common import fail
        from workers.cli.demo_storm import StormPlan
        from workers.replay.scenarios import scenario_names

        if scenario not in scenario_names():
            fail(f"unknown scenario {scenario!r}; known: {', '.join(scenario_names())}", 2)
        plan = StormPlan(scenario, speed, seed, chart_path or f"storm-{scenario}.png")
    run_demo(host=host, port=port or int(os.environ.get("PORT") or 8000), data_dir=data_dir,
             verbose=verbose, storm=plan)
