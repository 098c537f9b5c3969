"""Three private RabbitMQ nodes clustered on this machine, for the failover test
(tests/faults/test_cluster.py): each node is a `PrivateRabbitMQ` (own name, ports, data
folder, plugins off, 127.0.0.1 only, the test run's `quorum_tick_interval`), and all three
share the cluster's own Erlang cookie, never the shared node's.

A node is crashed with `kill` (SIGKILL of its process group) and brought back with
`start`: it rejoins the cluster from its data folder, as a restarted server does.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import shutil
import subprocess
import time
from pathlib import Path

from tests.faults.conftest import PrivateRabbitMQ
from tests.helpers import wait_for

SIZE = 3


class PrivateCluster:
    """`SIZE` private nodes joined to the first one (`stop_app`, `join_cluster`,
    `start_app`). Queues declared after `boot` have a member on every node."""

    def __init__(self, folder: Path, size: int = SIZE) -> None:
        self.folder = folder
        cookie = secrets.token_hex(16).upper()
        self.nodes: list[PrivateRabbitMQ] = []
        for index in range(size):
            node_folder = folder / f"node{index + 1}"
            node_folder.mkdir()
            self.nodes.append(PrivateRabbitMQ(node_folder, cookie=cookie))
        self.kills = 0

    def boot(self) -> None:
        """Start every node side by side, then join the others to the first."""
        for node in self.nodes:
            node.launch()
        for node in self.nodes:
            node.wait_booted()
        seed = self.nodes[0]
        for node in self.nodes[1:]:
            node.ctl("-q", "stop_app")
            node.ctl("-q", "join_cluster", seed.node)
            node.ctl("-q", "start_app")
        wait_for(lambda: self.running_nodes() == {node.node for node in self.nodes},
                 timeout=60, interval=0.5, message="the three nodes to form a cluster")

    def discard(self) -> None:
        """Kill every node and remove the data (the end of the tests, passed or not)."""
        for node in self.nodes:
            node.kill()
        shutil.rmtree(self.folder, ignore_errors=True)

    # --- addresses and control ----------------------------------------------------------
    def urls(self, vhost: str) -> str:
        """BROKER_URL for all nodes: kombu's failover list (`;`-separated)."""
        return ";".join(node.url(vhost) for node in self.nodes)

    def live(self) -> list[PrivateRabbitMQ]:
        return [node for node in self.nodes if node.running]

    def ctl(self, *args: str) -> str:
        """rabbitmqctl ARGS against a live node (any of them: they share one view)."""
        for node in self.live():
            with contextlib.suppress(subprocess.SubprocessError):
                return node.ctl(*args)
        raise subprocess.SubprocessError(f"no live node answered rabbitmqctl {args}")

    def running_nodes(self) -> set[str]:
        """The cluster's running nodes, as a live node sees them."""
        try:
            out = self.ctl("-q", "eval", "io:format(\"~p\", [rabbit_nodes:all_running()]).")
        except subprocess.SubprocessError:
            return set()
        return {node.node for node in self.nodes if f"'{node.node}'" in out}

    def add_vhost(self, name: str) -> None:
        self.ctl("-q", "add_vhost", name)
        self.ctl("-q", "set_permissions", "-p", name, "guest", ".*", ".*", ".*")

    def delete_vhost(self, name: str) -> None:
        with contextlib.suppress(subprocess.SubprocessError):
            self.ctl("-q", "delete_vhost", name)

    # --- queues -----------------------------------------------------------------------
    def queue_info(self, queue: str, vhost: str) -> dict[str, str]:
        """`leader`, `members`, `online` and `messages` of a queue ({} when unknown)."""
        columns = ("name", "leader", "members", "online", "messages")
        try:
            out = self.ctl("-q", "list_queues", "-p", vhost, "--formatter", "json", *columns)
        except subprocess.SubprocessError:
            return {}
        for row in json.loads(out or "[]"):
            if row.get("name") == queue:
                return {key: row.get(key) for key in columns}
        return {}

    def leader(self, queue: str, vhost: str) -> PrivateRabbitMQ | None:
        """The live node that leads `queue` (None during an election)."""
        leader = self.queue_info(queue, vhost).get("leader")
        return next((node for node in self.live() if node.node == leader), None)

    def members(self, queue: str, vhost: str, key: str = "members") -> set[str]:
        """The queue's members (`key="online"`: those whose node runs)."""
        return set(self.queue_info(queue, vhost).get(key) or ())

    # --- faults -----------------------------------------------------------------------
    def kill(self, node: PrivateRabbitMQ) -> None:
        """Crash `node` (SIGKILL): its connections drop, its quorum members go silent."""
        node.kill()
        self.kills += 1

    def start(self, node: PrivateRabbitMQ) -> None:
        """Restart a killed node and wait until the cluster counts it running again."""
        node.start()
        wait_for(lambda: node.node in self.running_nodes(), timeout=90, interval=0.5,
                 message="the restarted node to rejoin the cluster")

    def wait_new_leader(self, queue: str, vhost: str, old: PrivateRabbitMQ,
                        timeout: float = 60) -> tuple[PrivateRabbitMQ, float]:
        """The queue's next leader once elected, and how long after now it was seen."""
        started = time.monotonic()
        leader = wait_for(
            lambda: (found := self.leader(queue, vhost)) is not None and found is not old
            and found, timeout=timeout, interval=0.1, message=f"a new leader of {queue}")
        assert isinstance(leader, PrivateRabbitMQ)
        return leader, time.monotonic() - started
