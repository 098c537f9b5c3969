"""Worker task latency, per process, in prometheus-client's multiprocess mode.

When PROMETHEUS_MULTIPROC_DIR is set (the same folder as the web process's, on one
machine), each Celery process writes its own file there and the web's `/metrics` adds
them up. gunicorn empties the folder at start; a worker process that exits is marked dead.
"""

from __future__ import annotations

import os
import time

from celery.signals import task_postrun, task_prerun, worker_process_shutdown
from prometheus_client import Histogram

from shared.metrics import CATALOGUE

TASK_DURATION = Histogram("relous_task_duration_seconds",
                          CATALOGUE["relous_task_duration_seconds"][2], ["task"],
                          buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
_started: dict[str, float] = {}


@task_prerun.connect
def _task_started(task_id: str | None = None, **_: object) -> None:
    if task_id:
        _started[task_id] = time.perf_counter()


@task_postrun.connect
def _task_finished(task_id: str | None = None, task: object = None, **_: object) -> None:
    started = _started.pop(task_id or "", None)
    if started is not None:
        name = getattr(task, "name", "unknown")
        TASK_DURATION.labels(name).observe(time.perf_counter() - started)


@worker_process_shutdown.connect
def _process_exits(pid: int | None = None, **_: object) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid or os.getpid())
