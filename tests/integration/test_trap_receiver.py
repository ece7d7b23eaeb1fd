"""A real TrapReceiver on a UDP port, fed by net-snmp's snmptrap and snmpinform."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor, task, threads

from connector.metrics import Counters
from snmpwire import ber
from connector_traps.model import SNMP_TRAP_ADDRESS_0, SNMP_TRAP_ENTERPRISE_0, Trap
from connector_traps.receiver import listen
from connector_traps.relays import TrustedRelays
from tests.snmp.snmpd import free_udp_port, tool_env

pytestmark = [
    pytest.mark.integration,
]

E = "1.3.6.1.4.1.99999"
TRAP_OID = f"{E}.0.42"

# (snmptrap type letter, value on the command line) -> (BER tag, decoded value)
VARBINDS = [
    (f"{E}.1.1", "i", "-17", ber.INTEGER, -17),
    (f"{E}.1.2", "s", "disk /var full", ber.OCTET_STRING, b"disk /var full"),
    (f"{E}.1.3", "o", "1.3.6.1.2.1.2.2.1.1.3", ber.OBJECT_IDENTIFIER, "1.3.6.1.2.1.2.2.1.1.3"),
    (f"{E}.1.4", "a", "192.0.2.33", ber.IP_ADDRESS, "192.0.2.33"),
    (f"{E}.1.5", "c", "4294967295", ber.COUNTER32, 4294967295),
    (f"{E}.1.6", "u", "123456", ber.GAUGE32, 123456),
    (f"{E}.1.7", "t", "8640000", ber.TIMETICKS, 8640000),
    (f"{E}.1.8", "x", "00 1B 21 AA BB CC", ber.OCTET_STRING, b"\x00\x1b\x21\xaa\xbb\xcc"),
]


def _args() -> list[str]:
    out: list[str] = []
    for oid, letter, text, _, _ in VARBINDS:
        out += [oid, letter, text]
    return out


EXPECTED = tuple((oid, tag, value) for oid, _, _, tag, value in VARBINDS)


class Rig:
    """One receiver on 127.0.0.1 and one on ::1, same port; what the sink got."""

    def __init__(self, tmp_path: Path) -> None:
        self.port = free_udp_port()
        self.env = tool_env(tmp_path)
        self.traps: list[Trap] = []
        self.counters = Counters("traps")
        self.ports = []
        self.receivers = []
        for address in ("127.0.0.1", "::1"):
            p, r = listen(reactor, address, self.port, self.traps.append, self.counters,
                          communities={b"public"})
            self.ports.append(p)
            self.receivers.append(r)

    def target(self, family: str) -> str:
        return f"udp:127.0.0.1:{self.port}" if family == "v4" else f"udp6:[::1]:{self.port}"

    async def run(self, *argv: str, timeout: float = 15) -> subprocess.CompletedProcess:
        # In a thread: snmpinform waits for the answer of this very reactor.
        return await threads.deferToThread(
            subprocess.run, list(argv), env=self.env, capture_output=True, text=True,
            timeout=timeout)

    async def wait_for(self, n: int, timeout: float = 10.0) -> None:
        for _ in range(int(timeout / 0.02)):
            if len(self.traps) >= n:
                return
            await task.deferLater(reactor, 0.02, lambda: None)
        raise AssertionError(f"sink got {len(self.traps)} traps, expected {n}: "
                             f"{self.counters.values}")


@pytest.fixture
def rig(tmp_path):
    r = Rig(tmp_path)
    yield r
    for p in r.ports:
        p.stopListening()


def test_receive_buffer_is_big(rig) -> None:
    for r in rig.receivers:
        # As root, SO_RCVBUFFORCE passes net.core.rmem_max; as a user, rmem_max caps it.
        assert r.recv_buffer_granted is not None and r.recv_buffer_granted > 212_992
    assert rig.counters.get("recv_buffer_bytes") == rig.receivers[-1].recv_buffer_granted


@pytest.mark.parametrize("family", ["v4", "v6"])
@pytest_twisted.ensureDeferred
async def test_snmptrap_v1(rig, family) -> None:
    res = await rig.run("snmptrap", "-v", "1", "-c", "public", rig.target(family),
                        E, "10.20.30.40", "6", "42", "31337", *_args())
    assert res.returncode == 0, res.stderr
    await rig.wait_for(1)
    t = rig.traps[0]
    assert t.version == "v1" and t.pdu == "trap"
    assert t.trap_oid == TRAP_OID  # enterprise.0.specific
    assert t.uptime == 31337
    host = "127.0.0.1" if family == "v4" else "::1"
    # The agent-addr field names 10.20.30.40, but no relay is trusted: the source is the agent.
    assert t.source[0] == host and t.agent_address == host
    assert t.claimed_address == "10.20.30.40"
    assert t.community == b"public"
    assert t.varbinds == EXPECTED + (
        (SNMP_TRAP_ADDRESS_0, ber.IP_ADDRESS, "10.20.30.40"),
        (SNMP_TRAP_ENTERPRISE_0, ber.OBJECT_IDENTIFIER, E),
    )
    for r in rig.receivers:
        r.trusted_relays = TrustedRelays([host])
    res = await rig.run("snmptrap", "-v", "1", "-c", "public", rig.target(family),
                        E, "10.20.30.40", "6", "42", "31338", *_args())
    assert res.returncode == 0, res.stderr
    await rig.wait_for(2)
    relayed = rig.traps[1]
    assert relayed.agent_address == "10.20.30.40" and relayed.claimed_address is None


@pytest_twisted.ensureDeferred
async def test_snmptrap_v1_generic_link_down(rig) -> None:
    res = await rig.run("snmptrap", "-v", "1", "-c", "public", rig.target("v4"),
                        E, "10.20.30.40", "2", "0", "500", "1.3.6.1.2.1.2.2.1.1.3", "i", "3")
    assert res.returncode == 0, res.stderr
    await rig.wait_for(1)
    t = rig.traps[0]
    assert t.trap_oid == "1.3.6.1.6.3.1.1.5.3" and t.uptime == 500
    assert t.varbinds[0] == ("1.3.6.1.2.1.2.2.1.1.3", ber.INTEGER, 3)


@pytest.mark.parametrize("family", ["v4", "v6"])
@pytest_twisted.ensureDeferred
async def test_snmptrap_v2c(rig, family) -> None:
    res = await rig.run("snmptrap", "-v", "2c", "-c", "public", rig.target(family),
                        "271828", TRAP_OID, *_args())
    assert res.returncode == 0, res.stderr
    await rig.wait_for(1)
    t = rig.traps[0]
    assert (t.version, t.pdu, t.trap_oid, t.uptime) == ("v2c", "trap", TRAP_OID, 271828)
    host = "127.0.0.1" if family == "v4" else "::1"
    assert t.source[0] == host and t.agent_address == host and t.source[1] > 0
    assert t.varbinds == EXPECTED
    assert rig.counters.get("traps_delivered") == 1


@pytest.mark.parametrize("family", ["v4", "v6"])
@pytest_twisted.ensureDeferred
async def test_snmpinform_v2c_gets_its_answer(rig, family) -> None:
    # snmpinform exits 0 only once it has our Response.
    res = await rig.run("snmpinform", "-v", "2c", "-c", "public", "-t", "2", "-r", "0",
                        rig.target(family), "99", TRAP_OID, *_args())
    assert res.returncode == 0, res.stderr
    await rig.wait_for(1)
    t = rig.traps[0]
    assert (t.version, t.pdu, t.trap_oid, t.uptime) == ("v2c", "inform", TRAP_OID, 99)
    assert t.varbinds == EXPECTED
    assert rig.counters.get("informs_answered") == 1


@pytest_twisted.ensureDeferred
async def test_wrong_community_is_counted_not_answered(rig) -> None:
    res = await rig.run("snmpinform", "-v", "2c", "-c", "guessme", "-t", "1", "-r", "0",
                        rig.target("v4"), "99", TRAP_OID)
    assert res.returncode != 0  # no answer: timeout
    res = await rig.run("snmptrap", "-v", "2c", "-c", "guessme", rig.target("v4"), "1", TRAP_OID)
    assert res.returncode == 0
    for _ in range(100):
        if rig.counters.get("bad_community") >= 2:
            break
        await task.deferLater(reactor, 0.02, lambda: None)
    assert rig.counters.get("bad_community") == 2
    assert rig.traps == []
    # and the receiver goes on
    res = await rig.run("snmptrap", "-v", "2c", "-c", "public", rig.target("v4"), "1", TRAP_OID)
    await rig.wait_for(1)


@pytest.mark.skipif(not Path("/proc/sys/net/ipv6/bindv6only").exists()
                    or Path("/proc/sys/net/ipv6/bindv6only").read_text().strip() != "0",
                    reason="needs dual-stack sockets")
@pytest_twisted.ensureDeferred
async def test_dual_stack_reports_ipv4_senders_as_ipv4(tmp_path) -> None:
    port = free_udp_port()
    traps: list[Trap] = []
    p, r = listen(reactor, "::", port, traps.append)
    try:
        env = tool_env(tmp_path)
        res = await threads.deferToThread(
            subprocess.run, ["snmptrap", "-v", "2c", "-c", "public", f"udp:127.0.0.1:{port}",
                             "1", TRAP_OID], env=env, capture_output=True, timeout=15)
        assert res.returncode == 0
        for _ in range(250):
            if traps:
                break
            await task.deferLater(reactor, 0.02, lambda: None)
        assert traps and traps[0].source[0] == "127.0.0.1"
    finally:
        await p.stopListening()
