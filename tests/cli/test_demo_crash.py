"""`relous demo` killed with SIGKILL mid-storm and started again on the same data: every
webhook it answered 200 is recorded exactly once and nobody is answered twice.

The demo is the embedded default (SQLite, the embedded broker, the console provider) in
one command: the web in a child process, the worker and beat in the parent. The kill hits
the parent while webhooks stream in; the web child dies with it (parent-death signal).
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import sqlite3
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from shared.rules.phones import pseudonym
from tests.helpers import wait_for
from tests.processes import Process, free_port
from workers.cli.demo import DEMO_CAMPAIGN_NUMBER

SENDERS = 1500
REPLY_ID = re.compile(r"\[console\] reply (\d+) to ")


def start_demo(name: str, data: Path, port: int, env: dict[str, str], logs: Path) -> Process:
    demo = Process(name, ["relous", "demo", "--port", str(port), "--data-dir", str(data)],
                   env, logs, cwd=logs)
    wait_for(lambda: "demo ready on" in demo.output, timeout=90, message=f"{name} ready")
    return demo


def post_until_killed(port: int, demo: Process, kill_after: int) -> set[str]:
    """Post SENDERS webhooks (2 messages each, some resent); SIGKILL the demo once
    `kill_after` were acknowledged. Returns the message ids answered 200."""
    acked: set[str] = set()
    lock = threading.Lock()
    local = threading.local()
    rng = random.Random(1234)
    webhooks = []
    for sender in range(SENDERS):
        for part in range(2):
            webhooks.append({"msisdn": f"3361{sender:07d}", "to": DEMO_CAMPAIGN_NUMBER,
                             "messageId": f"crash{sender:06d}{part}", "type": "text",
                             "text": rng.choice(["salut", "t'es qui ?", "rappelle moi stp"]),
                             "message-timestamp": "2026-11-27 02:00:00"})
    webhooks += rng.sample(webhooks, 300)  # Vonage's resends

    def post(params: dict[str, str]) -> None:
        session = getattr(local, "session", None) or requests.Session()
        local.session = session
        try:
            ok = session.post(f"http://127.0.0.1:{port}/webhooks/inbound", data=params,
                              timeout=10).status_code == 200
        except requests.RequestException:
            return  # not answered 200: Vonage would retry; nothing is promised
        if ok:
            with lock:
                acked.add(params["messageId"])
                if len(acked) == kill_after:
                    os.kill(demo.popen.pid, signal.SIGKILL)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(post, webhooks))
    return acked


def test_kill_9_mid_storm_loses_nothing_answered_200_and_answers_nobody_twice(tmp_path):
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("DATABASE_URL", "BROKER_URL", "VONAGE_", "RELOUS_",
                                  "SMS_"))}
    data, port = tmp_path / "data", free_port()
    first = start_demo("demo-1", data, port, env, tmp_path)
    acked = post_until_killed(port, first, kill_after=1200)
    first.popen.wait(30)
    assert first.popen.returncode == -signal.SIGKILL
    # The web child died with its parent: the port is free again.
    wait_for(lambda: _port_is_free(port), timeout=30, message="the web child to die")
    assert 1200 <= len(acked) < 2 * SENDERS, "the kill happened mid-stream"

    second = start_demo("demo-2", data, port, env, tmp_path)
    try:
        database = data / "relous-demo.db"
        wait_for(lambda: acked <= _recorded(database), timeout=120,
                 message="every message answered 200 recorded after the restart")
        again = _post_again(port, senders=range(100))  # the first run answered most of them
        wait_for(lambda: again <= _recorded(database), timeout=60,
                 message="the messages posted after the restart")
        recorded = Counter(_recorded_list(database))
        replies = _replies_per_sender(database)
    finally:
        second.stop()
    missing = acked - set(recorded)
    twice = [key for key, count in recorded.items() if count > 1]
    answered_twice = [sender for sender, count in replies.items() if count > 1]
    printed = Counter(REPLY_ID.findall(first.output + second.output))
    print(f"demo-crash acked={len(acked)} recorded={len(recorded)} missing={len(missing)} "
          f"duplicates={len(twice)} senders_answered={len(replies)} "
          f"answered_twice={len(answered_twice)} console_lines={sum(printed.values())}")
    assert not missing
    assert not twice
    assert not answered_twice
    assert all(count == 1 for count in printed.values()), "a reply printed twice"
    # The restart kept the demo's keys: a sender is the same pseudonym in both runs (with
    # new keys, the senders writing again would be new people, answered a second time).
    key = json.loads((data / "keys.json").read_text())["RELOUS_SECRET_KEY"]
    ours = {pseudonym(f"3361{sender:07d}", key) for sender in range(SENDERS)}
    assert set(replies) <= ours
    assert replies, "the restarted demo went on answering"


def _post_again(port: int, senders: range) -> set[str]:
    """One more message from each of `senders`, answered 200; their ids."""
    acked = set()
    for sender in senders:
        params = {"msisdn": f"3361{sender:07d}", "to": DEMO_CAMPAIGN_NUMBER, "type": "text",
                  "messageId": f"crash{sender:06d}again", "text": "re",
                  "message-timestamp": "2026-11-27 02:30:00"}
        response = requests.post(f"http://127.0.0.1:{port}/webhooks/inbound", data=params,
                                 timeout=10)
        assert response.status_code == 200
        acked.add(params["messageId"])
    return acked


def _port_is_free(port: int) -> bool:
    try:
        requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
    except requests.ConnectionError:
        return True
    return False


def _recorded_list(database: Path) -> list[str]:
    with sqlite3.connect(database) as conn:
        return [row[0] for row in conn.execute(
            "SELECT dedup_key FROM inbound_messages WHERE dedup_key LIKE 'crash%'")]


def _recorded(database: Path) -> set[str]:
    return set(_recorded_list(database))


def _replies_per_sender(database: Path) -> Counter[str]:
    """Replies that went out or may have, per sender pseudonym."""
    with sqlite3.connect(database) as conn:
        return Counter(row[0] for row in conn.execute(
            "SELECT sender FROM replies WHERE status IN ('sent', 'delivered', 'sending',"
            " 'unknown')"))
