"""What tests share besides fixtures: this run's names (database, virtual hosts), waiting on
a condition, the broker's queues, and Vonage webhooks signed the way Vonage signs them.

Nothing here touches the environment: `tests/conftest.py` sets it once, in
`pytest_configure`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from vonage import Auth

from shared.rules.messages import InboundSms
from shared.store.db import Transaction
from tests.fake_vonage import FakeVonageServer
from workers.inbound import InboundOutcome, Keys, judge_batch

ROOT = Path(__file__).resolve().parent.parent
RUN_ID = uuid.uuid4().hex[:8]
ADMIN_DATABASE_URL = os.environ.get(
    "RELOUS_TEST_ADMIN_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
BROKER_HOST = os.environ.get("RELOUS_TEST_BROKER_HOST", "127.0.0.1:5672")
TEST_DATABASE = f"relous_test_{RUN_ID}"
VHOSTS = {name: f"relous_{name}_{RUN_ID}" for name in ("test", "idle", "e2e", "honcho", "budget")}
SIGNATURE_SECRET = "test-signature-secret"
SECRET_KEY = "test-secret-key-0123456789"


def database_url(name: str) -> str:
    base = ADMIN_DATABASE_URL.rsplit("/", 1)[0]
    return f"{base}/{name}"


def broker_url(vhost: str, host: str = BROKER_HOST) -> str:
    return f"amqp://guest:guest@{host}/{vhost}"


def wait_for(predicate: Callable[[], object], timeout: float = 30.0,
             interval: float = 0.05, message: str = "condition") -> object:
    """Poll until `predicate()` is truthy; fail after `timeout` seconds (no blind sleeps)."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


FAKE_VONAGE = FakeVonageServer()

TABLES = ("traffic_rollups", "text_bands", "usual_texts", "alerts",
          "delivery_receipts", "reply_parts", "replies", "inbound_parts", "senders",
          "inbound_messages", "inbound_dedup", "evidence_messages", "budgets", "evidence",
          "campaigns", "sender_lists",
          "rate_buckets", "metric_counters", "parked_messages", "sending_halts")


def venv_bin() -> str:
    """Folder of this interpreter's scripts (gunicorn, celery, relous)."""
    return str(Path(sys.executable).parent)


def rabbitmqctl(*args: str) -> str:
    """Output of `rabbitmqctl ARGS` against the shared RabbitMQ node."""
    return subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, text=True,
                          timeout=60).stdout


# How often a quorum queue publishes its counts (RabbitMQ's `quorum_tick_interval`, 5 s by
# default): `list_queues` reads those, so with the default a queue that just received 200
# messages reads 0 for up to 5 s, and a wait for idle queues ended early. The test run sets
# it on the shared node and its private nodes (production keeps the default: dashboards
# need no finer figure).
QUORUM_TICK_MS = 200
QUORUM_TICK_EVAL = f"application:set_env(rabbit, quorum_tick_interval, {QUORUM_TICK_MS})."


def broker_messages(vhost: str, ctl: Callable[..., str] = rabbitmqctl) -> int:
    """Messages in the vhost's queues, ready plus unacknowledged: 0 means all work is done
    (tasks acknowledge late, after they ran and queued any follow-up). `ctl` runs
    rabbitmqctl against another node (the fault tests' private one). The counts are at
    most QUORUM_TICK_MS old; a call takes longer than that, so two zeros in a row are two
    ticks apart."""
    out = ctl("-q", "list_queues", "-p", vhost, "--no-table-headers", "messages_ready",
              "messages_unacknowledged")
    return sum(int(n) for line in out.splitlines() for n in line.split())


def wait_until_idle(vhost: str, timeout: float = 60.0,
                    ctl: Callable[..., str] = rabbitmqctl) -> None:
    """Wait until the broker holds no message of `vhost`, twice in a row."""
    wait_for(lambda: broker_messages(vhost, ctl) == 0 and broker_messages(vhost, ctl) == 0,
             timeout=timeout, interval=0.2, message=f"queues of {vhost} to drain")


def sign(params: dict[str, str], secret: str = SIGNATURE_SECRET,
         method: str = "sha256", timestamp: int | None = None) -> dict[str, str]:
    """Add `timestamp` and `sig` as Vonage would (HMAC, computed by the vonage SDK)."""
    signed = dict(params)
    signed["timestamp"] = str(timestamp if timestamp is not None else int(time.time()))
    signed["sig"] = Auth(api_key="k", signature_secret=secret,
                         signature_method=method).sign_params(dict(signed))
    return signed


def inbound(msisdn: str = "33612345621", to: str = "33700000001", text: str = "Salut",
            message_id: str | None = None, **extra: str) -> dict[str, str]:
    """An inbound-SMS webhook's fields, unsigned."""
    params = {
        "msisdn": msisdn, "to": to, "messageId": message_id or uuid.uuid4().hex[:16].upper(),
        "text": text, "type": "text", "keyword": text.split(" ")[0].upper(),
        "message-timestamp": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
        "api-key": "k",
    }
    params.update(extra)
    return params


def receipt(message_id: str, status: str = "delivered", price: str = "0.03330000",
            **extra: str) -> dict[str, str]:
    params = {
        "msisdn": "33612345621", "to": "33700000001", "network-code": "20801",
        "messageId": message_id, "price": price, "status": status, "scts": "2611251200",
        "err-code": "0", "api-key": "k",
        "message-timestamp": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
    }
    params.update(extra)
    return params


def record_inbound(tx: Transaction, sms: InboundSms, secret_key: str, now: datetime,
                   lexicon: tuple[str, ...] = (), evidence_key: str = "") -> InboundOutcome:
    """The inbound use case on one message."""
    [outcome] = judge_batch(tx, [sms], Keys(secret_key, evidence_key), now, lexicon)
    return outcome


def record_flood(tx: Transaction, campaign: str, number: str, prefix: str, secret_key: str,
                 evidence_key: str, now: datetime) -> None:
    """Eight insults from one number in a minute: the velocity rule blocks it and keeps
    its number as evidence (sealed with `evidence_key`)."""
    from shared.vonage.webhooks import parse_inbound

    for index in range(8):
        record_inbound(tx, parse_inbound(inbound(
            msisdn=number, to=campaign, message_id=f"{prefix}{index}",
            text=f"Réponds salope {index}")), secret_key, now, (), evidence_key)


def batch_request(params: dict[str, Any]) -> Any:
    """An inbound task as celery-batches hands it to `process_inbound`: from webhook fields
    (validated as the web does), or any raw payload."""
    from celery_batches import SimpleRequest

    from shared.vonage.webhooks import parse_inbound

    payload = parse_inbound(params).to_payload() if "messageId" in params else params
    return SimpleRequest(id=str(params.get("messageId") or params.get("message_id") or "x"),
                         name="relous.process_inbound",
                         args=(payload,), kwargs={}, delivery_info={}, hostname="test",
                         ignore_result=True, reply_to=None, correlation_id=None,
                         request_dict={})


def scrape(client: Any, **headers: str) -> dict[str, dict]:
    """/metrics of a Flask test client: family name -> {"type", "samples":
    {(sample name, labels...): value}}."""
    from prometheus_client.parser import text_string_to_metric_families

    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.data
    families = {}
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        name = family.name + ("_total" if family.type == "counter" else "")
        families[name] = {"type": family.type, "samples": {
            (sample.name, *sorted(sample.labels.items())): sample.value
            for sample in family.samples}}
    return families


def sample(families: dict, name: str, **labels: str) -> float:
    key = (name, *sorted(labels.items()))
    return families.get(name, {"samples": {}})["samples"].get(key)
