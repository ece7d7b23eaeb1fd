"""SnmpClient against a real net-snmp snmpd, compared with net-snmp's own tools,
and against tiny fake agents for the faults snmpd will not produce."""

from __future__ import annotations

import re
import socket
import subprocess
import time

import pytest
import pytest_twisted
from twisted.internet import defer, reactor
from twisted.internet.protocol import DatagramProtocol

from snmpwire import ber
from connector_snmp.client import SnmpClient, SnmpError, SnmpTimeout
from connector_snmp.model import SnmpTarget
from tests.snmp.snmpd import V3_USERS, free_udp_port

pytestmark = pytest.mark.integration

SYSTEM = {
    "sysDescr": "1.3.6.1.2.1.1.1.0",
    "sysObjectID": "1.3.6.1.2.1.1.2.0",
    "sysUpTime": "1.3.6.1.2.1.1.3.0",
    "sysContact": "1.3.6.1.2.1.1.4.0",
    "sysName": "1.3.6.1.2.1.1.5.0",
}
SYS_UPTIME = SYSTEM["sysUpTime"]
IF_ENTRY = "1.3.6.1.2.1.2.2.1"
IF_COLUMNS = [f"{IF_ENTRY}.{c}" for c in (1, 2, 3, 4, 5, 6, 10)]  # ifIndex .. ifInOctets
HR_STORAGE_ENTRY = "1.3.6.1.2.1.25.2.3.1"
HR_COLUMNS = [f"{HR_STORAGE_ENTRY}.{c}" for c in (1, 2, 3, 4, 5, 6)]
# Values that move between two reads: compared by index and type only
# (counters: ours, read later, must not be smaller).
VOLATILE = {f"{IF_ENTRY}.10", f"{HR_STORAGE_ENTRY}.5", f"{HR_STORAGE_ENTRY}.6"}

VERSIONS = ["v1", "v2c"] + [f"v3-{u.name}" for u in V3_USERS]


# --------------------------------------------------------------------------
# net-snmp tools and their output

NETSNMP_TYPES = {
    "STRING": ber.OCTET_STRING, "Hex-STRING": ber.OCTET_STRING, "INTEGER": ber.INTEGER,
    "OID": ber.OBJECT_IDENTIFIER, "Timeticks": ber.TIMETICKS, "Counter32": ber.COUNTER32,
    "Gauge32": ber.GAUGE32, "Counter64": ber.COUNTER64, "IpAddress": ber.IP_ADDRESS,
    "Opaque": ber.OPAQUE,
}
_LINE = re.compile(r"^\.?(\d+(?:\.\d+)+) = (.*)$")


def parse_netsnmp(out: str) -> list[tuple[str, str, object]]:
    """Parse ``-On -Oe -Ox`` output (hex strings may span several lines)."""
    entries: list[list[str]] = []
    for line in out.splitlines():
        m = _LINE.match(line)
        if m:
            entries.append([m.group(1), m.group(2)])
        elif entries and line.strip():
            entries[-1][1] += " " + line.strip()
    result = []
    for oid, text in entries:
        if text.startswith("No Such Object"):
            result.append((oid, ber.NO_SUCH_OBJECT, None))
            continue
        if text.startswith("No Such Instance"):
            result.append((oid, ber.NO_SUCH_INSTANCE, None))
            continue
        if text.startswith("No more variables"):
            result.append((oid, ber.END_OF_MIB_VIEW, None))
            continue
        if text == '""':
            result.append((oid, ber.OCTET_STRING, b""))
            continue
        kind, _, val = text.partition(": ")
        tag = NETSNMP_TYPES[kind]
        value: object
        if kind == "Hex-STRING":
            value = bytes.fromhex(val.replace(" ", ""))
        elif kind == "STRING":
            value = val.strip('"').encode()
        elif kind == "OID":
            value = val.lstrip(".")
        elif kind == "Timeticks":
            value = int(re.match(r"\((\d+)\)", val).group(1))  # type: ignore[union-attr]
        elif kind == "IpAddress":
            value = val.strip()
        else:
            value = int(val.split()[0])
        result.append((oid, tag, value))
    return result


def tool_args(agent, version: str) -> list[str]:
    if version.startswith("v3-"):
        return agent.user(version[3:]).snmpget_args()
    return ["-v1" if version == "v1" else "-v2c", "-c", "public"]


def netsnmp(agent, tool: str, version: str, oids: list[str], host: str = "127.0.0.1"):
    if host == "::1":
        peer = f"udp6:[::1]:{agent.port}"
    else:
        peer = f"{host}:{agent.port}"
    args = [tool, *tool_args(agent, version), "-On", "-Oe", "-Ox", "-t", "2", "-r", "1", peer]
    r = subprocess.run(args + oids, capture_output=True, text=True, env=agent.env, timeout=30)
    assert r.returncode == 0, r.stderr
    return parse_netsnmp(r.stdout)


def target_for(agent, version: str, host: str = "127.0.0.1", **kw) -> tuple[SnmpTarget, str]:
    """(target, aes_key_extension) for a test version id; skips refused v3 users."""
    if version.startswith("v3-"):
        user = agent.user(version[3:])
        if user.name in agent.refused:
            pytest.skip(agent.refused[user.name])
        return SnmpTarget(host, agent.port, "v3", v3=user.security, **kw), user.aes_key_extension
    return SnmpTarget(host, agent.port, version, **kw), "blumenthal"  # type: ignore[arg-type]


@pytest.fixture
def client():
    c = SnmpClient(reactor)
    c.start()
    yield c
    pytest_twisted.blockon(c.stop())


@pytest.fixture
def reeder_client():
    c = SnmpClient(reactor, aes_key_extension="reeder")
    c.start()
    yield c
    pytest_twisted.blockon(c.stop())


def pick(client, reeder_client, ext):
    return reeder_client if ext == "reeder" else client


def same_except_volatile(ours: dict, theirs_by_col: dict) -> None:
    for col, rows in ours.items():
        exp = theirs_by_col[col]
        assert [(s, t) for s, t, _ in rows] == [(s, t) for s, t, _ in exp], col
        if col in VOLATILE:
            if rows and rows[0][1] == ber.COUNTER32:
                for (s, _, v), (_, _, e) in zip(rows, exp):
                    assert v >= e, (col, s)  # read later: not smaller (no wrap in a test)
        else:
            assert rows == exp, col


# --------------------------------------------------------------------------
# Differential tests against snmpget / snmpbulkwalk


@pytest.mark.parametrize("version", VERSIONS)
@pytest_twisted.ensureDeferred
async def test_get_system_scalars_equal_snmpget(snmpd_agent, client, reeder_client, version):
    target, ext = target_for(snmpd_agent, version)
    oids = list(SYSTEM.values())
    theirs = netsnmp(snmpd_agent, "snmpget", version, oids)
    ours = await pick(client, reeder_client, ext).get(target, oids)
    assert [o for o, _, _ in ours] == oids
    for (o, t, v), (eo, et, ev) in zip(ours, theirs):
        assert (o, t) == (eo, et)
        if o == SYS_UPTIME:
            assert 0 <= v - ev < 500  # ticks (1/100 s): read a little later
        else:
            assert v == ev, o
    assert ours[4][2] == b"centaure-test"


@pytest.mark.parametrize("version", VERSIONS)
@pytest_twisted.ensureDeferred
async def test_walk_tables_equal_snmpbulkwalk(snmpd_agent, client, reeder_client, version):
    target, ext = target_for(snmpd_agent, version, max_repetitions=7)
    c = pick(client, reeder_client, ext)
    # snmpbulkwalk needs v2c+: for v1 the reference is the v2c walk (same data)
    ref_version = "v2c" if version == "v1" else version
    theirs_by_col = {}
    for col in IF_COLUMNS + HR_COLUMNS:
        rows = netsnmp(snmpd_agent, "snmpbulkwalk", ref_version, [col])
        theirs_by_col[col] = [(o[len(col) + 1:], t, v) for o, t, v in rows
                              if o.startswith(col + ".")]
    assert len(theirs_by_col[IF_COLUMNS[0]]) >= 1
    assert len(theirs_by_col[HR_COLUMNS[0]]) >= 2
    ours_if = await c.walk(target, IF_COLUMNS)
    ours_hr = await c.walk(target, HR_COLUMNS)
    assert list(ours_if) == IF_COLUMNS and list(ours_hr) == HR_COLUMNS
    same_except_volatile(ours_if, theirs_by_col)
    same_except_volatile(ours_hr, theirs_by_col)
    # again, with the GETBULK size guessed from this walk
    same_except_volatile(await c.walk(target, IF_COLUMNS), theirs_by_col)
    same_except_volatile(await c.walk(target, HR_COLUMNS), theirs_by_col)


@pytest_twisted.ensureDeferred
async def test_walk_one_column_at_a_time_with_getnext_v1_and_small_bulks(snmpd_agent, client):
    """Many round trips: v1 GETNEXT of every ifTable column and max_repetitions=1."""
    for version in ("v1", "v2c"):
        target = SnmpTarget("127.0.0.1", snmpd_agent.port, version, max_repetitions=1)
        whole = await client.walk(target, [f"{IF_ENTRY}.{c}" for c in range(1, 23)])
        assert [s for s, _, _ in whole[f"{IF_ENTRY}.1"]] == [
            str(v) for _, _, v in whole[f"{IF_ENTRY}.1"]]
        assert all(len(rows) == len(whole[f"{IF_ENTRY}.1"]) for rows in whole.values()
                   if rows), {k: len(v) for k, v in whole.items()}


@pytest_twisted.ensureDeferred
async def test_ipv6_v2c(snmpd_agent, client):
    target = SnmpTarget("::1", snmpd_agent.port, "v2c")
    oids = [SYSTEM["sysName"], SYSTEM["sysObjectID"], SYSTEM["sysContact"]]
    theirs = netsnmp(snmpd_agent, "snmpget", "v2c", oids, host="::1")
    assert await client.get(target, oids) == theirs
    theirs_col = netsnmp(snmpd_agent, "snmpbulkwalk", "v2c", [f"{IF_ENTRY}.2"], host="::1")
    ours = await client.walk(target, [f"{IF_ENTRY}.2"])
    assert [(f"{IF_ENTRY}.2.{s}", t, v) for s, t, v in ours[f"{IF_ENTRY}.2"]] == theirs_col
    # the long form of the same address is the same agent
    long_form = SnmpTarget("0:0:0:0:0:0:0:1", snmpd_agent.port, "v2c")
    assert await client.get(long_form, oids) == theirs
    assert client.counters["bad_packets"] == 0


@pytest_twisted.ensureDeferred
async def test_v3_over_ipv6(snmpd_agent, client):
    user = snmpd_agent.user("u_sha_aes")
    target = SnmpTarget("::1", snmpd_agent.port, "v3", v3=user.security)
    (vb,) = await client.get(target, [SYSTEM["sysName"]])
    assert vb == (SYSTEM["sysName"], ber.OCTET_STRING, b"centaure-test")


@pytest_twisted.ensureDeferred
async def test_v3_two_agents_same_user_different_engine_ids(snmpd_agent, client, tmp_path):
    """Same user name and passwords on two snmpd with their own engine IDs:
    the keys are localized per engine, both answer, in any order."""
    from tests.snmp.snmpd import start_snmpd

    users = tuple(u for u in V3_USERS if u.name in ("u_sha_aes", "u_md5_des", "u_sha256_auth"))
    second = start_snmpd(tmp_path / "second", v3_users=users, sys_name="centaure-second")
    try:
        for name in ("u_sha_aes", "u_md5_des", "u_sha256_auth"):
            if name in snmpd_agent.refused or name in second.refused:
                continue
            sec = snmpd_agent.user(name).security
            t1 = SnmpTarget("127.0.0.1", snmpd_agent.port, "v3", v3=sec)
            t2 = SnmpTarget("127.0.0.1", second.port, "v3", v3=sec)
            for _ in range(2):
                r1, r2 = await defer.gatherResults([
                    defer.ensureDeferred(client.get(t1, [SYSTEM["sysName"]])),
                    defer.ensureDeferred(client.get(t2, [SYSTEM["sysName"]]))])
                assert r1 == [(SYSTEM["sysName"], ber.OCTET_STRING, b"centaure-test")]
                assert r2 == [(SYSTEM["sysName"], ber.OCTET_STRING, b"centaure-second")]
        e1 = client._usm.engine(("127.0.0.1", snmpd_agent.port))
        e2 = client._usm.engine(("127.0.0.1", second.port))
        assert e1 is not None and e2 is not None and e1.engine_id != e2.engine_id
        k1 = client._usm.keys(t1.v3, e1.engine_id)
        k2 = client._usm.keys(t2.v3, e2.engine_id)
        if k1 is not None:
            assert k1.auth_key != k2.auth_key
        assert client.counters["bad_packets"] == 0
    finally:
        second.stop()


@pytest_twisted.ensureDeferred
async def test_v3_agent_restart_is_recovered(snmpd_agent, client, tmp_path):
    """snmpd restarted on the same port: with the same engine ID (boots + 1,
    time from 0) the next request gets notInTimeWindow and resynchronises;
    with a new engine ID (this test snmpd keeps none) it gets
    unknownEngineID and rediscovers.  Either way it succeeds."""
    from tests.snmp.snmpd import start_snmpd

    users = tuple(u for u in V3_USERS if u.name == "u_sha_aes")
    agent = start_snmpd(tmp_path / "restart", v3_users=users)
    try:
        if "u_sha_aes" in agent.refused:
            pytest.skip(agent.refused["u_sha_aes"])
        target = SnmpTarget("127.0.0.1", agent.port, "v3", v3=users[0].security, timeout=1)
        assert (await client.get(target, [SYSTEM["sysName"]]))[0][2] == b"centaure-test"
        before = client._usm.engine(("127.0.0.1", agent.port))
        boots = before.boots
        agent.stop()
        agent = start_snmpd(tmp_path / "restart", port=agent.port, v3_users=users)
        assert (await client.get(target, [SYSTEM["sysName"]]))[0][2] == b"centaure-test"
        after = client._usm.engine(("127.0.0.1", agent.port))
        assert after is not before
        if after.engine_id == before.engine_id:
            assert after.boots > boots
        assert client.counters["timeouts"] == 0
    finally:
        agent.stop()


@pytest.mark.parametrize("version", ["v1", "v2c", "v3-u_sha_aes"])
@pytest_twisted.ensureDeferred
async def test_missing_objects_reported_per_varbind(snmpd_agent, client, version):
    target, _ = target_for(snmpd_agent, version)
    oids = [SYSTEM["sysName"], "1.3.6.1.2.1.1.99.0", SYSTEM["sysContact"],
            "1.3.6.1.2.1.1.5.1", "1.3.6.1.6.3.99.1.0"]
    ours = await client.get(target, oids)
    assert [o for o, _, _ in ours] == oids
    assert ours[0] == (oids[0], ber.OCTET_STRING, b"centaure-test")
    assert ours[2] == (oids[2], ber.OCTET_STRING, b"centaure-tests@example.org")
    if version == "v1":  # v1 has only noSuchName: the client marks NoSuchObject
        assert [t for _, t, _ in ours[1::2]] == [ber.NO_SUCH_OBJECT] * 2
        assert ours[3][1] == ber.NO_SUCH_OBJECT
    else:
        assert netsnmp(snmpd_agent, "snmpget", version, oids)[1:] == ours[1:]
        assert ours[3][1] == ber.NO_SUCH_INSTANCE


@pytest.mark.parametrize("version", ["v1", "v2c"])
@pytest_twisted.ensureDeferred
async def test_many_oids_split_in_requests_of_60(snmpd_agent, client, version):
    target = SnmpTarget("127.0.0.1", snmpd_agent.port, version)
    # 150 OIDs: ifTable cells that exist and some that do not
    oids = [f"{IF_ENTRY}.{c}.{i}" for i in range(1, 11) for c in range(1, 16)]
    before = client.counters["requests"]
    ours = await client.get(target, oids)
    assert [o for o, _, _ in ours] == oids
    theirs = netsnmp(snmpd_agent, "snmpget", "v2c", oids[:40])
    expected_tags = [t if version == "v2c" or t not in (ber.NO_SUCH_INSTANCE,)
                     else ber.NO_SUCH_OBJECT for _, t, _ in theirs]
    assert [t for _, t, _ in ours[:40]] == expected_tags
    if version == "v2c":
        assert client.counters["requests"] - before == 3  # 60 + 60 + 30


# --------------------------------------------------------------------------
# Timeouts


@pytest_twisted.ensureDeferred
async def test_closed_port_times_out_after_all_tries(client):
    port = free_udp_port()
    target = SnmpTarget("127.0.0.1", port, "v2c", community=b"s3cret-community",
                        timeout=0.3, retries=2)
    start = time.monotonic()
    with pytest.raises(SnmpTimeout) as info:
        await client.get(target, [SYSTEM["sysName"]])
    elapsed = time.monotonic() - start
    assert 0.85 <= elapsed < 1.6, elapsed  # 0.3 s x 3 tries
    assert f"127.0.0.1:{port} (v2c)" in str(info.value)
    assert "s3cret" not in str(info.value)
    assert client.counters["retries"] == 2 and client.counters["timeouts"] == 1
    assert client.counters["requests"] == 1


@pytest_twisted.ensureDeferred
async def test_wrong_community_times_out(snmpd_agent, client):
    target = SnmpTarget("127.0.0.1", snmpd_agent.port, "v2c", community=b"wrong",
                        timeout=0.3, retries=0)
    with pytest.raises(SnmpTimeout):
        await client.walk(target, [f"{IF_ENTRY}.2"])


@pytest_twisted.ensureDeferred
async def test_v3_wrong_key_is_an_error_not_a_hang(snmpd_agent, client):
    from connector_snmp.model import V3Security

    target = SnmpTarget("127.0.0.1", snmpd_agent.port, "v3", timeout=0.5, retries=0, v3=V3Security(
        "u_sha_aes", "SHA", "not-the-key-123", "AES", "not-the-key-456"))
    with pytest.raises((SnmpError, SnmpTimeout)) as info:
        await client.get(target, [SYSTEM["sysName"]])
    assert "not-the-key" not in str(info.value)


# --------------------------------------------------------------------------
# Concurrency


@pytest_twisted.ensureDeferred
async def test_200_concurrent_gets_against_one_snmpd(snmpd_agent, client):
    target = SnmpTarget("127.0.0.1", snmpd_agent.port, "v2c", timeout=2.0, retries=1)
    oids = [SYSTEM["sysName"], SYSTEM["sysContact"], SYSTEM["sysObjectID"]]
    start = time.monotonic()
    results = await defer.gatherResults(
        [defer.ensureDeferred(client.get(target, oids)) for _ in range(200)])
    elapsed = time.monotonic() - start
    assert all(r[0] == (oids[0], ber.OCTET_STRING, b"centaure-test") for r in results)
    assert client.counters["timeouts"] == 0
    assert client.counters["retries"] == 0, "lost responses: the bound did not work"
    assert elapsed < 2.0, elapsed  # no waiting on a retry timeout
    assert not client._agents and not client._pending  # everything released


# --------------------------------------------------------------------------
# Fake agents for what snmpd does not do


class FakeAgent(DatagramProtocol):
    """Answers SNMP requests on 127.0.0.1 through ``handler(msg) -> [datagrams]``."""

    def __init__(self, handler, delay: float = 0.0):
        self.handler = handler
        self.delay = delay
        self.requests: list[ber.SnmpMessage] = []
        self.outstanding = 0
        self.max_outstanding = 0

    def datagramReceived(self, data, addr):
        msg = ber.decode_message(data)
        self.requests.append(msg)
        replies = self.handler(msg)
        if self.delay:
            self.outstanding += 1
            self.max_outstanding = max(self.max_outstanding, self.outstanding)
            reactor.callLater(self.delay, self._send, replies, addr)
        else:
            self._send(replies, addr, count=False)

    def _send(self, replies, addr, count=True):
        if count:
            self.outstanding -= 1
        for r in replies:
            self.transport.write(r, addr)


@pytest.fixture
def fake_agent():
    ports = []

    def start(handler, delay=0.0):
        agent = FakeAgent(handler, delay)
        ports.append(reactor.listenUDP(0, agent, interface="127.0.0.1"))
        return agent, ports[-1].getHost().port

    yield start
    for p in ports:
        pytest_twisted.blockon(defer.maybeDeferred(p.stopListening))


def respond(msg, varbinds, status=0, index=0, rid=None):
    return ber.encode_response(msg.version, msg.community,
                               msg.request_id if rid is None else rid, status, index, varbinds)


def value_of(oid: str):
    return (oid, ber.INTEGER, int(oid.rsplit(".", 1)[1]))


@pytest_twisted.ensureDeferred
async def test_too_big_get_is_split_in_halves(client, fake_agent):
    def handler(msg):
        if len(msg.varbinds) > 2:
            return [respond(msg, [], status=1)]
        return [respond(msg, [value_of(o) for o, _, _ in msg.varbinds])]

    agent, port = fake_agent(handler)
    oids = [f"1.3.6.1.4.1.99.1.{i}" for i in range(1, 8)]
    res = await client.get(SnmpTarget("127.0.0.1", port, "v2c", timeout=1), oids)
    assert res == [value_of(o) for o in oids]
    assert [len(m.varbinds) for m in agent.requests] == [7, 3, 1, 2, 4, 2, 2]
    assert client.counters["too_big"] == 3


@pytest_twisted.ensureDeferred
async def test_too_big_walk_reduces_max_repetitions(client, fake_agent):
    col = "1.3.6.1.4.1.99.2"

    def handler(msg):
        assert msg.pdu_type == ber.GETBULK_REQUEST
        if msg.max_repetitions > 3:
            return [respond(msg, [], status=1)]
        start = int(msg.varbinds[0][0].rsplit(".", 1)[1]) if msg.varbinds[0][0] != col else 0
        rows = [value_of(f"{col}.{i}") for i in range(start + 1, start + 1 + msg.max_repetitions)]
        rows = [r if int(r[0].rsplit(".", 1)[1]) <= 10 else ("1.3.6.1.4.1.99.3.1", ber.NULL, None)
                for r in rows]
        return [respond(msg, rows)]

    agent, port = fake_agent(handler)
    res = await client.walk(SnmpTarget("127.0.0.1", port, "v2c", timeout=1, max_repetitions=25), [col])
    assert res[col] == [(str(i), ber.INTEGER, i) for i in range(1, 11)]
    assert [m.max_repetitions for m in agent.requests][:3] == [25, 12, 6]
    assert client.counters["too_big"] == 3


@pytest.mark.parametrize("version", ["v1", "v2c"])
@pytest_twisted.ensureDeferred
async def test_non_increasing_oid_stops_the_walk(client, fake_agent, version):
    col = "1.3.6.1.4.1.99.4"

    def handler(msg):  # always the same two rows, whatever is asked: a looping agent
        return [respond(msg, [value_of(f"{col}.2"), value_of(f"{col}.1")][:msg.max_repetitions or 1]
                        if msg.pdu_type == ber.GETBULK_REQUEST else [value_of(f"{col}.1")])]

    agent, port = fake_agent(handler)
    target = SnmpTarget("127.0.0.1", port, version, timeout=1, max_repetitions=2)
    res = await client.walk(target, [col])
    assert res[col] == ([(s, ber.INTEGER, int(s)) for s in ("2",)] if version == "v2c"
                        else [("1", ber.INTEGER, 1)])
    assert len(agent.requests) <= 2
    assert client.counters["non_increasing"] == 1


@pytest_twisted.ensureDeferred
async def test_v1_walk_ends_at_no_such_name(client, fake_agent):
    cols = ["1.3.6.1.4.1.99.5.1", "1.3.6.1.4.1.99.5.2"]

    def handler(msg):
        out = []
        for i, (oid, _, _) in enumerate(msg.varbinds):
            if oid.startswith(cols[1]) and oid != cols[1]:
                return [respond(msg, msg.varbinds, status=2, index=i + 1)]  # end of MIB
            if oid == cols[0]:
                out.append(value_of(cols[0] + ".7"))
            elif oid.startswith(cols[0]):
                out.append(value_of(cols[1] + ".7"))  # next column: leaves the prefix
            else:
                out.append(value_of(cols[1] + ".8"))
        return [respond(msg, out)]

    agent, port = fake_agent(handler)
    res = await client.walk(SnmpTarget("127.0.0.1", port, "v1", timeout=1), cols)
    assert res == {cols[0]: [("7", ber.INTEGER, 7)], cols[1]: [("8", ber.INTEGER, 8)]}
    assert all(m.pdu_type == ber.GETNEXT_REQUEST for m in agent.requests)


@pytest_twisted.ensureDeferred
async def test_garbage_and_strangers_are_counted_and_dropped(client, fake_agent):
    oid = "1.3.6.1.4.1.99.6.0"

    def handler(msg):
        return [b"\x30\x05garbage", b"", respond(msg, [value_of(oid)], rid=msg.request_id ^ 1),
                ber.encode_get(1, b"public", msg.request_id, [oid]),  # not a Response
                respond(msg, [value_of(oid)])]

    agent, port = fake_agent(handler)
    res = await client.get(SnmpTarget("127.0.0.1", port, "v2c", timeout=1), [oid])
    assert res == [value_of(oid)]
    # a good answer from another address is not ours either
    stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        stranger.bind(("127.0.0.2", 0))
        d = defer.ensureDeferred(client.get(SnmpTarget("127.0.0.1", port, "v2c", timeout=1), [oid]))
        rid = client._rid
        our_port = client._ports[socket.AF_INET].getHost().port
        stranger.sendto(ber.encode_response(1, b"public", rid, 0, 0, [value_of(oid)]),
                        ("127.0.0.1", our_port))
        assert await d == [value_of(oid)]
    finally:
        stranger.close()
    await defer.succeed(None)
    assert client.counters["bad_packets"] >= 4 + 1
    assert client.counters["responses"] == 2


@pytest_twisted.ensureDeferred
async def test_in_flight_bounded_per_agent(fake_agent):
    c = SnmpClient(reactor, max_in_flight_per_agent=3)
    c.start()
    try:
        agent, port = fake_agent(lambda m: [respond(m, [value_of(o) for o, _, _ in m.varbinds])],
                                 delay=0.02)
        other, port2 = fake_agent(lambda m: [respond(m, [value_of(o) for o, _, _ in m.varbinds])],
                                  delay=0.02)
        ds = [defer.ensureDeferred(c.get(SnmpTarget("127.0.0.1", p, "v2c", timeout=2),
                                         [f"1.3.6.1.4.1.99.7.{i}"]))
              for i in range(1, 31) for p in (port, port2)]
        res = await defer.gatherResults(ds)
        assert [r[0][2] for r in res] == [i for i in range(1, 31) for _ in (1, 2)]
        assert agent.max_outstanding == 3 and other.max_outstanding == 3
        assert c.counters["retries"] == 0
    finally:
        await c.stop()


@pytest_twisted.ensureDeferred
async def test_stop_fails_pending_requests(fake_agent):
    c = SnmpClient(reactor)
    c.start()
    agent, port = fake_agent(lambda m: [])  # never answers
    d = defer.ensureDeferred(c.get(SnmpTarget("127.0.0.1", port, "v2c", timeout=5), ["1.3.6.1.2.1.1.5.0"]))
    await c.stop()
    with pytest.raises(defer.CancelledError):
        await d


@pytest_twisted.ensureDeferred
async def test_walk_size_guess_follows_a_growing_and_shrinking_table(client, fake_agent):
    cols = ["1.3.6.1.4.1.99.8.1", "1.3.6.1.4.1.99.8.2"]
    size = {"rows": 3}

    def handler(msg):
        out = []
        for rep in range(msg.max_repetitions):
            for oid, _, _ in msg.varbinds:
                col = next(c for c in cols if oid == c or oid.startswith(c + "."))
                start = 0 if oid == col else int(oid.rsplit(".", 1)[1])
                i = start + 1 + rep
                out.append(value_of(f"{col}.{i}") if i <= size["rows"]
                           else ("1.3.6.1.4.1.99.9.1", ber.NULL, None))
        return [respond(msg, out)]

    agent, port = fake_agent(handler)
    target = SnmpTarget("127.0.0.1", port, "v2c", timeout=1, max_repetitions=5)
    guessed = False
    for rows in (3, 3, 12, 12, 2, 0, 4):
        size["rows"] = rows
        agent.requests.clear()
        res = await client.walk(target, cols)
        assert res == {c: [(str(i), ber.INTEGER, i) for i in range(1, rows + 1)] for c in cols}
        if rows == 3 and len(agent.requests) == 1 and agent.requests[0].max_repetitions == 4:
            guessed = True
    assert guessed, "the second walk of 3 rows should be one GETBULK of 4 repetitions"
