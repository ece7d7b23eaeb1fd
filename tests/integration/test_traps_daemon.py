"""``twistd centaure-traps`` with real net-snmp senders and the real RabbitMQ.

snmptrap v1, v2c and v3 (authPriv SHA/AES, with an engine ID) and snmpinform
(v2c and v3) send to the daemon; the ``event`` messages read back from a
queue are compared field by field: trap OID, varbinds, host mapped through
the inventory, name, severity and alarm fields from the shipped definitions.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import yaml

from connector import messages
from tests.conftest import ROOT, settings_text
from tests.integration.support import declare_check_queue, drain
from tests.snmp.snmpd import free_udp_port, tool_env
from centaure.shipped import example_path

pytestmark = pytest.mark.integration
BIN = os.path.dirname(sys.executable)
ENGINE = "8000000001020304"
LINK_DOWN = "1.3.6.1.6.3.1.1.5.3"
IF_INDEX = "1.3.6.1.2.1.2.2.1.1"


@pytest.fixture
def daemon(tmp_path, prefix):
    port = free_udp_port()
    shutil.copy(example_path("traps.yaml"), tmp_path / "traps.yaml")
    (tmp_path / "inventory.yaml").write_text(yaml.safe_dump({"devices": [
        {"name": "sw-core", "address": "127.0.0.1", "device_type": "switch"}]}))
    (tmp_path / "trap-users.yaml").write_text(yaml.safe_dump([
        {"user": "alice", "engine_id": ENGINE, "auth_protocol": "SHA", "auth_key": "alicepass1",
         "priv_protocol": "AES", "priv_key": "aliceprivkey1"},
        {"user": "bob", "auth_protocol": "SHA-512", "auth_key": "bobpass12",
         "priv_protocol": "AES-256", "priv_key": "bobprivkey12"},
    ]))
    text = settings_text(prefix, tmp_path,
                         inventory={"path": "inventory.yaml"},
                         traps={"listen": f"127.0.0.1:{port}",
                                "definitions": "traps.yaml",
                                "v3_users": "trap-users.yaml", "dedup_window": "0"})
    (tmp_path / "settings.ini").write_text(text)
    queue = declare_check_queue(prefix, "event")
    log = open(tmp_path / "twistd.log", "w")
    proc = subprocess.Popen([f"{BIN}/twistd", "-n", "--pidfile=", "centaure-traps", "-c",
                             str(tmp_path / "settings.ini")], cwd=tmp_path, stdout=log,
                            stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONPATH=ROOT))
    deadline = time.monotonic() + 30
    while "receiving traps on" not in (tmp_path / "twistd.log").read_text():
        assert proc.poll() is None, (tmp_path / "twistd.log").read_text()
        assert time.monotonic() < deadline, "the daemon did not start listening"
        time.sleep(0.2)
    yield port, queue, tmp_path, proc
    proc.send_signal(signal.SIGTERM)
    proc.wait(20)
    log.close()


def send(tmp_path, *args: str, inform: bool = False) -> None:
    tool = "snmpinform" if inform else "snmptrap"
    out = subprocess.run([tool, "-M", "/dev/null", *args], capture_output=True, text=True,
                         env=tool_env(tmp_path / "nethome"), timeout=30)
    assert out.returncode == 0, f"{tool} {' '.join(args)}: {out.stderr}"


def events(queue: str, n: int, timeout: float = 20) -> list[messages.Event]:
    got: list[messages.Event] = []
    deadline = time.monotonic() + timeout
    while len(got) < n and time.monotonic() < deadline:
        got.extend(messages.decode(body) for body, _ in drain(queue, idle=0.5))
    assert len(got) >= n, f"{len(got)} of {n} events arrived: {got}"
    return got


def test_v1_v2c_traps_and_informs(daemon):
    port, queue, tmp, _proc = daemon
    target = f"127.0.0.1:{port}"
    send(tmp, "-v", "2c", "-c", "public", target, "123", LINK_DOWN,
         f"{IF_INDEX}.7", "i", "7", "1.3.6.1.2.1.2.2.1.2.7", "s", "Gi0/7",
         "1.3.6.1.2.1.2.2.1.8.7", "i", "2")
    (down,) = events(queue, 1)
    assert (down.host, down.unknown_sender, down.snmp_version) == ("sw-core", False, "v2c")
    assert down.trap_oid == LINK_DOWN and down.name == "linkDown"
    assert down.action == "raise" and down.alarm == "linkDown" and down.key == "7"
    assert down.severity in messages.SEVERITIES and down.severity != "unknown"
    assert [(v.oid, v.type, v.value) for v in down.varbinds][:2] == [
        (f"{IF_INDEX}.7", "Integer", 7), ("1.3.6.1.2.1.2.2.1.2.7", "OctetString", "Gi0/7")]

    send(tmp, "-v", "2c", "-c", "public", "-t", "3", "-r", "1", target, "124",
         "1.3.6.1.6.3.1.1.5.4", f"{IF_INDEX}.7", "i", "7", inform=True)
    (up,) = events(queue, 1)
    assert up.trap_oid == "1.3.6.1.6.3.1.1.5.4" and up.action == "clear"
    assert up.alarm == "linkDown" and up.key == "7"

    # v1 enterprise-specific trap, converted per RFC 3584.
    send(tmp, "-v", "1", "-c", "public", target, "1.3.6.1.4.1.99999", "127.0.0.1", "6", "17",
         "125", "1.3.6.1.4.1.99999.1", "s", "hello")
    (v1,) = events(queue, 1)
    assert v1.snmp_version == "v1" and v1.trap_oid == "1.3.6.1.4.1.99999.0.17"
    assert v1.severity == "unknown" and v1.host == "sw-core"
    assert ("1.3.6.1.4.1.99999.1", "OctetString", "hello") in [
        (v.oid, v.type, v.value) for v in v1.varbinds]

    # A wrong community is counted, never published.
    send(tmp, "-v", "2c", "-c", "wrong", target, "126", LINK_DOWN)
    assert drain(queue, idle=1.5) == []


def test_v3_trap_and_inform(daemon):
    port, queue, tmp, _proc = daemon
    target = f"127.0.0.1:{port}"
    send(tmp, "-v", "3", "-e", ENGINE, "-u", "alice", "-l", "authPriv", "-a", "SHA", "-A",
         "alicepass1", "-x", "AES", "-X", "aliceprivkey1", target, "200", LINK_DOWN,
         f"{IF_INDEX}.3", "i", "3")
    (trap,) = events(queue, 1)
    assert trap.snmp_version == "v3" and trap.key == "3" and trap.host == "sw-core"

    send(tmp, "-v", "3", "-u", "bob", "-l", "authPriv", "-a", "SHA-512", "-A", "bobpass12",
         "-x", "AES-256", "-X", "bobprivkey12", "-t", "3", "-r", "1", target, "201",
         "1.3.6.1.6.3.1.1.5.4", f"{IF_INDEX}.3", "i", "3", inform=True)
    (inform,) = events(queue, 1)
    assert inform.snmp_version == "v3" and inform.action == "clear"

    # Wrong key: nothing published.
    send(tmp, "-v", "3", "-e", ENGINE, "-u", "alice", "-l", "authPriv", "-a", "SHA", "-A",
         "notalicepass", "-x", "AES", "-X", "aliceprivkey1", target, "202", LINK_DOWN)
    assert drain(queue, idle=1.5) == []


def test_definitions_reload_on_sighup(daemon):
    port, queue, tmp, proc = daemon
    target = f"127.0.0.1:{port}"
    new_trap = "1.3.6.1.4.1.99999.0.42"
    send(tmp, "-v", "2c", "-c", "public", target, "1", new_trap)
    (before,) = events(queue, 1)
    assert before.severity == "unknown" and before.name == new_trap
    with open(tmp / "traps.yaml", "a") as f:
        f.write(f"\n- {{oid: {new_trap}, name: fanFailure, severity: major, action: raise}}\n")
    proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 20
    while "trap definitions reloaded" not in (tmp / "twistd.log").read_text():
        assert time.monotonic() < deadline, "no reload"
        time.sleep(0.2)
    send(tmp, "-v", "2c", "-c", "public", target, "2", new_trap)
    (after,) = events(queue, 1)
    assert (after.name, after.severity, after.action) == ("fanFailure", "major", "raise")
    # A broken file is refused; the running definitions stay.
    (tmp / "traps.yaml").write_text("- {oid: not-an-oid}\n")
    proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 20
    while "reload refused" not in (tmp / "twistd.log").read_text():
        assert time.monotonic() < deadline, "the bad file was not refused"
        time.sleep(0.2)
    send(tmp, "-v", "2c", "-c", "public", target, "3", new_trap)
    (still,) = events(queue, 1)
    assert still.name == "fanFailure" and proc.poll() is None
