"""`relous demo --storm`: a scenario replayed against the demo itself, reported from the
service's own records (no fake provider), with the chart written."""

from __future__ import annotations

import os
import subprocess

from tests.helpers import venv_bin
from tests.processes import free_port
from workers.cli.demo import DEMO_CAMPAIGN_NUMBER
from workers.replay.scenarios import load_scenario, timeline


def test_demo_storm_prints_the_class_table_and_writes_the_chart(tmp_path):
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("DATABASE_URL", "BROKER_URL", "VONAGE_", "RELOUS_",
                                  "SMS_"))}
    env["PATH"] = venv_bin() + os.pathsep + env["PATH"]
    chart = tmp_path / "chart.png"
    run = subprocess.run(["relous", "demo", "--storm", "sim-farm", "--speed", "4000",
                          "--port", str(free_port()), "--data-dir", str(tmp_path / "data"),
                          "--chart", str(chart)], env=env, cwd=tmp_path, capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    lines = run.stdout.splitlines()
    header = next(line for line in lines if line.startswith("class "))
    assert header.split()[:6] == ["class", "senders", "messages", "webhooks", "acked",
                                  "replies"]
    farm = next(line.split() for line in lines if line.startswith("farm"))
    assert farm[1] == "500" and farm[3] == farm[4], "every webhook acknowledged"
    assert "ordinary senders answered exactly once: 300/300 (100.0%)" in lines
    assert any(line.startswith("spend per malicious message: ") for line in lines)
    assert f"chart: {chart}" in lines
    assert chart.read_bytes().startswith(b"\x89PNG")
    numbers = {webhook.params["msisdn"]
               for webhook in timeline(load_scenario("sim-farm"), DEMO_CAMPAIGN_NUMBER, 2017)}
    shown = run.stdout + run.stderr
    assert not [number for number in numbers if number in shown], "a raw number printed"
