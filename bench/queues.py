"""Queue-type benchmark: a quorum queue (the pipeline's, with its arguments) against a
classic durable queue, on the same RabbitMQ node in the same run.

    .venv/bin/python bench/queues.py [--messages 20000] [--publishers 4]

For each type: persistent messages published with publisher confirms by `--publishers`
threads, each on its own connection and waiting for each confirm (as the web does), then
consumed with a prefetch of 100 and acknowledged one by one (as a worker does). Prints the
rates and the ratio quorum / classic.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

from kombu import Connection, Exchange, Producer, Queue

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from shared.broker import quorum_arguments

HOST = "127.0.0.1:5672"
BODY = {"message_id": "B00000000", "msisdn": "33600000000", "to": "33700000001",
        "text": "Salut Julie, tu viens ?", "type": "text"}


def publish(url: str, queue: Queue, count: int) -> None:
    with Connection(url, transport_options={"confirm_publish": True}) as conn:
        producer = Producer(conn.default_channel)
        for _ in range(count):
            producer.publish(BODY, exchange=queue.exchange, routing_key=queue.routing_key,
                             delivery_mode=2, serializer="json", declare=[queue])


def consume(url: str, queue: Queue, count: int) -> None:
    received = 0

    def on_message(_body: object, message: object) -> None:
        nonlocal received
        message.ack()  # type: ignore[attr-defined]
        received += 1

    with Connection(url) as conn, conn.Consumer([queue], callbacks=[on_message],
                                                prefetch_count=100):
        while received < count:
            conn.drain_events(timeout=30)


def measure(url: str, queue: Queue, messages: int, publishers: int) -> tuple[float, float]:
    with Connection(url) as conn:
        queue.bind(conn.default_channel).declare()
    each = messages // publishers
    threads = [threading.Thread(target=publish, args=(url, queue, each))
               for _ in range(publishers)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    published = each * publishers / (time.monotonic() - started)
    started = time.monotonic()
    consume(url, queue, each * publishers)
    consumed = each * publishers / (time.monotonic() - started)
    return published, consumed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--publishers", type=int, default=4)
    args = parser.parse_args()
    vhost = f"relous_bench_queues_{uuid.uuid4().hex[:6]}"
    subprocess.run(["rabbitmqctl", "-q", "add_vhost", vhost], check=True)
    subprocess.run(["rabbitmqctl", "-q", "set_permissions", "-p", vhost, "guest", ".*", ".*",
                    ".*"], check=True)
    url = f"amqp://guest:guest@{HOST}/{vhost}"
    exchange = Exchange("bench", type="direct", durable=True)
    try:
        classic = measure(url, Queue("classic", exchange, routing_key="classic",
                                     durable=True), args.messages, args.publishers)
        quorum = measure(url, Queue("quorum", exchange, routing_key="quorum", durable=True,
                                    queue_arguments=quorum_arguments()),
                         args.messages, args.publishers)
    finally:
        subprocess.run(["rabbitmqctl", "-q", "delete_vhost", vhost], check=False)
    print(f"{'':8} {'confirmed publishes/s':>22} {'consumed+acked/s':>18}")
    print(f"{'classic':8} {classic[0]:>22.0f} {classic[1]:>18.0f}")
    print(f"{'quorum':8} {quorum[0]:>22.0f} {quorum[1]:>18.0f}")
    print(f"ratio quorum / classic: publish {quorum[0] / classic[0]:.2f}, "
          f"consume {quorum[1] / classic[1]:.2f} ({args.messages} messages, "
          f"{args.publishers} publishers)")


if __name__ == "__main__":
    main()
