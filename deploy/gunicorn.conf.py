"""gunicorn settings of the `web` process (Procfile). Read by `gunicorn --config`."""

import os
import shutil
import tempfile

workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
# Threads per worker: each request waits for RabbitMQ's publisher confirm (a disk write on
# the broker, replicated on a cluster), and threads wait for theirs concurrently, each on
# a producer channel of its own from Celery's pool (bench/RESULTS.md, "Ingest").
worker_class = "gthread"
threads = int(os.environ.get("WEB_THREADS", "8"))
# Vonage waits 15 s for an answer; a request stuck longer than this is killed.
timeout = 20
graceful_timeout = 20
# No access log: GET webhooks carry the sender's number in the query string, and
# CONTRACT.md forbids raw numbers in logs. The app logs each rejection without it.
accesslog = None
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "INFO").lower()
# Build the app (and its broker and database clients) in each worker, after the fork.
preload_app = False


def on_starting(server):
    """prometheus-client multiprocess mode: one folder of metric files for all workers,
    emptied at start so that files of processes from an earlier run do not pile up."""
    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not folder:
        folder = tempfile.mkdtemp(prefix="relous-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder, exist_ok=True)


def child_exit(server, worker):
    """Drop a dead worker's live gauges (its counters stay, as counters must)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
