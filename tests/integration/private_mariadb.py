"""A MariaDB server of a test's own: its data folder, its port, stopped and started at will.

Fault tests stop and restart the database under a running writer; doing that
to the machine's shared server would disturb every other test, so each such
test gets a ``mariadbd`` of its own (``mariadb-install-db`` takes well under
a second). Root has an empty password, on 127.0.0.1 only.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass

MARIADBD = "/usr/sbin/mariadbd"


def free_tcp_port() -> int:
    """A TCP port nobody listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class PrivateMariaDB:
    """One private server: ``start``, ``stop`` (clean) and ``kill`` (-9)."""

    root: str
    port: int
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        """The SQLAlchemy URL of its ``centaure`` database."""
        return f"mysql+pymysql://root@127.0.0.1:{self.port}/centaure"

    def start(self, timeout: float = 30.0) -> None:
        """Start the server and wait until it answers."""
        log = open(os.path.join(self.root, "mariadbd.log"), "a")
        self.proc = subprocess.Popen(
            [MARIADBD, "--no-defaults", f"--datadir={self.root}/data", "--user=root",
             f"--port={self.port}", "--bind-address=127.0.0.1",
             f"--socket={self.root}/mariadbd.sock", f"--pid-file={self.root}/mariadbd.pid",
             "--skip-log-bin", "--innodb-buffer-pool-size=64M", "--skip-name-resolve"],
            stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + timeout
        while not self.answers():
            if self.proc.poll() is not None:
                raise RuntimeError(f"mariadbd exited: {self.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"mariadbd did not answer in {timeout}s: {self.log_tail()}")
            time.sleep(0.1)

    def answers(self) -> bool:
        """True when a client can run a query."""
        r = subprocess.run(["mariadb", "-h127.0.0.1", f"-P{self.port}", "-uroot", "-e",
                            "CREATE DATABASE IF NOT EXISTS centaure"],
                           capture_output=True, timeout=10)
        return r.returncode == 0

    def stop(self, timeout: float = 30.0) -> None:
        """A clean shutdown (SIGTERM), waited for."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout)
        self.proc = None

    def kill(self) -> None:
        """A crash: SIGKILL, no shutdown."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def log_tail(self, n: int = 15) -> str:
        """The end of the server's log, for failure messages."""
        try:
            with open(os.path.join(self.root, "mariadbd.log")) as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""


def private_mariadb(root: str) -> PrivateMariaDB:
    """Initialise a data folder under ``root`` and start a server on a free port."""
    os.makedirs(root, exist_ok=True)
    r = subprocess.run(["mariadb-install-db", "--no-defaults", f"--datadir={root}/data",
                        "--user=root", "--auth-root-authentication-method=normal",
                        "--skip-test-db"], capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise RuntimeError(f"mariadb-install-db failed: {r.stdout[-500:]} {r.stderr[-500:]}")
    server = PrivateMariaDB(root, free_tcp_port())
    server.start()
    return server
