"""Ingest benchmark: signed inbound webhooks per second and p99 latency through gunicorn
with confirmed publishes (the real `web`, gthread workers), against the naive
confirmed-publish ceiling measured in the same run: a bare Flask endpoint that only
publishes the same payload with confirms (bench/bare_ingest.py), one request at a time
per gunicorn worker (sync workers). The same bare endpoint under the web's own settings
is printed too. Load from `wrk` (Debian package).

    .venv/bin/python bench/ingest.py [--seconds 20] [--connections 16]

No worker consumes during the run: the queue only fills (and is deleted at the end).
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode

import requests
from cryptography.fernet import Fernet

ROOT = Path(__file__).resolve().parent.parent
ADMIN_DB = os.environ.get("RELOUS_TEST_ADMIN_DATABASE_URL",
                          "postgresql://postgres@127.0.0.1:5432/postgres")


CEILING, WEB = "bare publish, naive", "relous web"
# The naive confirmed publish: one request at a time per gunicorn worker, each waiting for
# its confirm before the next (sync workers, the web's former setting).
NAIVE = ("--worker-class", "sync", "--threads", "1")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def signed_body(secret: str) -> str:
    from shared.vonage.webhooks import expected_signature

    params = {"msisdn": "33612345621", "to": "33700000001", "messageId": "BENCH0000001",
              "text": "Salut, tu réponds ?", "type": "text", "keyword": "SALUT",
              "message-timestamp": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
              "timestamp": str(int(time.time()))}
    params["sig"] = expected_signature(params, secret, "sha256")
    return urlencode(params)


def run_wrk(url: str, body: str, seconds: int, connections: int, folder: Path) -> dict:
    script = folder / "post.lua"
    script.write_text(
        'wrk.method = "POST"\n'
        f"wrk.body = {body!r}\n".replace("'", '"')
        + 'wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"\n'
        "done = function(summary, latency, requests)\n"
        '  io.write(string.format("p99_us %d\\n", latency:percentile(99)))\n'
        '  io.write(string.format("non2xx %d\\n", summary.errors.status))\n'
        "end\n")
    out = subprocess.run(["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "-s", str(script),
                          url], capture_output=True, text=True, check=True).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p99 = int(re.search(r"p99_us (\d+)", out).group(1)) / 1000
    errors = int(re.search(r"non2xx (\d+)", out).group(1))
    return {"rate": rate, "p99_ms": p99, "non2xx": errors}


def serve(app: str, env: dict[str, str], port: int, log: Path,
          extra: tuple[str, ...] = ()) -> subprocess.Popen:
    command = ["gunicorn", "--config", "deploy/gunicorn.conf.py", *extra, "--bind",
               f"127.0.0.1:{port}", app]
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log.open("w"),
                               stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
            return process
        except (requests.ConnectionError, requests.Timeout):  # still booting
            time.sleep(0.2)
    sys.exit(f"{app} did not start: see {log}")


def stop(process: subprocess.Popen) -> None:
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is missing: apt-get install wrk")
    run = secrets.token_hex(4)
    vhost = f"relous_bench_{run}"
    subprocess.run(["rabbitmqctl", "-q", "add_vhost", vhost], check=True)
    subprocess.run(["rabbitmqctl", "-q", "set_permissions", "-p", vhost, "guest", ".*", ".*",
                    ".*"], check=True)
    folder = Path(tempfile.mkdtemp(prefix="relous-bench-"))
    secret = "bench-" + run
    env = dict(os.environ, PATH=str(Path(sys.executable).parent) + os.pathsep
               + os.environ["PATH"], BROKER_URL=f"amqp://guest:guest@127.0.0.1:5672/{vhost}",
               DATABASE_URL=ADMIN_DB, VONAGE_SIGNATURE_SECRET=secret,
               RELOUS_SECRET_KEY=secrets.token_hex(16),
               RELOUS_EVIDENCE_KEY=Fernet.generate_key().decode(), LOG_LEVEL="WARNING",
               WEB_CONCURRENCY=os.environ.get("WEB_CONCURRENCY", "2"))
    body = signed_body(secret)
    results = {}
    try:
        for name, app, extra in (
                (CEILING, "bench.bare_ingest:create_app()", NAIVE),
                ("bare publish, threads", "bench.bare_ingest:create_app()", ()),
                (WEB, "ingest:create_app()", ())):
            port = free_port()
            process = serve(app, env, port, folder / f"{name.split()[0]}.log", extra)
            try:
                run_wrk(f"http://127.0.0.1:{port}/webhooks/inbound", body, 3,
                        args.connections, folder)  # warm-up
                results[name] = run_wrk(f"http://127.0.0.1:{port}/webhooks/inbound", body,
                                        args.seconds, args.connections, folder)
            finally:
                stop(process)
    finally:
        subprocess.run(["rabbitmqctl", "-q", "delete_vhost", vhost], check=False)
    for name, figures in results.items():
        print(f"{name:<24} {figures['rate']:>8.0f} req/s  p99 {figures['p99_ms']:>6.1f} ms"
              f"  non-2xx {figures['non2xx']}")
    ratio = results[WEB]["rate"] / results[CEILING]["rate"]
    print(f"ratio relous web / naive ceiling: {ratio:.2f}")


if __name__ == "__main__":
    main()
