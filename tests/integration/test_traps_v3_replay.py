"""``twistd centaure-traps``: captured SNMPv3 traps and informs sent again.

A UDP relay between net-snmp's ``snmptrap``/``snmpinform`` and the daemon
keeps the datagrams, as an eavesdropper would; they are sent again, as is:
a trap within its time window (a copy, refused), an inform after the
daemon's restart (our engine's boots grew: out of the time window, answered
by an authenticated Report).  Real RabbitMQ, real daemon.
"""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import time

import pytest
import yaml

from connector import messages
from connector_traps.service import engine_id_for
from snmpwire import ber
from snmpwire.usm import decode_scoped_pdu, parse_message
from tests.conftest import ROOT
from tests.integration.daemons import TwistdDaemon
from tests.integration.support import (
    UdpLoop,
    connector_metrics,
    declare_check_queue,
    drain,
    traps_folder,
    traps_settings,
)
from tests.snmp.snmpd import tool_env

pytestmark = pytest.mark.integration
ENGINE = "8000000001020304"
LINK_DOWN = "1.3.6.1.6.3.1.1.5.3"
LINK_UP = "1.3.6.1.6.3.1.1.5.4"
IF_INDEX = "1.3.6.1.2.1.2.2.1.1"
NOT_IN_TIME_WINDOWS = "1.3.6.1.6.3.15.1.1.2.0"
ALICE = ["-v", "3", "-e", ENGINE, "-u", "alice", "-l", "authPriv", "-a", "SHA", "-A",
         "alicepass1", "-x", "AES", "-X", "aliceprivkey1"]
BOB = ["-v", "3", "-u", "bob", "-l", "authPriv", "-a", "SHA-512", "-A", "bobpass12",
       "-x", "AES-256", "-X", "bobprivkey12", "-t", "3", "-r", "1"]


class Relay(UdpLoop):
    """Forwards datagrams between one client and the daemon, keeping the client's."""

    def __init__(self, target: int) -> None:
        self.target = ("127.0.0.1", target)
        self.kept: list[bytes] = []
        self._client = None
        super().__init__()

    def handle(self, data: bytes, addr: tuple[str, int]) -> None:
        if addr == self.target:
            if self._client is not None:
                self.sock.sendto(data, self._client)
        else:
            self._client = addr
            self.kept.append(data)
            self.sock.sendto(data, self.target)


def metrics(http_port: int) -> dict[str, float]:
    return connector_metrics(http_port, "traps")


def send(tmp_path, tool: str, port: int, *args: str) -> None:
    out = subprocess.run([tool, "-M", "/dev/null", *args[:-1], f"127.0.0.1:{port}", *args[-1]],
                         capture_output=True, text=True, env=tool_env(tmp_path / "nethome"),
                         timeout=30)
    assert out.returncode == 0, f"{tool}: {out.stderr}"


def events(queue: str, n: int) -> list[messages.Event]:
    got: list[messages.Event] = []
    for _ in range(40):
        got.extend(messages.decode(body) for body, _ in drain(queue, idle=0.5))
        if len(got) >= n:
            break
    assert len(got) == n, f"{len(got)} of {n} events arrived: {got}"
    return got


def exchange(port: int, data: bytes) -> bytes | None:
    """Send ``data`` to the daemon from a fresh socket; its answer, if any within 3 s."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(3)
        s.sendto(data, ("127.0.0.1", port))
        try:
            return s.recv(65535)
        except TimeoutError:
            return None


def wait_for(daemon: TwistdDaemon, text: str, since: int, timeout: float = 30) -> None:
    """Wait until ``text`` is in the log after its first ``since`` characters."""
    deadline = time.monotonic() + timeout
    while text not in daemon.logs()[since:]:
        assert daemon.alive(), daemon.logs()[since:]
        assert time.monotonic() < deadline, daemon.logs()[since:]
        time.sleep(0.1)


@pytest.fixture
def setup(tmp_path, prefix):
    port, http_port = traps_folder(tmp_path)
    (tmp_path / "trap-users.yaml").write_text(yaml.safe_dump([
        {"user": "alice", "engine_id": ENGINE, "auth_protocol": "SHA", "auth_key": "alicepass1",
         "priv_protocol": "AES", "priv_key": "aliceprivkey1"},
        {"user": "bob", "auth_protocol": "SHA-512", "auth_key": "bobpass12",
         "priv_protocol": "AES-256", "priv_key": "bobprivkey12"},
    ]))

    def write(**traps: str) -> None:
        traps_settings(tmp_path, prefix, port, http_port,
                       traps={"v3_users": "trap-users.yaml", "dedup_window": "0", **traps})

    write()
    return port, http_port, write


def test_v3_trap_copy_refused_and_inform_refused_after_a_restart(tmp_path, prefix, setup):
    port, http_port, write = setup
    queue = declare_check_queue(prefix, "event")
    daemon = TwistdDaemon("centaure-traps", tmp_path / "settings.ini", http_port)
    relay = Relay(port)
    try:
        daemon.wait_log("receiving traps on")
        send(tmp_path, "snmptrap", relay.port, *ALICE, ["300", LINK_DOWN, f"{IF_INDEX}.3", "i", "3"])
        (trap,) = events(queue, 1)
        assert trap.snmp_version == "v3" and trap.key == "3"
        (trap_bytes,) = relay.kept
        relay.kept.clear()
        send(tmp_path, "snmpinform", relay.port, *BOB, ["301", LINK_UP, f"{IF_INDEX}.3", "i", "3"])
        (inform,) = events(queue, 1)
        assert inform.trap_oid == LINK_UP
        informs = [d for d in relay.kept if parse_message(d).engine_id]
        assert informs and parse_message(informs[0]).level == 3

        # The trap's bytes again, a second later: a copy, not published.
        assert exchange(port, trap_bytes) is None
        assert drain(queue, idle=1.0) == []
        m = metrics(http_port)
        assert m.get("v3_replayed") == 1 and m.get("published_events") == 2
        # A reload of the users (SIGHUP) keeps what the receiver remembers.
        before = len(daemon.logs())
        daemon.proc.send_signal(signal.SIGHUP)
        wait_for(daemon, "trap definitions reloaded", before)
        assert exchange(port, trap_bytes) is None
        assert drain(queue, idle=1.0) == []
        assert metrics(http_port).get("v3_replayed") == 2

        daemon.stop()
        boots_file = tmp_path / f"traps-engine-{parse_message(informs[0]).engine_id.hex()}.boots"
        assert boots_file.read_text() == "1\n"
        assert stat.S_IMODE(boots_file.stat().st_mode) == 0o600
        write(v3_time_window="off")
        first_run = len(daemon.logs())
        daemon.start()
        wait_for(daemon, "receiving traps on", first_run)
        assert "v3_time_window = off" in daemon.logs()[first_run:]  # said, not silent
        assert boots_file.read_text() == "2\n"

        # The inform captured in the first run: boots 1, ours are 2 now.
        answer = exchange(port, informs[0])
        assert answer is not None, "no Report"
        m = parse_message(answer)
        assert (m.boots, m.level) == (2, 1)  # authenticated, so that a sender may resynchronise
        report = decode_scoped_pdu(answer, m.data_start, m.data_end)
        assert report.pdu_type == ber.REPORT and report.varbinds[0][0] == NOT_IN_TIME_WINDOWS
        assert drain(queue, idle=1.0) == []
        assert metrics(http_port).get("v3_not_in_time_window") == 1
        # A sender that discovers our engine again is still heard.
        send(tmp_path, "snmpinform", port, *BOB, ["302", LINK_UP, f"{IF_INDEX}.4", "i", "4"])
        (again,) = events(queue, 1)
        assert again.key == "4"
    finally:
        relay.close()
        daemon.stop()


def run_until_exit(tmp_path) -> subprocess.CompletedProcess:
    return subprocess.run([f"{os.path.dirname(sys.executable)}/twistd", "-n", "--pidfile=",
                           "centaure-traps", "-c", str(tmp_path / "settings.ini")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, PYTHONPATH=ROOT))


def test_start_up_errors(tmp_path, setup):
    _port, _http_port, write = setup
    write(v3_time_window="0")
    out = run_until_exit(tmp_path)
    assert out.returncode != 0
    assert "v3_time_window" in out.stdout + out.stderr and "or off" in out.stdout + out.stderr
    # A boots file that is not a count: the daemon does not guess.
    write()
    boots_file = tmp_path / f"traps-engine-{engine_id_for('testnode').hex()}.boots"
    boots_file.write_text("seven\n")
    out = run_until_exit(tmp_path)
    assert out.returncode != 0
    assert str(boots_file) in out.stdout + out.stderr and "whole number" in out.stdout + out.stderr
    assert boots_file.read_text() == "seven\n"
