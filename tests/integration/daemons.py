"""Running Centaure's twistd daemons in tests: start, look at /health, stop or kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.conftest import ROOT

BIN = os.path.dirname(sys.executable)


class TwistdDaemon:
    """``twistd -n <plugin> -c <settings>`` as a subprocess, logging to a file."""

    def __init__(self, plugin: str, settings: Path, http_port: int = 0,
                 log_name: str | None = None) -> None:
        self.plugin = plugin
        self.settings = settings
        self.port = http_port
        self.log_path = settings.parent / (log_name or f"{plugin}.log")
        self.proc: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        """(Re)start the process."""
        log = open(self.log_path, "a")
        self.proc = subprocess.Popen(
            [f"{BIN}/twistd", "-n", "--pidfile=", self.plugin, "-c", str(self.settings)],
            cwd=self.settings.parent, stdout=log, stderr=subprocess.STDOUT,
            env=dict(os.environ, PYTHONPATH=ROOT))
        log.close()

    def logs(self) -> str:
        return self.log_path.read_text()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def health(self) -> tuple[int, dict]:
        """(HTTP status, body) of /health; (0, {}) while nothing listens."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=5) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())
        except OSError:
            return 0, {}

    def wait_log(self, text: str, timeout: float = 30) -> None:
        """Wait until ``text`` appears in the log (the daemon must stay alive)."""
        deadline = time.monotonic() + timeout
        while text not in self.logs():
            assert self.alive(), f"{self.plugin} died:\n{self.logs()[-3000:]}"
            assert time.monotonic() < deadline, f"{self.plugin}: no {text!r}:\n{self.logs()[-3000:]}"
            time.sleep(0.1)

    def wait_health(self, predicate, timeout: float = 30) -> dict:
        """Wait until ``predicate(status, body)`` holds; return the body."""
        deadline = time.monotonic() + timeout
        while True:
            assert self.alive(), f"{self.plugin} died:\n{self.logs()[-3000:]}"
            status, body = self.health()
            if predicate(status, body):
                return body
            assert time.monotonic() < deadline, \
                f"{self.plugin}: /health {status} {body}:\n{self.logs()[-3000:]}"
            time.sleep(0.1)

    def kill(self) -> None:
        """kill -9: no clean stop."""
        if self.alive():
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        """SIGTERM, waited for."""
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(30)
