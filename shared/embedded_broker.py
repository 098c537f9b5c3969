"""The embedded broker (`BROKER_URL` unset): a kombu virtual transport over one SQLite file.

kombu has two file-backed transports and neither keeps a webhook answered 200 through a
crash. The filesystem transport deletes a message's file when it hands it to the consumer,
so a `kill -9` loses every message prefetched and not yet recorded; it also reads files the
web is still writing (the worker stops on a JSONDecodeError) and lists the whole folder for
each message (a backlog of 20,000 drains at about 10 a second). The SQLAlchemy transport
hides a message on delivery and never shows it again after a crash.

Here a message is a row of `messages` in `RELOUS_BROKER_DIR/queue.sqlite3`:
- published by an INSERT committed with `synchronous=FULL` before the publish returns (the
  embedded publisher confirm: the web answers 200 only after it);
- claimed by the consuming process (its pid and start time), a few rows at a time;
- deleted when acknowledged, unclaimed when rejected with requeue or when the channel
  closes with it unacknowledged;
- claims of a process that is gone are released at the next consumer's start and every
  few seconds while the queues are idle, so a message is delivered until acknowledged.
Several processes of one machine may publish and consume: SQLite serialises the writes.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from collections import deque
from pathlib import Path
from queue import Empty
from typing import Any, ClassVar

from kombu.transport import TRANSPORT_ALIASES, virtual

log = logging.getLogger(__name__)

SCHEME = "embedded"
FILE_NAME = "queue.sqlite3"
# Rows claimed per read: enough for a batch to fill without a write per message.
CLAIM_AT_MOST = 100
# How long an idle consumer waits between two looks at the queues.
POLLING_INTERVAL_SECONDS = 0.02
RELEASE_EVERY_SECONDS = 5.0
SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    queue TEXT NOT NULL,
    payload TEXT NOT NULL,
    claimed_by TEXT
);
CREATE INDEX IF NOT EXISTS messages_ready ON messages (queue, claimed_by, id);
"""


def register() -> None:
    """Make `embedded://` name this transport (kombu resolves schemes by alias)."""
    TRANSPORT_ALIASES.setdefault(SCHEME, f"{__name__}:Transport")


def _start_time(pid: int) -> str | None:
    """The kernel's start time of `pid` (Linux), so that a reused pid is not taken for the
    process that claimed; None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    except OSError:
        return "?"
    return stat.rsplit(")", 1)[1].split()[19]


def process_token(pid: int | None = None) -> str:
    pid = os.getpid() if pid is None else pid
    return f"{pid}:{_start_time(pid) or '?'}"


def is_alive(token: str) -> bool:
    """Whether the process that claimed with `token` still runs (a token that is not ours,
    e.g. a file edited by hand, counts as a dead process's: its rows come back)."""
    pid_text, _, started = token.partition(":")
    try:
        pid = int(pid_text)
    except ValueError:
        return False
    if pid <= 0:
        return False
    if not Path("/proc").is_dir():  # not Linux: the pid alone
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return _start_time(pid) == started


class Store:
    """The SQLite file of one folder, shared by the process's channels: a few connections
    taken in turn (the demo's web runs a thread per request: a connection per thread
    would be opened per webhook), and one lock so that the process's writers take turns
    instead of sleeping in SQLite's busy handler (up to 100 ms a time). Other processes
    still meet that handler."""

    _by_path: ClassVar[dict[str, Store]] = {}
    _by_path_guard = threading.Lock()

    @classmethod
    def for_folder(cls, folder: str) -> Store:
        path = str(Path(folder).resolve() / FILE_NAME)
        with cls._by_path_guard:
            store = cls._by_path.get(path)
            if store is None or store.pid != os.getpid():
                store = cls._by_path[path] = cls(path)
            return store

    def __init__(self, path: str) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.pid = os.getpid()
        self._idle: list[sqlite3.Connection] = []
        self._write_lock = threading.Lock()
        self.write_script(SCHEMA)
        self._adopt_file_queue(Path(path).parent / "queue")

    def _adopt_file_queue(self, folder: Path) -> None:
        """Messages kombu's filesystem transport (the embedded broker before this one) left
        in FOLDER/*.msg join the table in the order it read them (by name: its time stamp,
        in milliseconds), then their files go: an upgrade loses none. A crash in between
        imports them again: the pipeline deduplicates."""
        files = sorted(folder.glob("*.msg")) if folder.is_dir() else []
        if not files:
            return
        rows = [(file.name[:-len(".msg")].split(".", 1)[1], file.read_text(errors="replace"))
                for file in files]
        with self._write_lock:
            conn = self._connect()
            try:
                with conn:
                    conn.executemany("INSERT INTO messages (queue, payload) VALUES (?, ?)", rows)
            finally:
                conn.close()
        for file in files:
            file.unlink()
        log.warning("embedded broker: %s message(s) of the former file queue adopted", len(rows))

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None,
                               check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        return conn

    def write_script(self, script: str) -> None:
        with self._write_lock:
            conn = self._connect()
            try:
                conn.executescript(script)
            finally:
                conn.close()

    def write(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """One statement in its own transaction, committed (and synced) on return."""
        with self._write_lock:
            conn = self._idle.pop() if self._idle else self._connect()
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    rows = conn.execute(sql, params).fetchall()
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
            except BaseException:
                conn.close()
                raise
            self._idle.append(conn)
        return rows

    def read(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        return self.write(sql, params)


class QoS(virtual.QoS):
    """Acknowledgements are rows deleted; a requeue or a closing channel unclaims."""

    def ack(self, delivery_tag: int) -> None:
        self.channel.store.write("DELETE FROM messages WHERE id = ?", (delivery_tag,))
        super().ack(delivery_tag)

    def reject(self, delivery_tag: int, requeue: bool = False) -> None:
        if requeue:
            self.channel.release([delivery_tag])
        else:
            self.channel.store.write("DELETE FROM messages WHERE id = ?", (delivery_tag,))
        self._quick_ack(delivery_tag)

    def restore_unacked(self) -> list[Any]:
        self._flush()
        tags = list(self._delivered)
        self._delivered.clear()
        self.channel.release(tags)
        return []


class Channel(virtual.Channel):
    QoS = QoS

    def __init__(self, connection: Any, **kwargs: Any) -> None:
        super().__init__(connection, **kwargs)
        options = connection.client.transport_options
        self.store = Store.for_folder(options.get("data_folder", ".relous/broker"))
        self.token = process_token()
        self._claimed: dict[str, deque[tuple[int, str]]] = {}
        self._last_release = 0.0

    def basic_consume(self, queue: str, *args: Any, **kwargs: Any) -> Any:
        """A consumer first frees what dead processes had claimed."""
        self.release_dead_claims()
        return super().basic_consume(queue, *args, **kwargs)

    def _put(self, queue: str, message: dict[str, Any], **kwargs: Any) -> None:
        self.store.write("INSERT INTO messages (queue, payload) VALUES (?, ?)",
                         (queue, json.dumps(message)))

    def _get(self, queue: str) -> dict[str, Any]:
        claimed = self._claimed.setdefault(queue, deque())
        if not claimed:
            limit = min(CLAIM_AT_MOST, self.qos.can_consume_max_estimate() or CLAIM_AT_MOST)
            rows = self.store.write(
                "UPDATE messages SET claimed_by = ? WHERE id IN (SELECT id FROM messages"
                " WHERE queue = ? AND claimed_by IS NULL ORDER BY id LIMIT ?)"
                " RETURNING id, payload", (self.token, queue, max(limit, 1)))
            claimed.extend(sorted(rows))
        if not claimed:
            if time.monotonic() - self._last_release > RELEASE_EVERY_SECONDS:
                self.release_dead_claims()
            raise Empty()
        while claimed:
            row_id, payload = claimed.popleft()
            message = self._readable(queue, row_id, payload)
            if message is not None:
                return message
        raise Empty()

    def _readable(self, queue: str, row_id: int, payload: str) -> dict[str, Any] | None:
        """The message of a row, or None after setting aside a row that cannot be one (the
        file edited by hand, a disk fault, another program): a worker that met it would
        stop, and stop again at each restart. It moves to `QUEUE.unreadable`, which no
        one consumes, and an error names it."""
        try:
            message: dict[str, Any] = json.loads(payload)
            message["properties"]["delivery_tag"] = row_id
            self.Message(message, channel=self)  # decodes the body as delivery will
        except Exception as error:  # anything a row holds must not stop the worker
            self.store.write("UPDATE messages SET queue = ?, claimed_by = NULL WHERE id = ?",
                             (f"{queue}.unreadable", row_id))
            log.error("embedded broker: message %s of %s is unreadable (%s); set aside as "
                      "%s.unreadable in %s", row_id, queue, type(error).__name__, queue,
                      self.store.path)
            return None
        return message

    def _size(self, queue: str) -> int:
        """Every message of the queue, the claimed ones too (what RabbitMQ calls ready plus
        unacknowledged): a backlog held by a worker is still a backlog."""
        return int(self.store.read("SELECT count(*) FROM messages WHERE queue = ?",
                                   (queue,))[0][0])

    def _purge(self, queue: str) -> int:
        return len(self.store.write("DELETE FROM messages WHERE queue = ? AND claimed_by"
                                    " IS NULL RETURNING id", (queue,)))

    def _delete(self, queue: str, *args: Any, **kwargs: Any) -> None:
        self._purge(queue)

    def release(self, row_ids: list[int]) -> None:
        """Give rows back to the queue, in their original order (ids only grow)."""
        if row_ids:
            marks = ",".join("?" * len(row_ids))
            self.store.write("UPDATE messages SET claimed_by = NULL"  # noqa: S608 (only marks)
                             f" WHERE id IN ({marks})", tuple(row_ids))

    def release_dead_claims(self) -> None:
        self._last_release = time.monotonic()
        owners = [token for (token,) in self.store.read(
            "SELECT DISTINCT claimed_by FROM messages WHERE claimed_by IS NOT NULL")]
        for token in owners:
            if token != self.token and not is_alive(token):
                self.store.write("UPDATE messages SET claimed_by = NULL WHERE claimed_by = ?",
                                 (token,))

    def close(self) -> None:
        """Unacknowledged and claimed-but-undelivered rows go back to the queue."""
        pending = [row_id for rows in self._claimed.values() for row_id, _ in rows]
        self._claimed.clear()
        if pending and not self.closed:
            self.release(pending)
        super().close()


class Transport(virtual.Transport):
    Channel = Channel
    # One broker state (exchanges, bindings) per process, as kombu's file transport.
    global_state = virtual.BrokerState()
    polling_interval = POLLING_INTERVAL_SECONDS
    default_port = 0
    driver_type = driver_name = SCHEME
    implements = virtual.Transport.implements.extend(
        asynchronous=False, exchange_type=frozenset(["direct", "topic", "fanout"]))

    def __init__(self, client: Any, **kwargs: Any) -> None:
        super().__init__(client, **kwargs)
        self.state = self.global_state

    @property
    def default_connection_params(self) -> dict[str, Any]:
        return {"port": self.default_port}  # no host: the file is the broker

    def driver_version(self) -> str:
        return sqlite3.sqlite_version
