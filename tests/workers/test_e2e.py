"""End to end: the Procfile's `web` (gunicorn) and `worker` (celery) as real processes,
against the local RabbitMQ and PostgreSQL and the fake Vonage, fed signed webhooks."""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
import requests

from tests.helpers import (
    BROKER_HOST,
    VHOSTS,
    broker_url,
    inbound,
    sign,
    wait_for,
    wait_until_idle,
)
from tests.processes import Process, procfile_process
from tests.tcp_proxy import TcpProxy

pytestmark = pytest.mark.e2e
VHOST = VHOSTS["e2e"]
REPLY = "Cette personne ne veut pas vous parler. Merci de la laisser tranquille."
# Every sender number this module uses: none may appear in the processes' logs.
SENDERS = ("33611223344", "33655667788", "33699887766")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def broker_proxy() -> Iterator[TcpProxy]:
    host, port = BROKER_HOST.rsplit(":", 1)
    proxy = TcpProxy((host, int(port))).start()
    yield proxy
    proxy.cut()


@pytest.fixture(scope="module")
def services(tmp_path_factory, broker_proxy) -> Iterator[dict]:
    """gunicorn (`web`, reaching RabbitMQ through a proxy the tests can cut) and a celery
    `worker`, started from the Procfile's command lines."""
    logs = tmp_path_factory.mktemp("e2e-logs")
    port = _free_port()
    metric_files = tmp_path_factory.mktemp("prometheus-multiproc")
    env = dict(os.environ, PORT=str(port), WEB_CONCURRENCY="2", WORKER_CONCURRENCY="2",
               PROMETHEUS_MULTIPROC_DIR=str(metric_files))
    web = procfile_process("web", dict(env, BROKER_URL=broker_url(VHOST, broker_proxy.address)),
                           logs)
    worker = procfile_process("worker", dict(env, BROKER_URL=broker_url(VHOST)), logs)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _ready(base), timeout=60, interval=0.2, message="gunicorn ready")
        wait_for(lambda: " ready." in worker.output, timeout=60, interval=0.2,
                 message="celery worker ready")
        yield {"base": base, "web": web, "worker": worker, "logs": logs}
    finally:
        web.stop()
        worker.stop()


def _ready(base: str) -> bool:
    try:
        return requests.get(f"{base}/readyz", timeout=2).status_code == 200
    except (requests.ConnectionError, requests.Timeout):  # not listening, or still booting
        return False


def _post(services: dict, params: dict[str, str]) -> requests.Response:
    return requests.post(f"{services['base']}/webhooks/inbound", data=params, timeout=20)


def test_signed_webhook_gets_one_reply_and_retries_get_none(services, db, campaign,
                                                           fake_vonage):
    campaign("33700000001", reply=REPLY)
    first = sign(inbound(msisdn=SENDERS[0], message_id="E2E-FIRST"))
    assert _post(services, first).status_code == 200
    wait_for(lambda: fake_vonage.sent, message="the reply at the fake Vonage")
    [sms] = fake_vonage.sent
    assert (sms.to, sms.sender, sms.text) == (SENDERS[0], "33700000001", REPLY)

    for _ in range(5):  # Vonage retries the same webhook
        assert _post(services, first).status_code == 200
    second = sign(inbound(msisdn=SENDERS[0], message_id="E2E-SECOND", text="Allô ?"))
    assert _post(services, second).status_code == 200
    other = sign(inbound(msisdn=SENDERS[1], message_id="E2E-OTHER"))
    assert _post(services, other).status_code == 200
    wait_for(lambda: fake_vonage.sent_to(SENDERS[1]), message="the other sender's reply")
    wait_until_idle(VHOST)
    assert len(fake_vonage.sent_to(SENDERS[0])) == 1
    assert len(fake_vonage.sent_to(SENDERS[1])) == 1
    assert len(fake_vonage.sent) == 2
    count = db.execute("SELECT count(*) AS n FROM inbound_messages").fetchone()["n"]
    assert count == 3


def test_broker_outage_answers_503_then_the_retry_is_processed_once(
        services, db, campaign, fake_vonage, broker_proxy):
    campaign("33700000001", reply=REPLY)
    webhook = sign(inbound(msisdn=SENDERS[2], message_id="E2E-OUTAGE"))
    broker_proxy.cut()
    try:
        response = _post(services, webhook)
        assert response.status_code == 503
        assert requests.get(f"{services['base']}/readyz", timeout=10).status_code == 503
    finally:
        broker_proxy.restore()
    wait_until_idle(VHOST)
    assert db.execute("SELECT count(*) AS n FROM inbound_messages").fetchone()["n"] == 0
    assert fake_vonage.sent == []

    # Vonage retries; the web process reconnects to the broker that came back.
    wait_for(lambda: _post(services, webhook).status_code == 200, timeout=30, interval=0.5,
             message="the retried webhook accepted")
    wait_for(lambda: fake_vonage.sent, message="the reply after the outage")
    wait_until_idle(VHOST)
    assert len(fake_vonage.sent_to(SENDERS[2])) == 1
    rows = db.execute("SELECT dedup_key FROM inbound_messages").fetchall()
    assert [row["dedup_key"] for row in rows] == ["E2E-OUTAGE"]


BUSINESS = ("relous_inbound_messages_total", "relous_replies_total",
            "relous_spend_euros_total", "relous_replies_pending", "relous_storm_mode")


def test_every_web_process_reports_the_same_business_figures(services, db, campaign,
                                                            fake_vonage):
    """2 gunicorn workers and 2 Celery processes: whichever process answers the scrape,
    the business figures are the same, and spend is what the fake Vonage reported."""
    from prometheus_client.parser import text_string_to_metric_families

    number = campaign("33700000001", reply=REPLY)
    for index, sender in enumerate(("33600000101", "33600000102", "33600000103")):
        webhook = sign(inbound(msisdn=sender, message_id=f"E2E-METRICS-{index}"))
        assert _post(services, webhook).status_code == 200
    wait_for(lambda: len(fake_vonage.sent) == 3, message="three replies")
    wait_until_idle(VHOST)
    seen = set()
    for _ in range(12):  # a new connection each time: either gunicorn worker may answer
        text = requests.get(f"{services['base']}/metrics", timeout=10).text
        figures = tuple(sorted(
            (sample.name, tuple(sorted(sample.labels.items())), sample.value)
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if family.name + ("_total" if family.type == "counter" else "") in BUSINESS))
        seen.add(figures)
    assert len(seen) == 1, "every process reads the same figures"
    [figures] = seen
    spend = {labels: value for name, labels, value in figures
             if name == "relous_spend_euros_total"}
    assert Decimal(str(spend[(("campaign", number),)])) == fake_vonage.total_price
    replies = {labels: value for name, labels, value in figures
               if name == "relous_replies_total"}
    assert replies[(("campaign", number), ("status", "sent"))] == 3
    # Per-process figures of both gunicorn workers and both Celery processes, added up.
    per_process = {(family.name, tuple(sorted(sample.labels.items()))): sample.value
                   for family in text_string_to_metric_families(text)
                   for sample in family.samples}
    assert per_process[("relous_task_duration_seconds", (
        ("le", "+Inf"), ("task", "relous.process_inbound")))] >= 3
    assert per_process[("relous_webhook_requests", (
        ("code", "200"), ("endpoint", "inbound")))] >= 3


def test_a_real_prometheus_scrapes_and_every_query_returns_data(services, db, campaign,
                                                                fake_vonage, tmp_path):
    """Prometheus on loopback scrapes the running web process; every PromQL expression of
    the dashboard returns data, every alert expression parses and reads series that exist."""
    import json
    import shutil
    from datetime import UTC, datetime

    import yaml

    from shared.settings import Settings
    from shared.store.budgets import set_budget
    from shared.store.db import database_for
    from tests.fake_vonage import Behaviour
    from tests.helpers import ROOT

    number = campaign("33700000001", reply=REPLY)
    with database_for(Settings.from_env().database_url).transaction() as tx:
        set_budget(tx, number, datetime.now(UTC), daily=Decimal("10"))
    fake_vonage.script(Behaviour(status="1"))  # one throttled send: a provider error
    assert _post(services, sign(inbound(msisdn="33600000201", message_id="PROM-1"))).ok
    wait_for(lambda: db.execute("SELECT count(*) AS n FROM metric_counters"
                                " WHERE metric = 'provider_errors'").fetchone()["n"],
             message="the provider error counted")

    rules = tmp_path / "alerts.yml"
    shutil.copy(ROOT / "deploy" / "prometheus" / "alerts.yml", rules)
    port = _free_port()
    config = tmp_path / "prometheus.yml"
    target = services["base"].removeprefix("http://")
    config.write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(rules)],
        # RabbitMQ's own metrics too (its plugin, enabled by .ci/run), as the example
        # config scrapes them: the dashboard's broker panels read them.
        "scrape_configs": [{"job_name": "relous", "static_configs": [{"targets": [target]}]},
                           {"job_name": "rabbitmq",
                            "static_configs": [{"targets": ["127.0.0.1:15692"]}]}],
    }))
    prometheus = Process("prometheus", [
        shutil.which("prometheus") or "prometheus", f"--config.file={config}",
        f"--storage.tsdb.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
    ], dict(os.environ), tmp_path)
    api = f"http://127.0.0.1:{port}/api/v1"

    def query(expr: str) -> dict:
        answer = requests.get(f"{api}/query", params={"query": expr}, timeout=10).json()
        assert answer["status"] == "success", (expr, answer)
        return answer["data"]

    def scrapes() -> int:
        try:
            result = query("count_over_time(relous_storm_mode[5m])")["result"]
        except requests.ConnectionError:
            return 0
        return int(float(result[0]["value"][1])) if result else 0

    try:
        wait_for(lambda: scrapes() >= 2, timeout=60, interval=0.5, message="2 scrapes")
        for index in range(3):  # traffic between scrapes, so that rates have data
            seen = scrapes()
            _post(services, sign(inbound(msisdn=f"3360000030{index}",
                                         message_id=f"PROM-T{index}")))
            wait_for(lambda seen=seen: scrapes() > seen, timeout=30, interval=0.2,
                     message="one more scrape")
        dashboard = json.loads((ROOT / "deploy/grafana/anti-relous.json").read_text())
        for panel in dashboard["panels"]:
            for target_query in panel["targets"]:
                expr = target_query["expr"].replace("$campaign", ".*")
                assert query(expr)["result"], f"no data for {panel['title']!r}: {expr}"
        groups = yaml.safe_load(rules.read_text())["groups"]
        for rule in (rule for group in groups for rule in group["rules"]):
            query(rule["expr"])  # parses and evaluates
            for metric in set(re.findall(r"relous_[a-z_]+", rule["expr"])):
                assert query(metric)["result"], f"{rule['alert']} reads {metric}: no data"
        loaded = requests.get(f"{api}/rules", timeout=10).json()["data"]["groups"]
        assert {rule["name"] for group in loaded for rule in group["rules"]} == {
            rule["alert"] for group in groups for rule in group["rules"]}
    finally:
        prometheus.stop()


def test_no_raw_phone_number_in_the_logs(services):
    web, worker = services["web"], services["worker"]
    combined = web.output + worker.output
    assert "relous.process_inbound" in worker.output, "the worker log was captured"
    for number in SENDERS:
        assert number not in combined, f"a raw sender number appears in {Path(web.log_path).parent}"


def test_procfile_release_and_beat_lines_run(tmp_path):
    """`release` migrates (idempotently here) and `beat` starts and schedules the flush."""
    env = dict(os.environ, BROKER_URL=broker_url(VHOST),
               BEAT_SCHEDULE_FILE=str(tmp_path / "beat-schedule"))
    release = procfile_process("release", env, tmp_path)
    assert release.popen.wait(60) == 0, release.output
    beat: Process = procfile_process("beat", env, tmp_path)
    try:
        wait_for(lambda: "relous.flush_due_replies" in beat.output, timeout=30,
                 message="beat sending the flush")
    finally:
        beat.stop()


def test_honcho_brings_up_web_worker_and_beat(tmp_path, db, campaign, fake_vonage):
    """`honcho start web worker beat` from a checkout with the environment set (honcho stops
    every process when one exits, so the one-shot `release` runs before, not with them)."""
    import re

    campaign("33700000001", reply=REPLY)
    env = dict(os.environ, BROKER_URL=broker_url(VHOSTS["honcho"]), WORKER_CONCURRENCY="1",
               BEAT_SCHEDULE_FILE=str(tmp_path / "beat-schedule"))
    honcho = Process("honcho", ["honcho", "start", "-p", str(_free_port()), "web", "worker",
                                "beat"], env, tmp_path)
    try:
        port = wait_for(lambda: re.search(r"Listening at: http://0\.0\.0\.0:(\d+)",
                                          honcho.output), timeout=60,
                        message="gunicorn listening").group(1)
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: _ready(base), timeout=60, interval=0.2, message="web ready")
        wait_for(lambda: "relous.flush_due_replies" in honcho.output, timeout=60,
                 message="beat scheduling flushes")
        webhook = sign(inbound(msisdn=SENDERS[0], message_id="HONCHO-1"))
        assert requests.post(f"{base}/webhooks/inbound", data=webhook, timeout=20).ok
        wait_for(lambda: fake_vonage.sent_to(SENDERS[0]), message="the reply via honcho")
    finally:
        honcho.stop()
