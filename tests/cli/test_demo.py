"""The README's first command: `relous demo` on the embedded default, driven by the curl
it prints. No RabbitMQ, PostgreSQL or Vonage is involved."""

from __future__ import annotations

import os
import socket
import subprocess

from tests.helpers import wait_for
from tests.processes import Process
from workers.cli.demo import DEMO_SENDER_NUMBER


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_demo_prints_a_curl_whose_sms_gets_a_console_reply(tmp_path):
    env = {key: value for key, value in os.environ.items()
           if key not in {"DATABASE_URL", "BROKER_URL", "SMS_PROVIDER", "RELOUS_SECRET_KEY",
                          "RELOUS_EVIDENCE_KEY", "VONAGE_SIGNATURE_SECRET"}}
    port = _free_port()
    demo = Process("demo", ["relous", "demo", "--port", str(port), "--data-dir",
                            str(tmp_path / "data")], env, tmp_path, cwd=tmp_path)
    try:
        ready = wait_for(lambda: next((line for line in demo.output.splitlines()
                                       if "demo ready on" in line), None),
                         timeout=60, message="the ready line")
        curl = ready.split("Try: ", 1)[1].strip()
        assert curl.startswith("curl ")
        answer = subprocess.run(["bash", "-c", curl], capture_output=True, text=True,
                                timeout=30, check=True)
        assert '"status":"queued"' in answer.stdout
        wait_for(lambda: "[console] reply" in demo.output, timeout=60,
                 message="the console provider's reply")
        reply_line = next(line for line in demo.output.splitlines() if "[console] reply" in line)
        assert "336••••••78" in reply_line
        quiet = [line for line in demo.output.splitlines()
                 if line.strip() and "[console] reply" not in line and line != ready]
        assert quiet == [], "quiet: one ready line, one line per reply"
        logs = demo.output.replace(curl, "")
        assert DEMO_SENDER_NUMBER not in logs, "only the sample curl shows the example number"
        assert (tmp_path / "data" / "relous-demo.db").exists()
    finally:
        demo.stop()
