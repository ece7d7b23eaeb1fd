"""``twistd centaure-traps``: who a trap is attributed to, dedup per host, Reports rate-limited.

One daemon for the module (real RabbitMQ, real net-snmp senders), listening
on 127.0.0.1 and [::1] with ``trusted_relays = ::1``: a trap sent to the IPv6
endpoint comes from a trusted relay, one sent to the IPv4 endpoint does not.
The inventory has router01 (10.0.0.1), router02 (10.0.0.2) and sw-core
(127.0.0.1).  Each test uses its own ifIndex, so that the dedup window of
one test never hides the traps of another.
"""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.request
import uuid

import pytest
import yaml

from connector import messages
from snmpwire import ber
from snmpwire.usm import encode_v3
from tests.conftest import _delete_prefixed, settings_text
from tests.integration.daemons import TwistdDaemon
from tests.integration.support import collect, declare_check_queue
from tests.snmp.snmpd import free_udp_port, tool_env
from centaure.shipped import example_path

pytestmark = pytest.mark.integration

ENGINE = "8000000001020304aa"
ENTERPRISE = "1.3.6.1.4.1.99999"
LINK_DOWN = "1.3.6.1.6.3.1.1.5.3"
LINK_UP = "1.3.6.1.6.3.1.1.5.4"
IF_INDEX = "1.3.6.1.2.1.2.2.1.1"
SNMP_TRAP_ADDRESS_0 = "1.3.6.1.6.3.18.1.3.0"


class Daemon:
    """The module's receiver: where to send, where its events and metrics are."""

    def __init__(self, tmp_path, prefix: str) -> None:
        self.tmp = tmp_path
        self.port = free_udp_port()
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        self.http_port = s.getsockname()[1]
        s.close()
        (tmp_path / "traps.yaml").write_text(open(example_path("traps.yaml")).read())
        (tmp_path / "inventory.yaml").write_text(yaml.safe_dump({"devices": [
            {"name": "router01", "address": "10.0.0.1", "device_type": "router"},
            {"name": "router02", "address": "10.0.0.2", "device_type": "router"},
            {"name": "sw-core", "address": "127.0.0.1", "device_type": "switch"}]}))
        (tmp_path / "trap-users.yaml").write_text(yaml.safe_dump([
            {"user": "alice", "auth_protocol": "SHA", "auth_key": "alicepass1",
             "priv_protocol": "AES", "priv_key": "aliceprivkey1"}]))
        text = settings_text(
            prefix, tmp_path, inventory={"path": "inventory.yaml"},
            connector={"http_port": str(self.http_port), "status_interval": "1s",
                       "node": "testnode"},
            traps={"listen": f"127.0.0.1:{self.port}, [::1]:{self.port}",
                   "definitions": "traps.yaml", "v3_users": "trap-users.yaml",
                   "engine_id": ENGINE, "trusted_relays": "::1", "rate_limit": "0",
                   "dedup_window": "10s", "report_rate_per_source": "10",
                   "report_rate_total": "200"})
        (tmp_path / "settings.ini").write_text(text)
        self.queue = declare_check_queue(prefix, "event")
        self.proc = TwistdDaemon("centaure-traps", tmp_path / "settings.ini", self.http_port)
        self.proc.wait_log("receiving traps on [::1]")

    def send(self, family: str, version: str, *params: str) -> None:
        """``snmptrap -v version -c public`` to the IPv4 (untrusted) or IPv6 (trusted) endpoint."""
        target = (f"udp:127.0.0.1:{self.port}" if family == "v4"
                  else f"udp6:[::1]:{self.port}")
        out = subprocess.run(["snmptrap", "-M", "/dev/null", "-v", version, "-c", "public",
                              target, *params],
                             capture_output=True, text=True, env=tool_env(self.tmp / "nethome"),
                             timeout=30)
        assert out.returncode == 0, f"snmptrap {params}: {out.stderr}"

    def events(self, n: int) -> list[messages.Event]:
        """The next events: ``n`` of them, and none more within a second."""
        got = [messages.decode(body) for _props, body in collect(self.queue, n)]
        assert len(got) == n, f"{len(got)} events, expected {n}: {got}"
        return got

    def metrics(self) -> dict[str, float]:
        url = f"http://127.0.0.1:{self.http_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as r:
            text = r.read().decode()
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line.startswith("#") or 'connector="traps"' not in line:
                continue
            name, _, value = line.rpartition(" ")
            out[name.split("{")[0].removeprefix("centaure_").removesuffix("_total")] = float(value)
        return out


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    prefix = f"t{uuid.uuid4().hex[:10]}"
    d = Daemon(tmp_path_factory.mktemp("traps-trust"), prefix)
    yield d
    d.proc.stop()
    _delete_prefixed(prefix)


def varbind(event: messages.Event, oid: str):
    return next((v.value for v in event.varbinds if v.oid == oid), None)


def v1(agent: str, generic: str, index: int, uptime: str = "100") -> tuple[str, ...]:
    return ("1", ENTERPRISE, agent, generic, "0", uptime,
            f"{IF_INDEX}.{index}", "i", str(index))


def test_v1_agent_addr_from_an_untrusted_source_does_not_name_the_device(daemon) -> None:
    # A linkUp claiming router01 (agent-addr 10.0.0.1), sent from 127.0.0.1.
    daemon.send("v4", *v1("10.0.0.1", "3", 11))
    (event,) = daemon.events(1)
    assert event.trap_oid == LINK_UP and event.action == "clear" and event.key == "11"
    assert event.host == "sw-core" and event.address == "127.0.0.1"  # not router01
    assert varbind(event, SNMP_TRAP_ADDRESS_0) == "10.0.0.1"  # the claim is kept


def test_trusted_relay_names_the_device(daemon) -> None:
    daemon.send("v6", *v1("10.0.0.1", "3", 21))
    (event,) = daemon.events(1)
    assert (event.host, event.address, event.unknown_sender) == ("router01", "10.0.0.1", False)
    # v2c: the relay names the agent in snmpTrapAddress.0.
    daemon.send("v6", "2c", "300", LINK_DOWN,
                f"{IF_INDEX}.22", "i", "22", SNMP_TRAP_ADDRESS_0, "a", "10.0.0.2")
    (event,) = daemon.events(1)
    assert (event.host, event.address, event.key) == ("router02", "10.0.0.2", "22")
    # The same from an untrusted source: its own host, the claim kept.
    daemon.send("v4", "2c", "301", LINK_DOWN,
                f"{IF_INDEX}.23", "i", "23", SNMP_TRAP_ADDRESS_0, "a", "10.0.0.2")
    (event,) = daemon.events(1)
    assert (event.host, event.address) == ("sw-core", "127.0.0.1")
    assert varbind(event, SNMP_TRAP_ADDRESS_0) == "10.0.0.2"


def test_same_trap_of_two_hosts_through_one_relay_is_kept_twice(daemon) -> None:
    daemon.send("v6", *v1("10.0.0.1", "2", 31, uptime="400"))
    daemon.send("v6", *v1("10.0.0.2", "2", 31, uptime="400"))
    daemon.send("v6", *v1("10.0.0.1", "2", 31, uptime="400"))  # a repeat: dropped
    got = daemon.events(2)
    assert sorted(e.host for e in got) == ["router01", "router02"]
    assert {(e.trap_oid, e.key) for e in got} == {(LINK_DOWN, "31")}
    # Through a relay that is not trusted: one host, but two agents claimed.
    daemon.send("v4", *v1("10.0.0.1", "2", 32, uptime="401"))
    daemon.send("v4", *v1("10.0.0.2", "2", 32, uptime="401"))
    got = daemon.events(2)
    assert [e.host for e in got] == ["sw-core", "sw-core"]
    assert sorted(varbind(e, SNMP_TRAP_ADDRESS_0) for e in got) == ["10.0.0.1", "10.0.0.2"]


def test_reports_to_one_source_are_rate_limited(daemon) -> None:
    # Reportable informs of an unknown user: each asks for a Report, and anyone can send them.
    before = daemon.metrics()
    n = 100
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    try:
        start = time.monotonic()
        for i in range(n):
            sock.sendto(encode_v3(None, level=0, engine_id=bytes.fromhex(ENGINE), boots=1,
                                  time=1, user="mallory", msg_id=1000 + i,
                                  pdu_type=ber.INFORM_REQUEST, request_id=i,
                                  reportable=True), ("127.0.0.1", daemon.port))
        deadline = time.monotonic() + 30
        while daemon.metrics().get("datagrams_read", 0) - before.get("datagrams_read", 0) < n:
            assert time.monotonic() < deadline, daemon.metrics()
            time.sleep(0.05)
        elapsed = time.monotonic() - start  # at least the time the daemon took to read them
        sock.settimeout(1.0)
        reports = 0
        try:
            while True:
                sock.recv(65535)
                reports += 1
        except socket.timeout:
            pass
    finally:
        sock.close()
    after = daemon.metrics()
    # One second's worth at first, then 10 a second: never the 100 asked for.
    assert 1 <= reports <= 10 + 10 * elapsed, (reports, elapsed)
    assert after["reports_sent"] - before.get("reports_sent", 0) == reports
    suppressed = after["reports_suppressed_source"] - before.get("reports_suppressed_source", 0)
    assert suppressed == n - reports
    assert "SNMPv3 Reports suppressed" in daemon.proc.logs()
