"""Fixtures of the crash tests: private RabbitMQ and PostgreSQL instances they may stop and
start, a fresh virtual host of the shared RabbitMQ, and the Procfile's processes.

The shared PostgreSQL (5432) and RabbitMQ (5672) serve every developer of this machine:
they are never stopped. Restarts happen on private instances, on free ports, with their
data in a temporary folder, removed at the end whatever happens.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg
import pytest

from tests.faults.stack import Stack, fresh_vhost
from tests.helpers import QUORUM_TICK_MS, RUN_ID, wait_for
from tests.processes import free_port

if TYPE_CHECKING:  # cluster.py builds on PrivateRabbitMQ below
    from tests.faults.cluster import PrivateCluster

RABBITMQ_BIN = Path("/usr/lib/rabbitmq/bin")
POSTGRES_LIB = Path("/usr/lib/postgresql")


class PrivateRabbitMQ:
    """A RabbitMQ node of this test run alone: its own name, ports, cookie and data folder.

    Runs as root with HOME in its folder (its own Erlang cookie, so that the shared node's
    is neither read nor changed), plugins off (the management plugin would take 15672),
    listening on 127.0.0.1 only. `stop` is a clean `rabbitmqctl stop`, as an operator's
    restart: durable queues and persistent messages survive it.
    """

    def __init__(self, folder: Path, cookie: str | None = None) -> None:
        """`cookie`: the Erlang cookie, shared by the nodes of one cluster (tests/faults/
        cluster.py); a fresh one by default."""
        self.folder = folder
        self.node = f"relous-faults-{RUN_ID}-{secrets.token_hex(3)}@localhost"
        self.port = free_port()
        self._process: subprocess.Popen | None = None
        self.starts = 0
        home = folder / "home"
        for sub in ("home", "mnesia", "log"):
            (folder / sub).mkdir()
        cookie_file = home / ".erlang.cookie"
        cookie_file.write_text(cookie or secrets.token_hex(16).upper())
        cookie_file.chmod(0o400)
        (folder / "enabled_plugins").write_text("[].\n")
        (folder / "rabbitmq-env.conf").write_text("")
        (folder / "rabbitmq.conf").write_text("")
        (folder / "advanced.config").write_text(
            f"[{{rabbit, [{{quorum_tick_interval, {QUORUM_TICK_MS}}}]}}].\n")
        self.env = dict(
            os.environ, HOME=str(home), RABBITMQ_NODENAME=self.node,
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1", RABBITMQ_NODE_PORT=str(self.port),
            RABBITMQ_DIST_PORT=str(free_port()), RABBITMQ_MNESIA_BASE=str(folder / "mnesia"),
            RABBITMQ_LOG_BASE=str(folder / "log"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(folder / "enabled_plugins"),
            RABBITMQ_CONF_ENV_FILE=str(folder / "rabbitmq-env.conf"),
            RABBITMQ_CONFIG_FILE=str(folder / "rabbitmq.conf"),
            RABBITMQ_ADVANCED_CONFIG_FILE=str(folder / "advanced.config"),
            RABBITMQ_PID_FILE=str(folder / "rabbitmq.pid"), ERL_EPMD_ADDRESS="127.0.0.1",
            RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}",
        )

    def url(self, vhost: str = "/") -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/{vhost}"

    def ctl(self, *args: str) -> str:
        """Output of rabbitmqctl ARGS against this node (with its own cookie)."""
        return subprocess.run([str(RABBITMQ_BIN / "rabbitmqctl"), "-n", self.node, *args],
                              env=self.env, check=True, capture_output=True, text=True,
                              timeout=60).stdout

    def start(self) -> None:
        self.launch()
        self.wait_booted()

    def launch(self) -> None:
        """Start the node's process without waiting for it (a cluster boots its nodes
        side by side)."""
        self.starts += 1
        log = (self.folder / f"server-{self.starts}.log").open("w")
        self._process = subprocess.Popen([str(RABBITMQ_BIN / "rabbitmq-server")],
                                         env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        log.close()

    def wait_booted(self) -> None:
        wait_for(self._booted, timeout=120, interval=0.5,
                 message="the private RabbitMQ node to boot")

    def _booted(self) -> bool:
        if self._process is not None and self._process.poll() is not None:
            pytest.fail(f"the private RabbitMQ exited with {self._process.returncode}:\n"
                        + _tail(self.folder / f"server-{self.starts}.log"))
        try:
            self.ctl("-q", "await_startup", "--timeout", "5")
        except subprocess.SubprocessError:
            return False
        return True

    def stop(self) -> None:
        """A clean stop (`rabbitmqctl stop`), waiting for the node's process to end."""
        if self._process is None or self._process.poll() is not None:
            return
        with contextlib.suppress(subprocess.SubprocessError):
            self.ctl("-q", "stop")
        try:
            self._process.wait(60)
        except subprocess.TimeoutExpired:
            self.kill()

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def kill(self) -> None:
        """SIGKILL of the node's process group: a crash, nothing flushed or handed over."""
        if self._process is not None and self._process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._process.pid, signal.SIGKILL)
            self._process.wait(30)


class PrivatePostgres:
    """A PostgreSQL cluster of this test run alone (initdb, trust auth, a free port), with
    the pipeline's tables in database `relous`. PostgreSQL refuses to run as root: as root,
    its tools run as the `postgres` OS user (`runuser`), else as the current user."""

    def __init__(self, folder: Path) -> None:
        versions = sorted(POSTGRES_LIB.glob("*/bin/pg_ctl"),
                          key=lambda path: int(path.parent.parent.name))
        if not versions:
            pytest.fail(f"no pg_ctl under {POSTGRES_LIB}: install postgresql (`.ci/run` does)")
        self.bin = versions[-1].parent
        self.folder = folder
        self.data = folder / "data"
        self.port = free_port()
        self._user: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(folder, "postgres")
            self._user = ["runuser", "-u", "postgres", "--"]
        self._as_postgres("initdb", "-D", str(self.data), "--auth=trust", "-U", "postgres",
                          "-E", "UTF8", "--no-sync")

    def url(self, database: str = "relous") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _as_postgres(self, tool: str, *args: str, check: bool = True) -> None:
        result = subprocess.run([*self._user, str(self.bin / tool), *args],
                                capture_output=True, text=True, timeout=120, check=False)
        if check and result.returncode != 0:
            pytest.fail(f"{tool} {' '.join(args)} failed: {result.stderr.strip()}\n"
                        + _tail(self.folder / "server.log"))

    def _pg_ctl(self, action: str, *args: str) -> None:
        self._as_postgres("pg_ctl", action, "-D", str(self.data), "-w", "-t", "60",
                          "-l", str(self.folder / "server.log"), *args)

    def start(self) -> None:
        self._pg_ctl("start", "-o", f"-p {self.port} -k {self.folder} "
                                    "-c listen_addresses=127.0.0.1 -c fsync=off")

    def stop(self, mode: str = "fast") -> None:
        """`fast` aborts open transactions and closes every connection, as a restart does."""
        self._pg_ctl("stop", "-m", mode)

    def discard(self) -> None:
        """Stop at once whatever the state (the end of the test, passed or not)."""
        if (self.data / "postmaster.pid").exists():
            self._as_postgres("pg_ctl", "stop", "-D", str(self.data), "-m", "immediate",
                              "-w", check=False)

    def create_database(self) -> None:
        from shared.store.db import Database, upgrade

        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute("CREATE DATABASE relous")
        database = Database(self.url(), pool_size=1)
        try:
            upgrade(database)
        finally:
            database.close()


def _tail(log: Path, lines: int = 30) -> str:
    """The end of a server's log, for the failure message (its folder is removed after)."""
    try:
        return "".join(log.read_text(errors="replace").splitlines(keepends=True)[-lines:])
    except OSError:
        return f"(no {log.name})"


@pytest.fixture
def private_rabbitmq() -> Iterator[PrivateRabbitMQ]:
    """A running private RabbitMQ node; stopped (killed if need be) and removed after."""
    if not (RABBITMQ_BIN / "rabbitmq-server").exists():
        pytest.fail(f"{RABBITMQ_BIN}/rabbitmq-server not found: the restart test starts a "
                    "RabbitMQ node of its own (`.ci/run` installs rabbitmq-server)")
    folder = Path(tempfile.mkdtemp(prefix="relous-faults-rabbitmq-"))
    node = PrivateRabbitMQ(folder)
    try:
        node.start()
        yield node
    finally:
        node.stop()
        node.kill()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def private_cluster() -> Iterator[PrivateCluster]:
    """Three private RabbitMQ nodes, clustered, shared by a module's tests (booting them
    takes a while on two cores); killed and removed after. Each test uses its own virtual
    host, and restarts what it killed."""
    from tests.faults.cluster import PrivateCluster

    if not (RABBITMQ_BIN / "rabbitmq-server").exists():
        pytest.fail(f"{RABBITMQ_BIN}/rabbitmq-server not found: the cluster test starts "
                    "RabbitMQ nodes of its own (`.ci/run` installs rabbitmq-server)")
    cluster = PrivateCluster(Path(tempfile.mkdtemp(prefix="relous-faults-cluster-")))
    try:
        cluster.boot()
        yield cluster
    finally:
        cluster.discard()


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    """A running private PostgreSQL cluster with the pipeline's tables; removed after."""
    folder = Path(tempfile.mkdtemp(prefix="relous-faults-postgres-"))
    cluster = None
    try:
        cluster = PrivatePostgres(folder)
        cluster.start()
        cluster.create_database()
        yield cluster
    finally:
        if cluster is not None:
            cluster.discard()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def vhost() -> Iterator[str]:
    """A virtual host of the shared RabbitMQ for this test alone (its queues start empty)."""
    with fresh_vhost() as name:
        yield name


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Callable[..., Stack]]:
    """Start the Procfile's `web` and `worker`: `stack(broker_url=…, database_url=…)`
    (`kind=` a Stack subclass for another formation).
    Every process started, restarts included, is stopped at the end: tests ask for it
    after the broker and database fixtures, so that it is torn down before them."""
    started: list[Stack] = []

    def start(broker_url: str, database_url: str, concurrency: int = 3,
              kind: type[Stack] = Stack, **env: str) -> Stack:
        running = kind(broker_url, database_url, tmp_path / f"logs-{len(started)}",
                       concurrency=concurrency, **env)
        started.append(running)
        running.start()
        return running

    yield start
    for running in started:
        running.stop()
