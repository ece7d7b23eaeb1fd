"""connector_snmp.usm_manager: the poller's SNMPv3 (command generator) side,
checked against the trap receiver's agent-side USM (connector_traps.usm):
requests we encode verify and decrypt with the agent's keys, responses the
agent side encodes decode to the same varbinds as v2c, the discovery and
time-synchronisation state machine (against V3Receiver's Reports and a fake
v3 agent on UDP driving SnmpClient), and malformed answers only ever give
Drop / UsmError (the client turns those into bad packets / SnmpError)."""

from __future__ import annotations

import random

import pytest
import pytest_twisted
from twisted.internet import defer, reactor
from twisted.internet.protocol import DatagramProtocol

from snmpwire import ber
from connector_snmp.client import SnmpClient, SnmpError, SnmpTimeout
from connector_snmp.model import SnmpTarget, V3Security
from connector_snmp.usm_manager import Drop, Reply, Report, UsmManager, is_v3, report_error
from connector_traps.usm import UserTable, V3Receiver
from snmpwire.usm import (
    USM_STATS,
    UsmError,
    UsmUser,
    decode_scoped_pdu,
    decrypt,
    encode_v3,
    localized_keys,
    parse_message,
    verify,
)

AUTH = "auth-pass-123"
PRIV = "priv-pass-456"
ENGINE = bytes.fromhex("80001f8880c0ffee0011223344")
AGENT = ("192.0.2.1", 161)

COMBOS = [
    ("none", "none", "blumenthal"),
    ("MD5", "none", "blumenthal"),
    ("SHA256", "none", "blumenthal"),
    ("MD5", "DES", "blumenthal"),
    ("SHA", "AES", "blumenthal"),
    ("SHA", "AES192", "blumenthal"),
    ("SHA", "AES256", "reeder"),
    ("SHA224", "AES", "blumenthal"),
    ("SHA384", "AES192", "reeder"),
    ("SHA512", "AES256", "blumenthal"),
    ("SHA512", "AES256", "reeder"),
]


def sec_for(auth: str, priv: str, user: str = "poller", context: str = "") -> V3Security:
    return V3Security(user, auth, AUTH if auth != "none" else "",  # type: ignore[arg-type]
                      priv, PRIV if priv != "none" else "", context)  # type: ignore[arg-type]


def agent_user(sec: V3Security, ext: str, engine_id: bytes | None = None) -> UsmUser:
    return UsmUser(sec.user, sec.auth_protocol, sec.auth_key or None, sec.priv_protocol,
                   sec.priv_key or None, engine_id, key_extension=ext)


class Clock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def agent_decode(data: bytes, keys, level: int):
    """What an agent does with our request: parse, verify, decrypt, decode."""
    m = parse_message(data)
    assert m.level == level and m.reportable
    if level:
        verify(keys, data, m)
    if m.encrypted:
        plain = decrypt(keys, data, m)
        sp = decode_scoped_pdu(plain, 0, len(plain), 7 if keys.priv_protocol == "DES" else 0)
    else:
        sp = decode_scoped_pdu(data, m.data_start, m.data_end)
    return m, sp


# --------------------------------------------------------------------------
# Encoding: what we send, the agent side accepts


@pytest.mark.parametrize("auth,priv,ext", COMBOS)
@pytest.mark.parametrize("pdu", [ber.GET_REQUEST, ber.GETNEXT_REQUEST, ber.GETBULK_REQUEST])
def test_request_verifies_and_decrypts_with_the_agents_keys(auth, priv, ext, pdu):
    clock = Clock()
    mgr = UsmManager(ext, clock=clock)
    sec = sec_for(auth, priv, context="vrf-7")
    st = mgr.learn(AGENT, ENGINE, 7, 5000)
    clock.t += 12.6
    oids = ["1.3.6.1.2.1.1.5.0", "1.3.6.1.2.1.2.2.1.10"]
    data, pv = mgr.request(sec, st, 4242, 4242, pdu, oids, 9)
    assert is_v3(data)
    keys = localized_keys(agent_user(sec, ext), ENGINE)
    m, sp = agent_decode(data, keys, keys.level)
    assert m.msg_id == 4242 and m.engine_id == ENGINE and m.user == b"poller"
    if keys.level:
        assert (m.boots, m.time) == (7, 5012)
    assert sp.pdu_type == pdu and sp.request_id == 4242
    assert sp.context_engine_id == ENGINE and sp.context_name == b"vrf-7"
    assert sp.varbinds == [(o, ber.NULL, None) for o in oids]
    assert (sp.error_status, sp.error_index) == ((0, 9) if pdu == ber.GETBULK_REQUEST else (0, 0))
    # The same user with other keys (another password) does not verify.
    if keys.level:
        wrong = localized_keys(UsmUser("poller", auth, "another-pass-1", priv,
                                       "another-pass-2" if priv != "none" else None,
                                       key_extension=ext), ENGINE)
        with pytest.raises(UsmError):
            verify(wrong, data, m)


def test_keys_are_localized_per_engine_and_cached():
    mgr = UsmManager()
    sec = sec_for("SHA", "AES")
    other = bytes.fromhex("80001f8880deadbeef00000001")
    k1, k2 = mgr.keys(sec, ENGINE), mgr.keys(sec, other)
    assert k1 is mgr.keys(sec, ENGINE)
    assert k1.auth_key != k2.auth_key and k1.priv_key != k2.priv_key
    assert k1.auth_key == localized_keys(agent_user(sec, "blumenthal"), ENGINE).auth_key
    assert mgr.keys(sec_for("none", "none"), ENGINE) is None
    assert "pass" not in repr(mgr) and "pass" not in repr(k1)


def test_reeder_and_blumenthal_give_different_aes256_keys():
    sec = sec_for("SHA", "AES256")
    a = UsmManager("blumenthal").keys(sec, ENGINE)
    b = UsmManager("reeder").keys(sec, ENGINE)
    assert a.priv_key[:20] == b.priv_key[:20] and a.priv_key != b.priv_key


def test_bad_credentials_are_a_v3_error_without_the_secret():
    mgr = UsmManager()
    with pytest.raises(UsmError) as info:
        mgr.user(V3Security("u", "SHA", "Xq7zK", "AES", "Wp9yJ"))
    assert info.value.reason == "bad_credentials" and "Xq7zK" not in str(info.value)
    with pytest.raises(ValueError):
        UsmManager("other")


# --------------------------------------------------------------------------
# Decoding: what the agent side encodes, we read


VARBINDS = [
    ("1.3.6.1.2.1.1.5.0", ber.OCTET_STRING, b"router-1"),
    ("1.3.6.1.2.1.1.3.0", ber.TIMETICKS, 123456),
    ("1.3.6.1.2.1.1.2.0", ber.OBJECT_IDENTIFIER, "1.3.6.1.4.1.8072.3.2.10"),
    ("1.3.6.1.2.1.2.2.1.10.1", ber.COUNTER32, 4_000_000_000),
    ("1.3.6.1.2.1.31.1.1.1.6.1", ber.COUNTER64, 2**64 - 1),
    ("1.3.6.1.2.1.4.20.1.1.10.0.0.1", ber.IP_ADDRESS, "10.0.0.1"),
    ("1.3.6.1.2.1.2.2.1.5.1", ber.GAUGE32, 10**9),
    ("1.3.6.1.2.1.2.2.1.8.1", ber.INTEGER, -5),
    ("1.3.6.1.2.1.1.9.0", ber.NO_SUCH_INSTANCE, None),
    ("1.3.6.1.2.1.99", ber.END_OF_MIB_VIEW, None),
]


def agent_response(sec, ext, pv, *, varbinds=VARBINDS, boots=7, etime=5000, status=0, index=0,
                   engine=ENGINE, salt=None, level=None):
    keys = localized_keys(agent_user(sec, ext), engine)
    return encode_v3(keys, level=keys.level if level is None else level, engine_id=engine,
                     boots=boots, time=etime, user=sec.user, msg_id=pv.msg_id,
                     pdu_type=ber.RESPONSE, request_id=pv.request_id, varbinds=varbinds,
                     error_status=status, error_index=index, context_name=b"", salt=salt)


@pytest.mark.parametrize("auth,priv,ext", COMBOS)
def test_response_decodes_to_the_v2c_varbinds(auth, priv, ext):
    clock = Clock()
    mgr = UsmManager(ext, clock=clock)
    sec = sec_for(auth, priv)
    st = mgr.learn(AGENT, ENGINE, 7, 5000)
    _, pv = mgr.request(sec, st, 77, 77, ber.GET_REQUEST, [o for o, _, _ in VARBINDS])
    reply = mgr.read(pv, agent_response(sec, ext, pv, status=5, index=2), agent=AGENT)
    v2c = ber.decode_message(ber.encode_response(1, b"public", 77, 5, 2, VARBINDS))
    assert reply == Reply(5, 2, v2c.varbinds)
    assert reply.varbinds == VARBINDS
    if auth != "none":
        assert st.synced


def test_authenticated_responses_move_the_engine_clock_forward_only():
    clock = Clock()
    mgr = UsmManager(clock=clock)
    sec = sec_for("SHA", "AES")
    st = mgr.learn(AGENT, ENGINE, 7, 5000)
    clock.t += 10
    _, pv = mgr.request(sec, st, 1, 1, ber.GET_REQUEST, ["1.3.6.1.2.1.1.5.0"])
    mgr.read(pv, agent_response(sec, "blumenthal", pv, etime=5030), agent=AGENT)
    assert st.now(clock()) == 5030
    # an older (but in-window) answer does not move it back
    _, pv = mgr.request(sec, st, 2, 2, ber.GET_REQUEST, ["1.3.6.1.2.1.1.5.0"])
    mgr.read(pv, agent_response(sec, "blumenthal", pv, etime=5000), agent=AGENT)
    assert st.now(clock()) == 5030
    # an answer far older than the window is a replay: dropped
    _, pv = mgr.request(sec, st, 3, 3, ber.GET_REQUEST, ["1.3.6.1.2.1.1.5.0"])
    with pytest.raises(Drop):
        mgr.read(pv, agent_response(sec, "blumenthal", pv, etime=4000), agent=AGENT)
    with pytest.raises(Drop):
        mgr.read(pv, agent_response(sec, "blumenthal", pv, boots=6), agent=AGENT)
    # a reboot (higher boots) is accepted
    mgr.read(pv, agent_response(sec, "blumenthal", pv, boots=8, etime=3), agent=AGENT)
    assert (st.boots, st.now(clock())) == (8, 3)


def test_answers_that_are_not_ours_are_dropped():
    mgr = UsmManager()
    sec = sec_for("SHA", "AES")
    st = mgr.learn(AGENT, ENGINE, 7, 5000)
    _, pv = mgr.request(sec, st, 10, 10, ber.GET_REQUEST, ["1.3.6.1.2.1.1.5.0"])
    other_engine = bytes.fromhex("80001f8880deadbeef00000001")
    wrong_pw = UsmUser("poller", "SHA", "another-pass-1", "AES", "another-pass-2")
    forged = encode_v3(localized_keys(wrong_pw, ENGINE), level=3, engine_id=ENGINE, boots=7,
                       time=5000, user="poller", msg_id=10, pdu_type=ber.RESPONSE,
                       request_id=10, varbinds=VARBINDS)
    cases = {
        "wrong_digest": forged,
        "wrong_msg_id": agent_response(sec, "blumenthal", type(pv)(11, 10, b"poller", 3, ENGINE,
                                                                   pv.keys, False)),
        "unexpected_authentication": agent_response(sec, "blumenthal", pv, engine=other_engine),
        "wrong_security_parameters": agent_response(sec, "blumenthal", pv, level=1),
        "wrong_request_id": agent_response(sec, "blumenthal", type(pv)(10, 99, b"poller", 3, ENGINE,
                                                                       pv.keys, False)),
        "malformed": b"\x30\x03\x02\x01\x03",
    }
    for why, data in cases.items():
        with pytest.raises(Drop) as info:
            mgr.read(pv, data, agent=AGENT)
        assert info.value.reason in (why, "malformed"), why
    # an unauthenticated Response to an authenticated request is not accepted either
    noauth = encode_v3(None, level=0, engine_id=ENGINE, boots=7, time=5000, user="poller",
                       msg_id=10, pdu_type=ber.RESPONSE, request_id=10, varbinds=VARBINDS)
    with pytest.raises(Drop):
        mgr.read(pv, noauth, agent=AGENT)


def test_authenticated_but_undecryptable_response_is_a_decryption_error():
    mgr = UsmManager()
    sec = sec_for("SHA", "AES")
    st = mgr.learn(AGENT, ENGINE, 7, 5000)
    _, pv = mgr.request(sec, st, 10, 10, ber.GET_REQUEST, ["1.3.6.1.2.1.1.5.0"])
    # right auth key, wrong priv key
    bad_priv = UsmUser("poller", "SHA", AUTH, "AES", "another-pass-2")
    data = encode_v3(localized_keys(bad_priv, ENGINE), level=3, engine_id=ENGINE, boots=7,
                     time=5000, user="poller", msg_id=10, pdu_type=ber.RESPONSE,
                     request_id=10, varbinds=VARBINDS)
    with pytest.raises(UsmError) as info:
        mgr.read(pv, data, agent=AGENT)
    assert info.value.reason == "decryption_error"
    assert PRIV not in str(info.value) and AUTH not in str(info.value)


@pytest.mark.parametrize("auth,priv", [("SHA", "AES"), ("MD5", "DES"), ("SHA256", "none"),
                                       ("none", "none")])
def test_malformed_answers_only_drop_or_v3error(auth, priv):
    rnd = random.Random(3414)
    mgr = UsmManager()
    sec = sec_for(auth, priv)
    st = mgr.learn(AGENT, ENGINE, 7, 5000)
    _, pv = mgr.request(sec, st, 10, 10, ber.GET_REQUEST, ["1.3.6.1.2.1.1.5.0"])
    good = agent_response(sec, "blumenthal", pv)
    assert isinstance(mgr.read(pv, good, agent=AGENT), Reply)
    samples = [good[:n] for n in range(len(good))]
    for _ in range(3000):
        b = bytearray(good)
        for _ in range(rnd.randint(1, 4)):
            b[rnd.randrange(len(b))] = rnd.randrange(256)
        samples.append(bytes(b))
    kinds = {Reply: 0, Report: 0, Drop: 0, UsmError: 0}
    for data in samples:
        try:
            out = mgr.read(pv, data, agent=AGENT)
        except (Drop, UsmError) as e:
            kinds[type(e)] += 1
        else:
            kinds[type(out)] += 1
    assert kinds[Drop] > 0


def test_client_never_raises_on_garbage_v3_datagrams():
    c = SnmpClient(reactor)
    rnd = random.Random(7)
    mgr = UsmManager()
    sec = sec_for("SHA", "AES")
    st = mgr.learn(AGENT, ENGINE, 7, 5000)
    _, pv = mgr.request(sec, st, 10, 10, ber.GET_REQUEST, ["1.3.6.1.2.1.1.5.0"])
    good = agent_response(sec, "blumenthal", pv)
    for n in range(len(good)):
        c._datagram(good[:n], AGENT)
    for _ in range(500):
        b = bytearray(good)
        b[rnd.randrange(len(b))] = rnd.randrange(256)
        c._datagram(bytes(b), AGENT)
    assert c.counters["bad_packets"] == len(good) + 500


# --------------------------------------------------------------------------
# Discovery and time synchronisation against V3Receiver (an authoritative engine)


def receiver_for(sec: V3Security, clock, boots: int = 3) -> V3Receiver:
    return V3Receiver(UserTable([agent_user(sec, "blumenthal")]), ENGINE, clock=clock, boots=boots)


def test_discovery_then_time_sync_against_an_authoritative_engine():
    agent_clock = Clock(50_000.0)
    sec = sec_for("SHA", "AES")
    rx = receiver_for(sec, agent_clock, boots=3)
    agent_clock.t += 400  # the agent has been up 400 s
    clock = Clock()
    mgr = UsmManager(clock=clock)
    # 1. discovery: noAuthNoPriv, reportable, empty engine ID
    data, pv = mgr.discovery_request(501, 501)
    m = parse_message(data)
    assert m.engine_id == b"" and m.user == b"" and m.level == 0 and m.reportable
    res = rx.handle(data, ("192.0.2.9", 40000))
    assert res.error == "discovery" and res.response
    rep = mgr.read(pv, res.response, agent=AGENT)
    assert isinstance(rep, Report) and rep.reason == "unknown_engine_id"
    assert (rep.engine_id, rep.boots, rep.time) == (ENGINE, 3, 400)
    # 2. a deliberately wrong clock: the authenticated Report resynchronises
    st = mgr.learn(AGENT, rep.engine_id, rep.boots, rep.time - 1000)
    data, pv = mgr.request(sec, st, 502, 502, ber.GET_REQUEST, ["1.3.6.1.2.1.1.5.0"])
    res = rx.handle(data, ("192.0.2.9", 40000))
    assert res.error == "not_in_time_window"
    rep = mgr.read(pv, res.response, agent=AGENT)
    assert rep.reason == "not_in_time_window" and rep.authenticated
    assert (rep.boots, rep.time) == (3, 400)
    st = mgr.learn(AGENT, rep.engine_id, rep.boots, rep.time, synced=True)
    # 3. now the agent accepts the message (V3Receiver is a trap receiver:
    # past verification and the time window it refuses a GET as wrong_pdu)
    clock.t += 30
    agent_clock.t += 30
    data, pv = mgr.request(sec, st, 503, 503, ber.GET_REQUEST, ["1.3.6.1.2.1.1.5.0"])
    assert rx.handle(data, ("192.0.2.9", 40000)).error == "wrong_pdu"
    assert rx.counters["wrong_digest"] == 0 and rx.counters["decryption_error"] == 0


@pytest.mark.parametrize("who,reason,counter", [
    ("wrong_key", "wrong_digest", "usmStatsWrongDigests"),
    ("unknown_user", "unknown_user", "usmStatsUnknownUserNames"),
    ("wrong_level", "unsupported_security_level", "usmStatsUnsupportedSecLevels"),
])
def test_reports_name_the_reason_never_the_key(who, reason, counter):
    sec = sec_for("SHA", "AES")
    rx = receiver_for(sec, Clock())
    mgr = UsmManager(clock=Clock())
    st = mgr.learn(AGENT, ENGINE, 3, 0)
    ours = {"wrong_key": V3Security("poller", "SHA", "not-the-key-1", "AES", "not-the-key-2"),
            "unknown_user": sec_for("SHA", "AES", user="nobody"),
            "wrong_level": sec_for("SHA", "none")}[who]
    data, pv = mgr.request(ours, st, 9, 9, ber.GET_REQUEST, ["1.3.6.1.2.1.1.5.0"])
    res = rx.handle(data, ("192.0.2.9", 40000))
    rep = mgr.read(pv, res.response, agent=AGENT)
    assert isinstance(rep, Report) and rep.reason == reason and not rep.authenticated
    err = report_error(rep)
    assert counter in str(err) and "not-the-key" not in str(err) and AUTH not in str(err)


def test_engine_time_estimate_follows_the_local_clock():
    clock = Clock(100.0)
    mgr = UsmManager(clock=clock)
    st = mgr.learn(AGENT, ENGINE, 2, 50)
    clock.t = 130.7
    assert st.now(clock()) == 80
    assert mgr.engine(AGENT) is st
    mgr.forget(AGENT)
    assert mgr.engine(AGENT) is None
    with pytest.raises(UsmError):
        mgr.learn(AGENT, b"", 0, 0)


# --------------------------------------------------------------------------
# The client's state machine against a fake v3 agent on UDP


class FakeV3Agent(DatagramProtocol):
    """A tiny authoritative SNMPv3 agent: discovery Reports, the time window
    (authenticated notInTimeWindows Reports), GET answered with INTEGER 1 per
    OID.  ``engine_id``/``boots``/``start`` may change between requests."""

    def __init__(self, sec: V3Security, engine_id: bytes, boots: int = 1) -> None:
        self.sec = sec
        self.engine_id = engine_id
        self.boots = boots
        self.start = reactor.seconds() - 1000
        self.seen: list[str] = []
        self.mute = False

    def etime(self) -> int:
        return int(reactor.seconds() - self.start)

    def report(self, m, stat, keys=None, level=0):
        return encode_v3(keys, level=level, engine_id=self.engine_id, boots=self.boots,
                         time=self.etime(), user=m.user, msg_id=m.msg_id, pdu_type=ber.REPORT,
                         request_id=0, varbinds=[(USM_STATS[stat], ber.COUNTER32, 1)])

    def datagramReceived(self, data, addr):
        if self.mute:
            return
        m = parse_message(data)
        keys = localized_keys(agent_user(self.sec, "blumenthal"), self.engine_id)
        if m.engine_id != self.engine_id:
            self.seen.append("discovery" if not m.engine_id else "unknown_engine_id")
            self.transport.write(self.report(m, "unknown_engine_id"), addr)
            return
        verify(keys, data, m)
        if m.boots != self.boots or abs(m.time - self.etime()) > 150:
            self.seen.append("not_in_time_window")
            self.transport.write(self.report(m, "not_in_time_window", keys, 1), addr)
            return
        plain = decrypt(keys, data, m)
        sp = decode_scoped_pdu(plain)
        self.seen.append("get")
        self.transport.write(encode_v3(
            keys, level=3, engine_id=self.engine_id, boots=self.boots, time=self.etime(),
            user=m.user, msg_id=m.msg_id, pdu_type=ber.RESPONSE, request_id=sp.request_id,
            varbinds=[(o, ber.INTEGER, 1) for o, _, _ in sp.varbinds]), addr)


@pytest.fixture
def v3_fake():
    ports = []

    def start(sec, engine_id, boots=1):
        agent = FakeV3Agent(sec, engine_id, boots)
        ports.append(reactor.listenUDP(0, agent, interface="127.0.0.1"))
        return agent, ports[-1].getHost().port

    yield start
    for p in ports:
        pytest_twisted.blockon(defer.maybeDeferred(p.stopListening))


@pytest_twisted.ensureDeferred
async def test_client_discovers_resyncs_and_rediscovers(v3_fake):
    sec = sec_for("SHA", "AES")
    agent, port = v3_fake(sec, ENGINE, boots=4)
    c = SnmpClient(reactor)
    c.start()
    try:
        target = SnmpTarget("127.0.0.1", port, "v3", v3=sec, timeout=1, retries=0)
        oid = "1.3.6.1.2.1.1.5.0"
        # concurrent first requests share one discovery
        res = await defer.gatherResults([defer.ensureDeferred(c.get(target, [oid]))
                                         for _ in range(4)])
        assert res == [[(oid, ber.INTEGER, 1)]] * 4
        assert agent.seen.count("discovery") == 1 and agent.seen.count("get") == 4
        # the agent reboots: boots + 1, time from 0 -> notInTimeWindow, resync
        agent.seen.clear()
        agent.boots += 1
        agent.start = reactor.seconds()
        assert await c.get(target, [oid]) == [(oid, ber.INTEGER, 1)]
        assert agent.seen == ["not_in_time_window", "get"]
        # the agent is replaced: a new engine ID -> rediscovery, new keys
        agent.seen.clear()
        agent.engine_id = bytes.fromhex("80001f8880deadbeef00000002")
        assert await c.get(target, [oid]) == [(oid, ber.INTEGER, 1)]
        assert agent.seen == ["unknown_engine_id", "discovery", "get"]
        assert c._usm.engine(("127.0.0.1", port)).engine_id == agent.engine_id
        assert c.counters["bad_packets"] == 0 and not c._pending and not c._agents
        # a silent agent times out like v2c
        agent.mute = True
        with pytest.raises(SnmpTimeout):
            await c.get(target, [oid])
    finally:
        await c.stop()


@pytest_twisted.ensureDeferred
async def test_client_wrong_key_is_an_snmp_error(v3_fake):
    sec = sec_for("SHA", "AES")
    agent, port = v3_fake(sec, ENGINE)

    def strict(data, addr, orig=agent.datagramReceived):
        try:
            orig(data, addr)
        except UsmError:  # wrong digest: what snmpd answers
            m = parse_message(data)
            agent.transport.write(agent.report(m, "wrong_digest"), addr)

    agent.datagramReceived = strict
    c = SnmpClient(reactor)
    c.start()
    try:
        bad = V3Security("poller", "SHA", "not-the-key-1", "AES", "not-the-key-2")
        target = SnmpTarget("127.0.0.1", port, "v3", v3=bad, timeout=1, retries=0)
        with pytest.raises(SnmpError) as info:
            await c.get(target, ["1.3.6.1.2.1.1.5.0"])
        assert "usmStatsWrongDigests" in str(info.value)
        assert "not-the-key" not in str(info.value)
    finally:
        await c.stop()


# --------------------------------------------------------------------------
# Forged unauthenticated Reports cannot switch a confirmed engine ID

FORGED_ENGINE = bytes.fromhex("80001f8880bad0bad0bad0bad0")


def forged_unknown_engine_report(msg_id: int, engine_id: bytes = FORGED_ENGINE) -> bytes:
    """What an attacker spoofing the agent's address can send: an unauthenticated Report."""
    return encode_v3(None, level=0, engine_id=engine_id, boots=1, time=1, user=b"",
                     msg_id=msg_id, pdu_type=ber.REPORT, request_id=0,
                     varbinds=[(USM_STATS["unknown_engine_id"], ber.COUNTER32, 1)])


def test_unauthenticated_discovery_answer_does_not_replace_a_confirmed_engine():
    sec = sec_for("SHA", "AES")
    clock = Clock()
    mgr = UsmManager(clock=clock)
    st = mgr.learn(AGENT, ENGINE, 7, 4000)
    # Confirmed by an authenticated Response.
    data, pv = mgr.request(sec, st, 10, 10, ber.GET_REQUEST, ["1.3.6.1.2.1.1.5.0"])
    assert isinstance(mgr.read(pv, agent_response(sec, "blumenthal", pv, boots=7, etime=4000),
                               agent=AGENT), Reply)
    assert mgr.engine(AGENT).synced
    # A forged discovery answer gives a candidate; the confirmed engine stays.
    data, pv = mgr.discovery_request(11, 11)
    rep = mgr.read(pv, forged_unknown_engine_report(11), agent=AGENT)
    assert isinstance(rep, Report) and not rep.authenticated
    candidate = mgr.learn(AGENT, rep.engine_id, rep.boots, rep.time)
    assert candidate.engine_id == FORGED_ENGINE
    assert mgr.engine(AGENT).engine_id == ENGINE
    # The genuine engine found again by discovery is the confirmed one, its clock kept.
    assert mgr.learn(AGENT, ENGINE, 1, 1) is mgr.engine(AGENT)
    assert (mgr.engine(AGENT).boots, mgr.engine(AGENT).time) == (7, 4000)


def test_a_new_engine_is_adopted_once_an_authenticated_answer_confirms_it():
    sec = sec_for("SHA", "AES")
    mgr = UsmManager(clock=Clock())
    old = mgr.learn(AGENT, ENGINE, 7, 4000, synced=True)
    new_engine = bytes.fromhex("80001f8880deadbeef00000002")
    candidate = mgr.learn(AGENT, new_engine, 1, 10)
    assert mgr.engine(AGENT) is old
    data, pv = mgr.request(sec, candidate, 12, 12, ber.GET_REQUEST, ["1.3.6.1.2.1.1.5.0"])
    answer = encode_v3(mgr.keys(sec, new_engine), level=3, engine_id=new_engine, boots=1,
                       time=12, user=b"poller", msg_id=12, pdu_type=ber.RESPONSE,
                       request_id=12, varbinds=VARBINDS)
    assert isinstance(mgr.read(pv, answer, agent=AGENT), Reply)
    assert mgr.engine(AGENT).engine_id == new_engine and mgr.engine(AGENT).synced


@pytest_twisted.ensureDeferred
async def test_client_keeps_its_engine_against_forged_unknown_engine_reports(v3_fake):
    sec = sec_for("SHA", "AES")
    agent, port = v3_fake(sec, ENGINE)
    genuine = agent.datagramReceived
    attacking = {"on": False}

    def with_attacker(data, addr):
        if attacking["on"]:
            # The spoofed Report arrives first; the agent's own answer comes too late.
            agent.transport.write(forged_unknown_engine_report(parse_message(data).msg_id), addr)
        genuine(data, addr)

    agent.datagramReceived = with_attacker
    c = SnmpClient(reactor)
    c.start()
    try:
        target = SnmpTarget("127.0.0.1", port, "v3", v3=sec, timeout=1, retries=0)
        oid = "1.3.6.1.2.1.1.5.0"
        assert await c.get(target, [oid]) == [(oid, ber.INTEGER, 1)]
        attacking["on"] = True
        # Unauthenticated Reports may end a request (the module says so)...
        with pytest.raises(SnmpError) as info:
            await c.get(target, [oid])
        assert "usmStatsUnknownEngineIDs" in str(info.value)
        # ...but the engine ID confirmed by authentication is kept.
        assert c._usm.engine(("127.0.0.1", port)).engine_id == ENGINE
        attacking["on"] = False
        agent.seen.clear()
        assert await c.get(target, [oid]) == [(oid, ber.INTEGER, 1)]
        assert agent.seen == ["get"]
    finally:
        await c.stop()
