"""The Procfile's `web` and `worker` under fault: started as real processes, fed signed
webhooks at a steady rate, their Celery pool processes (or the whole worker) SIGKILLed and
restarted; then beat's recovery, run without waiting its 2 and 10 minutes.
"""

from __future__ import annotations

import contextlib
import os
import random
import secrets
import signal
import string
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
import requests
from celery import Celery

from tests.helpers import RUN_ID, inbound, rabbitmqctl, sign, wait_for
from tests.processes import Process, free_port, procfile_process

CAMPAIGN = "33700000001"
REPLY = "Cette personne ne veut pas vous parler. Merci de la laisser tranquille."
PRICE = Decimal("0.0333")  # the fake Vonage's price per part: estimates are exact


def scenario_seed() -> int:
    """The seed of a scenario's random choices: RELOUS_FAULTS_SEED replays a printed run."""
    chosen = os.environ.get("RELOUS_FAULTS_SEED")
    return int(chosen) if chosen else random.SystemRandom().randrange(2**32)


class Stack:
    """`web` (gunicorn) and `worker` (celery prefork) from the Procfile, on one broker and
    one database, with the fake Vonage of the test session as provider."""

    def __init__(self, broker_url: str, database_url: str, log_dir: Path,
                 concurrency: int = 3, **env: str) -> None:
        self.log_dir = log_dir
        self.broker_url = broker_url
        self.database_url = database_url
        port = free_port()
        self.base = f"http://127.0.0.1:{port}"
        self.env = dict(os.environ, BROKER_URL=broker_url, DATABASE_URL=database_url,
                        PORT=str(port), WEB_CONCURRENCY="2",
                        WORKER_CONCURRENCY=str(concurrency),
                        PROMETHEUS_MULTIPROC_DIR=str(log_dir / "prometheus"), **env)
        self.processes: list[Process] = []
        self.kills: Counter[str] = Counter()
        self._local = threading.local()
        self._celery: Celery | None = None

    # --- processes --------------------------------------------------------------------
    def start(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.web = self._start("web")
        self.worker = self._start("worker")
        wait_for(self._web_ready, timeout=90, interval=0.2, message="gunicorn ready")
        self._wait_worker_ready()

    def _start(self, name: str) -> Process:
        label = f"{name}-{sum(p.name.startswith(name) for p in self.processes)}"
        process = procfile_process(name, self.env, self.log_dir, label=label)
        self.processes.append(process)
        return process

    def _web_ready(self) -> bool:
        try:
            return requests.get(f"{self.base}/readyz", timeout=5).status_code == 200
        except requests.RequestException:
            return False

    def _wait_worker_ready(self) -> None:
        worker = self.worker

        def ready() -> bool:
            if worker.popen.poll() is not None:
                pytest.fail(f"the worker exited with {worker.popen.returncode}: "
                            f"{worker.output[-2000:]}")
            return " ready." in worker.output

        wait_for(ready, timeout=90, interval=0.1, message="celery worker ready")

    def pool_children(self) -> list[int]:
        """The worker's prefork pool processes (children of its main process)."""
        return _children(self.worker.popen.pid)

    def kill_pool_process(self, rng: random.Random) -> None:
        """SIGKILL one pool process at random: Celery sees the task's worker lost, gives
        its message back to RabbitMQ (reject on worker lost) and forks a new process."""
        while True:
            children = wait_for(self.pool_children, timeout=60, interval=0.02,
                                message="a pool process to kill")
            try:
                os.kill(rng.choice(sorted(children)), signal.SIGKILL)
            except ProcessLookupError:
                continue  # it was exiting already: choose again
            self.kills["pool"] += 1
            return

    def kill_worker(self) -> None:
        """SIGKILL the whole worker (main process and pool), then start a new one, as a
        platform restarts a crashed dyno. RabbitMQ requeues what it had not acknowledged."""
        os.killpg(self.worker.popen.pid, signal.SIGKILL)
        self.worker.popen.wait(30)
        self.worker.stop()
        self.kills["worker"] += 1
        self.worker = self._start("worker")
        self._wait_worker_ready()

    def stop(self) -> None:
        for process in self.processes:
            process.stop()
        if self._celery is not None:
            self._celery.close()

    def logs(self) -> str:
        """Everything every process of this stack wrote (restarted ones included)."""
        return "".join(process.output for process in self.processes)

    # --- traffic ----------------------------------------------------------------------
    def post(self, params: dict[str, str], path: str = "/webhooks/inbound") -> int:
        """POST a webhook as Vonage does; the HTTP status, 0 when the web did not answer."""
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        try:
            return session.post(f"{self.base}{path}", data=params, timeout=30).status_code
        except requests.RequestException:
            return 0

    def flush(self) -> None:
        """Publish beat's `flush_due_replies` (the worker starts a send round per campaign)."""
        if self._celery is None:
            from shared.broker import publisher_celery
            from shared.settings import Settings

            self._celery = publisher_celery(Settings.from_env().with_overrides(
                broker_url=self.broker_url, database_url=self.database_url))
        self._celery.send_task("relous.flush_due_replies")


def _children(pid: int) -> list[int]:
    """Child processes of `pid`: psutil when installed, else Linux's /proc."""
    try:
        import psutil
    except ImportError:
        found: list[int] = []
        for task in Path(f"/proc/{pid}/task").glob("*/children"):
            try:
                found.extend(int(child) for child in task.read_text().split())
            except OSError:
                continue
        return found
    try:
        return [child.pid for child in psutil.Process(pid).children()]
    except psutil.NoSuchProcess:
        return []


class Poster:
    """Posts webhooks in the background at a steady rate, as Vonage delivers them, and
    records every answer. The rate is the load's, not a synchronisation."""

    def __init__(self, stack: Stack, webhooks: Iterable[list[dict[str, str]]],
                 rate: float, threads: int = 4) -> None:
        self._stack = stack
        self._webhooks = iter(webhooks)
        self._rate = rate
        self._pool = ThreadPoolExecutor(threads)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.answers: list[tuple[dict[str, str], int]] = []
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Poster:
        self._thread.start()
        return self

    def _run(self) -> None:
        started = time.monotonic()
        for index, group in enumerate(self._webhooks):
            # Steady arrivals: wait for this webhook's time, or for `finish`.
            if self._stop.wait(max(0.0, started + index / self._rate - time.monotonic())):
                break
            for params in group:
                self._pool.submit(self._post, params)
        self._pool.shutdown(wait=True)

    def _post(self, params: dict[str, str]) -> None:
        code = self._stack.post(params)
        with self._lock:
            self.answers.append((params, code))

    def finish(self, timeout: float = 120) -> None:
        """Stop posting and wait for the requests in flight."""
        self._stop.set()
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the poster did not finish"

    def codes(self) -> Counter[int]:
        with self._lock:
            return Counter(code for _, code in self.answers)

    @property
    def acked(self) -> int:
        with self._lock:
            return sum(200 <= code < 300 for _, code in self.answers)

    def wait_acked(self, more: int, message: str) -> None:
        """Wait until `more` further webhooks have been answered 2xx."""
        target = self.acked + more
        wait_for(lambda: self.acked >= target, timeout=120,
                 message=f"{more} webhooks accepted {message}")

    def refused(self) -> list[dict[str, str]]:
        """Webhooks not answered 2xx (Vonage retries those)."""
        with self._lock:
            return [params for params, code in self.answers if not 200 <= code < 300]


def retry_like_vonage(stack: Stack, refused: list[dict[str, str]]) -> None:
    """Post every refused webhook again until it is answered 2xx, as Vonage does (24 h)."""
    for params in refused:
        wait_for(lambda params=params: 200 <= stack.post(params) < 300, timeout=90,
                 interval=0.5, message="a refused webhook accepted on retry")


# --- traffic --------------------------------------------------------------------------

def sender_numbers(rng: random.Random, count: int) -> list[str]:
    """Distinct French mobile numbers with scattered prefixes (no SIM-farm cluster), in
    allocated ranges (the destination gate answers no other)."""
    from shared.rules.phones import destination_verdict

    numbers: set[str] = set()
    while len(numbers) < count:
        number = f"336{rng.randrange(10**7, 10**8)}"
        if destination_verdict(number, number) is None:
            numbers.add(number)
    return sorted(numbers)


def random_text(rng: random.Random) -> str:
    """A text unlike any other (no digits: the repetition rule ignores them)."""
    words = ("".join(rng.choices(string.ascii_lowercase, k=rng.randint(4, 8)))
             for _ in range(4))
    return "Salut " + " ".join(words)


def inbound_stream(rng: random.Random, numbers: list[str],
                   concat_share: float = 0.0) -> Iterator[list[dict[str, str]]]:
    """Endless signed inbound webhooks from `numbers`: each item is one SMS, a list of one
    webhook or of the parts of a concatenated SMS (posted at once, in any order)."""
    serial = 0
    while True:
        serial += 1
        sender = rng.choice(numbers)
        message_id = f"F{serial:06d}{rng.randrange(16**6):06X}"
        if rng.random() >= concat_share:
            yield [sign(inbound(msisdn=sender, text=random_text(rng), message_id=message_id))]
            continue
        total = rng.randint(2, 3)
        parts = [sign(inbound(msisdn=sender, text=random_text(rng) + " ",
                              message_id=f"{message_id}P{part}", concat="true",
                              **{"concat-ref": str(serial), "concat-total": str(total),
                                 "concat-part": str(part)}))
                 for part in range(1, total + 1)]
        rng.shuffle(parts)
        yield parts


def new_senders(rng: random.Random, numbers: list[str]) -> Iterator[list[dict[str, str]]]:
    """One signed first message from each number, in order."""
    for number in numbers:
        yield [sign(inbound(msisdn=number, text=random_text(rng),
                            message_id=f"N{number}{rng.randrange(16**4):04X}"))]


# --- set-up and recovery --------------------------------------------------------------

@contextlib.contextmanager
def fresh_vhost() -> Iterator[str]:
    """A virtual host of the shared RabbitMQ, deleted after (its queues start empty)."""
    name = f"relous_faults_{RUN_ID}_{secrets.token_hex(3)}"
    rabbitmqctl("-q", "add_vhost", name)
    rabbitmqctl("-q", "set_permissions", "-p", name, "guest", ".*", ".*", ".*")
    try:
        yield name
    finally:
        with contextlib.suppress(subprocess.SubprocessError):
            rabbitmqctl("-q", "delete_vhost", name)


def create_campaign(database_url: str, *, delay: int = 0, total_cap: Decimal | None = None,
                    number: str = CAMPAIGN) -> str:
    """The campaign (a reply of one segment at the fake's price) and its total cap."""
    from shared.store.budgets import set_budget
    from shared.store.campaigns import add_campaign
    from shared.store.db import Database

    database = Database(database_url, pool_size=1)
    now = datetime.now(UTC)
    try:
        with database.transaction() as tx:
            add_campaign(tx, number, REPLY, delay_seconds=delay,
                               window_seconds=30 * 86400, price_per_segment=PRICE,
                               allow_multipart=False, now=now)
            if total_cap is not None:
                set_budget(tx, number, now, total=total_cap)
    finally:
        database.close()
    return number


def recover(stack: Stack, idle: Callable[[], None]) -> tuple[int, int]:
    """Beat's recovery after the crashes, without waiting for its time limits.

    Once nothing runs (`idle`), the claims and sends left by dead processes are aged past
    their limits (2 and 10 minutes), `recover_stale_claims` runs as beat's
    `recover_stale_sending` does (claimed -> pending, sending -> unknown), and a flush
    sends what is due. Returns (claims returned, sends marked unknown).
    """
    from shared.store.db import Database
    from shared.store.replies import recover_stale_claims

    idle()
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        conn.execute("UPDATE replies SET claimed_at = claimed_at - interval '11 minutes'"
                     " WHERE status IN ('claimed', 'sending')")
    database = Database(stack.database_url, pool_size=1)
    try:
        with database.transaction() as tx:
            returned, lost = recover_stale_claims(tx, datetime.now(UTC))
    finally:
        database.close()
    stack.flush()
    idle()
    return returned, lost
