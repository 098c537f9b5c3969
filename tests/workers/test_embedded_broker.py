"""The embedded broker (shared/embedded_broker.py): a message is delivered until it is
acknowledged, whatever happens to the process that held it."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

from kombu import Connection, Exchange, Queue

from shared import embedded_broker
from tests.helpers import wait_for

EXCHANGE = Exchange("relous", type="direct", durable=True)
QUEUE = Queue("relous.inbound", EXCHANGE, routing_key="relous.inbound", durable=True)


def connect(folder) -> Connection:
    embedded_broker.register()
    return Connection("embedded://", transport_options={"data_folder": str(folder)})


def publish(folder, count: int) -> None:
    with connect(folder) as conn:
        producer = conn.Producer()
        for number in range(count):
            producer.publish({"n": number}, exchange=EXCHANGE, routing_key="relous.inbound",
                             declare=[QUEUE])


def consume(folder, count: int, ack: bool = True) -> list[int]:
    got: list[int] = []
    with connect(folder) as conn, conn.Consumer(
            QUEUE, callbacks=[lambda body, message: (got.append(body["n"]),
                                                     ack and message.ack())]):
        while len(got) < count:
            conn.drain_events(timeout=5)
    return got


def depth(folder) -> int:
    with connect(folder) as conn:
        return QUEUE.bind(conn.default_channel).queue_declare().message_count


def test_messages_come_out_in_order_once_and_leave_when_acknowledged(tmp_path):
    publish(tmp_path, 50)
    assert depth(tmp_path) == 50
    assert consume(tmp_path, 50) == list(range(50))
    assert depth(tmp_path) == 0


def test_unacknowledged_messages_of_a_closed_channel_come_back(tmp_path):
    publish(tmp_path, 10)
    assert consume(tmp_path, 4, ack=False) == [0, 1, 2, 3]
    assert consume(tmp_path, 10) == list(range(10))


def test_a_consumer_killed_with_sigkill_loses_nothing(tmp_path):
    """The kombu file transports lose what a killed consumer held; this one gives it back
    to the next consumer, the acknowledged ones excepted."""
    publish(tmp_path, 30)
    script = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(embedded_broker.__file__).rsplit('/shared/', 1)[0]!r})
        from tests.workers.test_embedded_broker import connect, QUEUE
        got = []
        with connect({str(tmp_path)!r}) as conn:
            ch = conn.channel(); ch.basic_qos(0, 20, False)
            def take(body, message):
                got.append(body["n"])
                if body["n"] < 5:
                    message.ack()
            with conn.Consumer(QUEUE, channel=ch, callbacks=[take]):
                while len(got) < 20:
                    conn.drain_events(timeout=5)
                print("holding", flush=True)
                time.sleep(600)
    """)
    holder = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                              text=True)
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == "holding"
    holder.send_signal(signal.SIGKILL)
    holder.wait(10)
    assert depth(tmp_path) == 25  # 5 acknowledged; 15 held by the dead process; 10 ready
    assert sorted(consume(tmp_path, 25)) == list(range(5, 30))


def test_a_live_consumer_keeps_its_claims(tmp_path):
    publish(tmp_path, 6)
    with connect(tmp_path) as holder:
        channel = holder.channel()
        channel.basic_qos(0, 3, False)
        held: list[int] = []
        with holder.Consumer(QUEUE, channel=channel,
                             callbacks=[lambda body, message: held.append(body["n"])]):
            wait_for(lambda: holder.drain_events(timeout=1) or len(held) >= 3, timeout=10)
            assert consume(tmp_path, 3) == [3, 4, 5]  # another consumer: the rest only


def test_an_unreadable_row_is_set_aside_not_a_stop(tmp_path, caplog):
    """A row that is not a message (a hand edit, a disk fault) would stop the worker at
    each start; it is moved to `QUEUE.unreadable` with an error, and the rest flows."""
    publish(tmp_path, 2)
    store = embedded_broker.Store.for_folder(str(tmp_path))
    store.write("UPDATE messages SET payload = 'not json' WHERE id = 1")
    store.write("INSERT INTO messages (queue, payload) VALUES ('relous.inbound', ?)",
                ('{"body": "abc", "properties": {"body_encoding": "base64"}}',))
    publish(tmp_path, 1)
    assert consume(tmp_path, 2) == [1, 0]
    aside = store.read("SELECT id FROM messages WHERE queue = 'relous.inbound.unreadable'")
    assert len(aside) == 2
    assert "is unreadable" in caplog.text


def test_a_claim_token_that_is_not_a_process_is_released(tmp_path):
    publish(tmp_path, 3)
    store = embedded_broker.Store.for_folder(str(tmp_path))
    store.write("UPDATE messages SET claimed_by = 'garbage' WHERE id = 1")
    store.write("UPDATE messages SET claimed_by = ':' WHERE id = 2")
    assert sorted(consume(tmp_path, 3)) == [0, 1, 2]


def test_messages_left_by_the_former_file_queue_are_adopted(tmp_path):
    """Upgrading from kombu's filesystem transport (the former embedded broker) loses
    nothing it held."""
    queue_folder = tmp_path / "queue"
    queue_folder.mkdir()
    options = {"data_folder_in": str(queue_folder), "data_folder_out": str(queue_folder),
               "processed_folder": str(tmp_path / "processed")}
    with Connection("filesystem://", transport_options=options) as old:
        producer = old.Producer()
        for number in range(5):
            producer.publish({"n": number}, exchange=EXCHANGE, routing_key="relous.inbound",
                             declare=[QUEUE])
    assert len(list(queue_folder.glob("*.msg"))) == 5
    # Its order within one millisecond was the files' random ids: only the set is owed.
    assert sorted(consume(tmp_path, 5)) == [0, 1, 2, 3, 4]
    assert not list(queue_folder.glob("*.msg"))
