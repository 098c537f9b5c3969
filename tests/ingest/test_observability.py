"""Alert rules, their unit tests and the Grafana dashboard, checked with the real tools
(`promtool` from Debian's `prometheus` package)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import pytest
import yaml

from tests.helpers import ROOT

PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
DASHBOARD = ROOT / "deploy" / "grafana" / "anti-relous.json"
PROMTOOL = shutil.which("promtool")
# CI always has promtool (.ci/run installs it): there a missing one fails the test.
needs_promtool = pytest.mark.skipif(PROMTOOL is None and "CI" not in os.environ,
                                    reason="promtool missing (bash .ci/run installs it)")


def alert_rules() -> list[dict]:
    groups = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def dashboard_queries() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [target["expr"] for panel in panels for target in panel["targets"]]


@needs_promtool
def test_promtool_checks_the_rules():
    result = subprocess.run(["promtool", "check", "rules", "alerts.yml"], cwd=PROMETHEUS_DIR,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout


@needs_promtool
def test_promtool_unit_tests_pass_and_cover_every_alert():
    result = subprocess.run(["promtool", "test", "rules", "alerts.test.yml"],
                            cwd=PROMETHEUS_DIR, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    tests = yaml.safe_load((PROMETHEUS_DIR / "alerts.test.yml").read_text())["tests"]
    firing, quiet = set(), set()
    for case in tests:
        for check in case["alert_rule_test"]:
            (firing if check["exp_alerts"] else quiet).add(check["alertname"])
    names = {rule["alert"] for rule in alert_rules()}
    assert names <= firing, f"alerts never shown firing: {names - firing}"
    assert names <= quiet, f"alerts never shown quiet: {names - quiet}"


def test_every_alert_has_a_summary_and_a_runbook_section():
    runbook = (ROOT / "deploy" / "README.md").read_text()
    anchors = {re.sub(r"[^a-z0-9]", "", line.lower()) for line in runbook.splitlines()
               if line.startswith("### ")}
    for rule in alert_rules():
        assert rule["annotations"]["summary"]
        anchor = rule["annotations"]["runbook"].split("#")[1]
        assert anchor in anchors, f"no runbook section for {rule['alert']}"


def test_dashboard_is_importable():
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 30
    variables = {var["name"]: var for var in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip() and target["refId"]
            assert target["datasource"]["uid"] == "${datasource}"
    titles = " ".join(panel["title"].lower() for panel in dashboard["panels"])
    for needed in ("verdict", "replies", "spend", "cap", "remaining", "queue", "storm",
                   "latency", "provider errors"):
        assert needed in titles, needed


def test_every_rabbitmq_metric_the_alerts_and_dashboard_use_is_one_rabbitmq_exposes():
    """The broker alerts read RabbitMQ's own names (its rabbitmq_prometheus plugin, which
    `.ci/run` enables on the local node): a misspelt one would never fire."""
    import requests

    try:
        exposed = requests.get("http://127.0.0.1:15692/metrics", timeout=5).text
    except requests.RequestException:
        if "CI" in os.environ:
            raise
        pytest.skip("RabbitMQ's prometheus plugin is off (bash .ci/run enables it)")
    exposed_names = set(re.findall(r"^# TYPE (\w+) ", exposed, re.MULTILINE))
    expressions = [rule["expr"] for rule in alert_rules()] + [
        target["expr"] for panel in json.loads(DASHBOARD.read_text())["panels"]
        for target in panel["targets"]]
    used = set(re.findall(r"\brabbitmq_\w+", " ".join(expressions)))
    assert used, "the broker signals are there"
    assert used <= exposed_names, f"not exposed by RabbitMQ: {used - exposed_names}"
