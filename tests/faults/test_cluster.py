"""A three-node RabbitMQ cluster losing the node that leads the inbound quorum queue under
an ingest and processing load (issue 14). `web` and `worker` get all three nodes as
BROKER_URL (kombu's `;`-separated failover list); the nodes are private (see cluster.py).

The short variant kills one leader and runs with the suite; the full one kills the leader,
restarts it, then kills the new leader in turn: `RELOUS_CLUSTER_FULL=1 .venv/bin/python
-m pytest tests/faults/test_cluster.py`. During an election the web answers 503 (Vonage
retries, and so does the test), never 200 for a publish RabbitMQ did not confirm: the
audit finds every webhook answered 2xx recorded exactly once.
"""

from __future__ import annotations

import itertools
import os
import random
import re
import threading
import time
from collections.abc import Callable, Iterator
from decimal import Decimal

import pytest
import requests

from shared.broker import DEAD_LETTER_QUEUE, INBOUND_QUEUE, management_queue_depths
from tests.faults.audit import audit
from tests.faults.cluster import PrivateCluster
from tests.faults.stack import (
    Poster,
    Stack,
    create_campaign,
    inbound_stream,
    recover,
    retry_like_vonage,
    scenario_seed,
    sender_numbers,
)
from tests.helpers import RUN_ID, broker_url, wait_for, wait_until_idle

pytestmark = [pytest.mark.faults, pytest.mark.e2e]
FULL = os.environ.get("RELOUS_CLUSTER_FULL") == "1"


class TimedPoster(Poster):
    """A Poster that also notes when each webhook was sent and answered (monotonic)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.timeline: list[tuple[float, float, int]] = []
        self._timeline_lock = threading.Lock()

    def _post(self, params: dict[str, str]) -> None:
        sent = time.monotonic()
        code = self._stack.post(params)
        with self._timeline_lock:
            self.timeline.append((sent, time.monotonic(), code))
        with self._lock:
            self.answers.append((params, code))

    def accepted_between(self, start: float, end: float) -> int:
        """Webhooks answered 2xx within [start, end]."""
        with self._timeline_lock:
            return sum(200 <= code < 300 and start <= answered <= end
                       for _, answered, code in self.timeline)

    def longest_stall(self, start: float, end: float) -> float:
        """The longest time within [start, end] in which no webhook was answered 2xx: how
        long the pipeline could not take a message (an election, a reconnection)."""
        with self._timeline_lock:
            times = sorted(answered for _, answered, code in self.timeline
                           if 200 <= code < 300 and start <= answered <= end)
        points = [start, *times, end]
        return max(later - earlier for earlier, later in itertools.pairwise(points))


@pytest.fixture
def cluster_vhost(private_cluster: PrivateCluster) -> Iterator[str]:
    """A virtual host of the cluster for this test alone; its queues are declared by the
    apps, after the cluster formed, so they have a member on every node."""
    name = f"relous_cluster_{RUN_ID}_{random.SystemRandom().randrange(16**6):06x}"
    private_cluster.add_vhost(name)
    try:
        yield name
    finally:
        private_cluster.delete_vhost(name)


def test_queue_depths_read_the_virtual_host_of_a_failover_list(vhost):
    """RABBITMQ_MANAGEMENT_URL with a `;` list as BROKER_URL: the depths are the first
    URL's virtual host (all nodes of a cluster share it), not a path spanning the list."""
    management = os.environ.get("RELOUS_TEST_MANAGEMENT_URL", "http://127.0.0.1:15672")
    failover = f"{broker_url(vhost)};amqp://guest:guest@127.0.0.1:1/{vhost}"
    assert management_queue_depths(management, failover, [INBOUND_QUEUE]) == {
        INBOUND_QUEUE: 0}


@pytest.mark.parametrize("kills", [
    1, pytest.param(2, marks=pytest.mark.skipif(
        not FULL, reason="the full cluster scenario: RELOUS_CLUSTER_FULL=1"))])
def test_rabbitmq_cluster_loses_the_inbound_leader(kills, private_cluster, cluster_vhost, db,
                                                   fake_vonage, stack: Callable[..., Stack],
                                                   capsys):
    cluster, vhost = private_cluster, cluster_vhost
    seed = scenario_seed()
    rng = random.Random(seed)
    database_url = os.environ["DATABASE_URL"]
    number = create_campaign(database_url, delay=0, total_cap=Decimal("100"))
    running = stack(cluster.urls(vhost), database_url)  # ready: /readyz answered 200
    everyone = {node.node for node in cluster.nodes}
    wait_for(lambda: cluster.members(INBOUND_QUEUE, vhost, "online") == everyone,
             timeout=60, message="the inbound queue with a member on each node")
    assert requests.get(f"{running.base}/healthz", timeout=5).status_code == 200
    assert 'relous_queue_depth_messages{queue="relous.inbound"}' in requests.get(
        f"{running.base}/metrics", timeout=10).text
    worker_pid = running.worker.popen.pid
    numbers = sender_numbers(rng, 120)
    poster = TimedPoster(running, inbound_stream(rng, numbers, concat_share=0.05),
                         rate=30).start()
    new_leader_seen: list[float] = []
    stalls: list[float] = []
    confirmed_before_kill = 0
    refused_per_kill: list[int] = []
    try:
        for _ in range(kills):
            poster.wait_acked(rng.randint(40, 120), "before the kill")
            leader = wait_for(lambda: cluster.leader(INBOUND_QUEUE, vhost), timeout=30,
                              message="the inbound queue's leader")
            assert isinstance(leader, type(cluster.nodes[0]))
            refused_before = len(poster.refused())
            killed_at = time.monotonic()
            cluster.kill(leader)
            # Confirmed by the old leader's queue in its last second: the audit finds them.
            confirmed_before_kill += poster.accepted_between(killed_at - 1, killed_at)
            _, took = cluster.wait_new_leader(INBOUND_QUEUE, vhost, leader)
            new_leader_seen.append(round(took, 1))
            poster.wait_acked(20, "with a node down")
            stalls.append(round(poster.longest_stall(killed_at, time.monotonic()), 2))
            cluster.start(leader)
            wait_for(lambda: cluster.members(INBOUND_QUEUE, vhost, "online") == everyone,
                     timeout=90, message="the restarted node's member back online")
            poster.wait_acked(20, "after the rejoin")
            refused_per_kill.append(len(poster.refused()) - refused_before)
    finally:
        poster.finish()
    refused = poster.refused()
    refused_codes = {code for code in poster.codes() if not 200 <= code < 300}
    retry_like_vonage(running, refused)
    returned, lost = recover(running, lambda: wait_until_idle(vhost, timeout=180,
                                                              ctl=cluster.ctl))

    result = audit(db, fake_vonage, [params for params, _ in poster.answers], number,
                   running.logs(), numbers)
    worker_log = running.worker.output
    parked = db.execute("SELECT count(*) AS n FROM parked_messages").fetchone()["n"]
    dead = cluster.queue_info(DEAD_LETTER_QUEUE, vhost).get("messages")
    result.extra.update(
        nodes=len(cluster.nodes), kills=kills, leaders_killed=kills,
        answered_2xx=poster.acked, refused=len(refused),
        refused_503=poster.codes()[503],
        refused_per_kill="/".join(map(str, refused_per_kill)), stall_s="/".join(map(str, stalls)),
        new_leader_seen_s="/".join(map(str, new_leader_seen)),
        confirmed_before_kill=confirmed_before_kill,
        worker_reconnects=worker_log.count("Connection to broker lost"),
        dead_lettered=dead, parked=parked, returned=returned, unknown_after_crash=lost)
    result.report(capsys, "rabbitmq-cluster" if kills > 1 else "rabbitmq-cluster-1-kill",
                  seed)
    assert refused_codes <= {503}, "an election is a 503 (Vonage retries), nothing else"
    assert running.worker.popen.poll() is None and running.worker.popen.pid == worker_pid, \
        "the worker failed over without a restart"
    if result.extra["worker_reconnects"]:  # its node was killed: it moved to another
        assert len(set(re.findall(r"Connected to amqp://\S+@127\.0\.0\.1:(\d+)/",
                                  worker_log))) >= 2, "the worker reconnected to another node"
    assert (dead, parked) == (0, 0), "nothing dead-lettered or parked by the failovers"
    result.check()
    assert result.sms > 0
