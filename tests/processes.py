"""Starting the Procfile's processes (and the demo) as real subprocesses for tests."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import threading
from pathlib import Path

from tests.helpers import ROOT, venv_bin


def procfile_commands() -> dict[str, str]:
    commands = {}
    for line in (ROOT / "Procfile").read_text().splitlines():
        match = re.match(r"^([a-z]+):\s*(.+)$", line)
        if match:
            commands[match.group(1)] = match.group(2)
    return commands


class Process:
    """A subprocess whose combined output is collected (to a file and in memory)."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], log_dir: Path,
                 cwd: Path = ROOT) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        full_env = dict(env)
        full_env["PATH"] = venv_bin() + os.pathsep + env.get("PATH", os.environ["PATH"])
        full_env["PYTHONUNBUFFERED"] = "1"
        self._lines: list[str] = []
        self._lock = threading.Lock()
        self.popen = subprocess.Popen(command, cwd=cwd, env=full_env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True,
                                      start_new_session=True)
        self._collector = threading.Thread(target=self._collect, daemon=True)
        self._collector.start()

    def _collect(self) -> None:
        assert self.popen.stdout is not None
        with self.log_path.open("w") as log:
            for line in self.popen.stdout:
                log.write(line)
                log.flush()
                with self._lock:
                    self._lines.append(line)

    @property
    def output(self) -> str:
        with self._lock:
            return "".join(self._lines)

    def stop(self, timeout: float = 30) -> None:
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(10)
        self._collector.join(10)
        if self.popen.stdout is not None and not self._collector.is_alive():
            self.popen.stdout.close()


def procfile_process(name: str, env: dict[str, str], log_dir: Path,
                     label: str | None = None) -> Process:
    """Run the Procfile's own command line for `name` under bash, as a platform would.

    `label` names the log file when one process type is started more than once (restarts).
    """
    return Process(label or name, ["bash", "-c", procfile_commands()[name]], env, log_dir)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (tests never use fixed ports: runs share the host)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
