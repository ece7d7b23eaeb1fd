"""A throw-away 3-node RabbitMQ cluster beside the main broker, for failover tests.

Each node is one ``rabbitmq-server`` with its own node name, AMQP and
distribution ports, data, log, config and pid files, all under one folder
owned by the ``rabbitmq`` user (the server drops to that user and shares the
main broker's Erlang cookie). The nodes run in the foreground, each in its
own session, so that a test can kill (-9), freeze (SIGSTOP) and resume
(SIGCONT) one node's Erlang VM; the VM's pid comes from the node's pid file.

``python -m tests.cluster DIR`` starts one by hand and prints its URLs
(Ctrl-C stops it): handy for the bench and for trying things out.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"
USER = "rabbitmq"


class ClusterError(RuntimeError):
    """The cluster could not be started (the message says why)."""


def free_port() -> int:
    """A TCP port nobody listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ctl(node: str, *args: str, timeout: float = 120) -> str:
    """``rabbitmqctl -n node args``; raise ``ClusterError`` with its stderr on failure."""
    r = subprocess.run(["rabbitmqctl", "-q", "-n", node, *args], capture_output=True,
                       text=True, timeout=timeout)
    if r.returncode != 0:
        raise ClusterError(f"rabbitmqctl -n {node} {' '.join(args)} failed: "
                           f"{(r.stderr or r.stdout).strip()[-800:]}")
    return r.stdout


class Node:
    """One RabbitMQ node of the cluster."""

    def __init__(self, root: Path, name: str) -> None:
        self.name = name
        self.port = free_port()
        self.dist_port = free_port()
        self.base = root / name.split("@")[0]
        self.proc: subprocess.Popen | None = None
        self.frozen = False

    @property
    def url(self) -> str:
        """The AMQP URL of this node (guest, allowed from localhost)."""
        return f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"

    @property
    def pid_file(self) -> Path:
        return self.base / "node.pid"

    def _env(self) -> dict:
        env = dict(os.environ)
        env.update({
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.base / "log"),
            "RABBITMQ_CONFIG_FILE": str(self.base / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.base / "enabled_plugins"),
            "RABBITMQ_PID_FILE": str(self.pid_file),
            "RABBITMQ_FEATURE_FLAGS_FILE": str(self.base / "feature_flags"),
        })
        return env

    def prepare(self) -> None:
        """Write the node's files (once)."""
        for d in ("mnesia", "log"):
            (self.base / d).mkdir(parents=True, exist_ok=True)
        (self.base / "rabbitmq.conf").write_text(
            f"listeners.tcp.1 = 127.0.0.1:{self.port}\n")
        (self.base / "enabled_plugins").write_text("[].\n")

    def start(self) -> None:
        """Start the server process (the node is up once ``wait_up`` returns)."""
        if self.pid_file.exists():
            self.pid_file.unlink()
        log = open(self.base / "console.log", "ab")
        self.proc = subprocess.Popen(
            ["su", USER, "-s", "/bin/sh", "-c", f"exec {SERVER}"],
            env=self._env(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            cwd=str(self.base), start_new_session=True)
        log.close()
        self.frozen = False

    def wait_up(self, timeout: float = 180) -> None:
        """Wait until the node runs its RabbitMQ application."""
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise ClusterError(f"node {self.name} exited with {self.proc.returncode}: "
                                   f"{self.console_tail()}")
            try:
                ctl(self.name, "await_startup", "--timeout", "30", timeout=60)
                return
            except (ClusterError, subprocess.TimeoutExpired) as e:
                last = str(e)
                time.sleep(1)
        raise ClusterError(f"node {self.name} not up after {timeout:.0f}s: {last}; "
                           f"{self.console_tail()}")

    def console_tail(self) -> str:
        path = self.base / "console.log"
        return path.read_text(errors="replace")[-1500:] if path.exists() else "(no console log)"

    @property
    def vm_pid(self) -> int:
        """The pid of the node's Erlang VM."""
        return int(self.pid_file.read_text().strip())

    def kill(self) -> None:
        """kill -9 of the Erlang VM: the node dies at once."""
        pid = self.vm_pid
        os.kill(pid, signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(timeout=30)
        self.frozen = False

    def freeze(self) -> None:
        """SIGSTOP of the Erlang VM: sockets stay open, nothing answers."""
        os.kill(self.vm_pid, signal.SIGSTOP)
        self.frozen = True

    def thaw(self) -> None:
        """SIGCONT: the node goes on where it stopped."""
        os.kill(self.vm_pid, signal.SIGCONT)
        self.frozen = False

    def stop(self) -> None:
        """A clean stop, as an operator would do it before an upgrade."""
        ctl(self.name, "stop", timeout=120)
        if self.proc is not None:
            self.proc.wait(timeout=60)

    def destroy(self) -> None:
        """Kill whatever is left of the node, frozen or not."""
        try:
            pid = self.vm_pid
        except (OSError, ValueError):
            pid = None
        if pid is not None:
            for sig in (signal.SIGCONT, signal.SIGKILL):
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass


class Cluster:
    """Three RabbitMQ nodes clustered together under ``root``."""

    def __init__(self, root: Path, size: int = 3) -> None:
        self.root = Path(root)
        tag = uuid.uuid4().hex[:6]
        self.nodes = [Node(self.root, f"c{tag}n{i + 1}@localhost") for i in range(size)]
        self._starting: list[Node] = []

    @property
    def urls(self) -> list[str]:
        return [n.url for n in self.nodes]

    def node_for_port(self, port: int) -> Node:
        return next(n for n in self.nodes if n.port == port)

    def start(self, timeout: float = 240) -> None:
        """Start every node, cluster them with the first, and check all run."""
        self.root.mkdir(parents=True, exist_ok=True)
        for n in self.nodes:
            n.prepare()
        user = pwd.getpwnam(USER)
        for path in [self.root, *self.root.rglob("*")]:
            os.chown(path, user.pw_uid, user.pw_gid)
        for n in self.nodes:
            n.start()
        with ThreadPoolExecutor(len(self.nodes)) as pool:
            list(pool.map(lambda n: n.wait_up(timeout), self.nodes))
        first = self.nodes[0].name
        for n in self.nodes[1:]:
            ctl(n.name, "stop_app")
            ctl(n.name, "join_cluster", first)
            ctl(n.name, "start_app")
        self.wait_running(timeout=120)

    def running(self) -> set[str]:
        """The nodes the first reachable node sees running."""
        for n in self.nodes:
            if n.frozen or n.proc is None or n.proc.poll() is not None:
                continue
            try:
                out = ctl(n.name, "eval", "rabbit_nodes:all_running().", timeout=30)
            except (ClusterError, subprocess.TimeoutExpired):
                continue
            return {name.strip(" '[]\n") for name in out.split(",") if name.strip(" '[]\n")}
        return set()

    def wait_running(self, timeout: float = 180) -> None:
        """Wait until every node is up and clustered."""
        want = {n.name for n in self.nodes}
        deadline = time.monotonic() + timeout
        while self.running() != want:
            if time.monotonic() > deadline:
                raise ClusterError(f"cluster not formed after {timeout:.0f}s: "
                                   f"running {sorted(self.running())}, want {sorted(want)}")
            time.sleep(1)

    def start_again(self, node: Node) -> None:
        """Start ``node`` again (stopped or killed) without waiting for it: a test
        restoring the cluster for the next one; :meth:`ready` waits for it.

        A node boots in seconds: meanwhile the tests that do not need the cluster run."""
        node.start()
        self._starting.append(node)

    def ready(self, timeout: float = 180) -> None:
        """Wait until the nodes given to :meth:`start_again` run, clustered."""
        starting, self._starting = self._starting, []
        for node in starting:
            node.wait_up(timeout)
        if starting:
            self.wait_running()

    def destroy(self) -> None:
        """Kill every node and remove the folder."""
        for n in self.nodes:
            n.destroy()
        shutil.rmtree(self.root, ignore_errors=True)


if __name__ == "__main__":
    cluster = Cluster(Path(sys.argv[1]))
    try:
        t0 = time.monotonic()
        cluster.start()
        print(f"up in {time.monotonic() - t0:.0f}s", flush=True)
        print(",".join(cluster.urls), flush=True)
        for n in cluster.nodes:
            print(n.name, n.port, n.vm_pid, flush=True)
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    finally:
        cluster.destroy()
