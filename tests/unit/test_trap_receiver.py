"""TrapReceiver driven directly (fake transport, manual clock) and the
RFC 3584 conversion: fuzzing, informs, counting by reason, rate-limited logs."""

from __future__ import annotations

import random
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet import task
from twisted.logger import globalLogPublisher

from connector.metrics import Counters
from snmpwire import ber
from snmpwire.oids import SNMP_TRAP_OID_0, SYS_UPTIME_0
from connector_traps.convert import (
    ConvertError,
    normalize_address,
    trap_from_message,
    v1_trap_oid,
    varbind_to_json,
)
from connector_traps.model import (
    SNMP_TRAP_ADDRESS_0,
    SNMP_TRAP_ENTERPRISE_0,
    Trap,
)
from connector_traps.receiver import TrapReceiver, malformed_class, peek_version
from connector_traps.relays import TrustedRelays

SRC = ("192.0.2.10", 40000)
LINK_DOWN = "1.3.6.1.6.3.1.1.5.3"
ENTERPRISE = "1.3.6.1.4.1.9999.1"
IF_INDEX = "1.3.6.1.2.1.2.2.1.1.7"

#: Every datagram ends in exactly one of these counters.
OUTCOMES = ("traps_delivered", "sink_errors", "malformed", "wrong_pdu", "bad_community",
            "no_trap_oid", "bad_v1_trap", "unsupported_version", "v3_not_configured",
            "v3_errors", "v3_handled")


class FakeTransport:
    """Records writes; what TrapReceiver needs of a UDP port."""

    def __init__(self) -> None:
        self.writes: list[tuple[bytes, tuple[str, int]]] = []

    def write(self, data: bytes, addr: tuple[str, int]) -> None:
        self.writes.append((data, addr))


def make_receiver(sink=None, **kw) -> tuple[TrapReceiver, list[Trap], task.Clock]:
    clock = task.Clock()
    got: list[Trap] = []
    r = TrapReceiver(clock, sink if sink is not None else got.append, Counters("traps"), **kw)
    r.transport = FakeTransport()
    return r, got, clock


def v2_varbinds(trap_oid: str = LINK_DOWN, uptime: int = 4242) -> list:
    return [
        (SYS_UPTIME_0, ber.TIMETICKS, uptime),
        (SNMP_TRAP_OID_0, ber.OBJECT_IDENTIFIER, trap_oid),
        (IF_INDEX, ber.INTEGER, 7),
        ("1.3.6.1.2.1.2.2.1.2.7", ber.OCTET_STRING, b"eth7"),
        ("1.3.6.1.4.1.9999.2.1", ber.IP_ADDRESS, "10.0.0.7"),
        ("1.3.6.1.4.1.9999.2.2", ber.COUNTER32, 2**32 - 1),
        ("1.3.6.1.4.1.9999.2.3", ber.COUNTER64, 2**64 - 1),
        ("1.3.6.1.4.1.9999.2.4", ber.OBJECT_IDENTIFIER, "1.3.6.1.4.1.9999.7"),
        ("1.3.6.1.4.1.9999.2.5", ber.OCTET_STRING, b"\x00\x1b\x21\xaa\xbb\xcc"),
    ]


def good_v2(request_id: int = 1, community: bytes = b"public") -> bytes:
    return ber.encode_trap_v2(community, request_id, v2_varbinds())


def good_inform(request_id: int = 99) -> bytes:
    return ber.encode_inform(b"public", request_id, v2_varbinds())


def good_v1(generic: int = 6, specific: int = 17, community: bytes = b"public") -> bytes:
    return ber.encode_trap_v1(community, ENTERPRISE, "10.1.2.3", generic, specific, 555,
                              [(IF_INDEX, ber.INTEGER, 7)])


def outcomes(r: TrapReceiver) -> int:
    return sum(int(r.counters.get(name)) for name in OUTCOMES)


def feed(r: TrapReceiver, clock: task.Clock, *datagrams: bytes, addr=SRC) -> None:
    for d in datagrams:
        r.datagramReceived(d, addr)
    clock.advance(0)
    while r.queue:  # a slice may leave some for the next turn
        clock.advance(0)


class StepReactor:
    """callLater that runs only when told, one reactor turn at a time
    (task.Clock.advance(0) would also run what the calls reschedule)."""

    def __init__(self) -> None:
        self.calls: list[task.DelayedCall] = []
        self.now = 0.0

    def seconds(self) -> float:
        return self.now

    def callLater(self, delay, f, *a, **kw):
        call = task.DelayedCall(self.now + delay, f, a, kw, self.calls.remove,
                                lambda c: None, self.seconds)
        self.calls.append(call)
        return call

    def turn(self) -> None:
        """One reactor turn: run the calls due now, not those they schedule."""
        due, self.calls = self.calls, []
        for call in due:
            call.called = True
            call.func(*call.args, **call.kw)


@pytest.fixture
def log_events():
    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    yield events
    globalLogPublisher.removeObserver(events.append)


# --- conversion ----------------------------------------------------------------


def test_v1_generic_link_down_per_rfc3584() -> None:
    msg = ber.decode_message(good_v1(generic=2, specific=0))
    t = trap_from_message(msg, SRC, 1000.0)
    assert t.version == "v1" and t.pdu == "trap"
    assert t.trap_oid == LINK_DOWN
    assert t.uptime == 555
    assert t.agent_address == "10.1.2.3"
    assert t.source == SRC and t.received == 1000.0 and t.community == b"public"
    assert t.varbinds == (
        (IF_INDEX, ber.INTEGER, 7),
        (SNMP_TRAP_ADDRESS_0, ber.IP_ADDRESS, "10.1.2.3"),
        (SNMP_TRAP_ENTERPRISE_0, ber.OBJECT_IDENTIFIER, ENTERPRISE),
    )


@pytest.mark.parametrize("generic", range(6))
def test_v1_every_generic_trap(generic: int) -> None:
    t = trap_from_message(ber.decode_message(good_v1(generic=generic, specific=3)), SRC, 0.0)
    assert t.trap_oid == f"1.3.6.1.6.3.1.1.5.{generic + 1}"


def test_v1_enterprise_specific() -> None:
    t = trap_from_message(ber.decode_message(good_v1(generic=6, specific=17)), SRC, 0.0)
    assert t.trap_oid == ENTERPRISE + ".0.17"
    assert t.varbinds[-2] == (SNMP_TRAP_ADDRESS_0, ber.IP_ADDRESS, "10.1.2.3")


def test_v1_already_carrying_trap_address_is_not_doubled() -> None:
    data = ber.encode_trap_v1(b"public", ENTERPRISE, "10.1.2.3", 6, 1, 5,
                              [(SNMP_TRAP_ADDRESS_0, ber.IP_ADDRESS, "172.16.0.1")])
    t = trap_from_message(ber.decode_message(data), SRC, 0.0)
    assert [vb for vb in t.varbinds if vb[0] == SNMP_TRAP_ADDRESS_0] == [
        (SNMP_TRAP_ADDRESS_0, ber.IP_ADDRESS, "172.16.0.1")]


@pytest.mark.parametrize("generic,specific", [(7, 0), (-1, 0), (6, -5)])
def test_v1_impossible_generic_specific(generic: int, specific: int) -> None:
    with pytest.raises(ConvertError) as e:
        trap_from_message(ber.decode_message(good_v1(generic, specific)), SRC, 0.0)
    assert e.value.reason == "bad_v1_trap"


def test_v1_oid_helper() -> None:
    assert v1_trap_oid("1.3.6.1.4.1.8072", 6, 2**32 - 1) == "1.3.6.1.4.1.8072.0.4294967295"
    assert v1_trap_oid("1.3.6.1.4.1.8072", 0, 99) == "1.3.6.1.6.3.1.1.5.1"


def test_v2c_trap_and_inform() -> None:
    t = trap_from_message(ber.decode_message(good_v2()), ("::ffff:10.9.8.7", 1), 5.0)
    assert (t.version, t.pdu, t.trap_oid, t.uptime) == ("v2c", "trap", LINK_DOWN, 4242)
    assert t.source == ("10.9.8.7", 1) and t.agent_address == "10.9.8.7"
    assert t.varbinds == tuple(v2_varbinds()[2:])
    i = trap_from_message(ber.decode_message(good_inform()), SRC, 5.0)
    assert i.pdu == "inform" and i.varbinds == t.varbinds


def test_v2c_missing_or_misplaced_uptime_tolerated() -> None:
    vbs = v2_varbinds()
    no_uptime = ber.encode_trap_v2(b"public", 1, vbs[1:])
    t = trap_from_message(ber.decode_message(no_uptime), SRC, 0.0)
    assert t.uptime is None and t.trap_oid == LINK_DOWN and t.varbinds == tuple(vbs[2:])
    swapped = ber.encode_trap_v2(b"public", 1, [vbs[2], vbs[1], vbs[0]] + vbs[3:])
    t = trap_from_message(ber.decode_message(swapped), SRC, 0.0)
    assert t.uptime == 4242 and t.trap_oid == LINK_DOWN and t.varbinds == tuple([vbs[2]] + vbs[3:])


@pytest.mark.parametrize("varbinds", [
    [(SYS_UPTIME_0, ber.TIMETICKS, 1)],
    [],
    [(SYS_UPTIME_0, ber.TIMETICKS, 1), (SNMP_TRAP_OID_0, ber.OCTET_STRING, b"1.3.6")],
    [(SYS_UPTIME_0, ber.TIMETICKS, 1), (SNMP_TRAP_OID_0, ber.NULL, None)],
])
def test_v2c_without_trap_oid(varbinds) -> None:
    with pytest.raises(ConvertError) as e:
        trap_from_message(ber.decode_message(ber.encode_trap_v2(b"public", 1, varbinds)), SRC, 0)
    assert e.value.reason == "no_trap_oid"


def test_wrong_pdus() -> None:
    for data in (ber.encode_get(1, b"public", 1, ["1.3.6.1.2.1.1.3.0"]),
                 ber.encode_response(1, b"public", 1, 0, 0, v2_varbinds()),
                 ber.encode_get(0, b"public", 1, ["1.3.6.1.2.1.1.3.0"])):
        with pytest.raises(ConvertError) as e:
            trap_from_message(ber.decode_message(data), SRC, 0.0)
        assert e.value.reason == "wrong_pdu"


def test_varbind_to_json() -> None:
    assert varbind_to_json("1.2", ber.OCTET_STRING, b"eth0 up\n") == ("1.2", "OctetString", "eth0 up\n")
    assert varbind_to_json("1.2", ber.OCTET_STRING, "é".encode()) == ("1.2", "OctetString", "é")
    assert varbind_to_json("1.2", ber.OCTET_STRING, b"\x00\x1b!") == ("1.2", "OctetString", "0x001b21")
    assert varbind_to_json("1.2", ber.OCTET_STRING, b"eth0\x00") == ("1.2", "OctetString", "0x6574683000")
    assert varbind_to_json("1.2", ber.OCTET_STRING, b"\xff\xfe") == ("1.2", "OctetString", "0xfffe")
    assert varbind_to_json("1.2", ber.OCTET_STRING, b"") == ("1.2", "OctetString", "")
    assert varbind_to_json("1.2", ber.OPAQUE, b"\x9f\x78") == ("1.2", "Opaque", "0x9f78")
    assert varbind_to_json("1.2", ber.COUNTER64, 2**64 - 1) == ("1.2", "Counter64", 2**64 - 1)
    assert varbind_to_json("1.2", ber.IP_ADDRESS, "10.0.0.1") == ("1.2", "IpAddress", "10.0.0.1")
    assert varbind_to_json("1.2", ber.NULL, None) == ("1.2", "Null", None)


def test_normalize_address() -> None:
    assert normalize_address("::ffff:10.0.0.1") == "10.0.0.1"
    assert normalize_address("::1") == "::1"
    assert normalize_address("2001:db8::ffff:1") == "2001:db8::ffff:1"
    assert normalize_address("10.0.0.1") == "10.0.0.1"


# Property: a decoded-but-odd message never raises anything but ValueError.

_oids = st.one_of(
    st.sampled_from([SYS_UPTIME_0, SNMP_TRAP_OID_0, SNMP_TRAP_ADDRESS_0, SNMP_TRAP_ENTERPRISE_0,
                     IF_INDEX, "0.0", "2.999", "1.3.6.1.4.1.9999.0"]),
    st.lists(st.integers(0, 2**32 - 1), min_size=0, max_size=8).map(
        lambda arcs: ".".join(map(str, [1, 3] + arcs))),
)
_values = st.one_of(
    st.tuples(st.just(ber.INTEGER), st.integers(-2**31, 2**31 - 1)),
    st.tuples(st.sampled_from([ber.COUNTER32, ber.GAUGE32, ber.TIMETICKS]), st.integers(0, 2**32 - 1)),
    st.tuples(st.just(ber.COUNTER64), st.integers(0, 2**64 - 1)),
    st.tuples(st.sampled_from([ber.OCTET_STRING, ber.OPAQUE]), st.binary(max_size=20)),
    st.tuples(st.just(ber.OBJECT_IDENTIFIER), _oids),
    st.tuples(st.just(ber.IP_ADDRESS), st.tuples(*[st.integers(0, 255)] * 4).map(
        lambda t: "%d.%d.%d.%d" % t)),
    st.tuples(st.sampled_from([ber.NULL, ber.NO_SUCH_OBJECT, ber.NO_SUCH_INSTANCE,
                               ber.END_OF_MIB_VIEW]), st.none()),
)
_varbinds = st.lists(st.tuples(_oids, _values).map(lambda t: (t[0], *t[1])), max_size=6)


@st.composite
def odd_messages(draw) -> ber.SnmpMessage:
    kind = draw(st.sampled_from(["v1trap", "v2", "v1pdu", "raw"]))
    vbs = draw(_varbinds)
    if kind == "v1trap":
        data = ber.encode_trap_v1(
            draw(st.binary(max_size=8)), draw(_oids), "10.0.0.1",
            draw(st.integers(-2**31, 2**31 - 1) | st.integers(-1, 8)),
            draw(st.integers(-2**31, 2**31 - 1)), draw(st.integers(0, 2**32 - 1)), vbs)
        return ber.decode_message(data)
    if kind == "v2":
        pdu = draw(st.sampled_from(sorted(ber._PDUS_BY_VERSION[1])))
        if draw(st.booleans()):
            vbs = [(SYS_UPTIME_0, *draw(_values)), (SNMP_TRAP_OID_0, *draw(_values))] + vbs
        data = ber.encode_message(1, b"public", pdu, draw(st.integers(-2**31, 2**31 - 1)),
                                  draw(st.integers(0, 5)), draw(st.integers(0, 5)), vbs)
        return ber.decode_message(data)
    if kind == "v1pdu":
        pdu = draw(st.sampled_from([ber.GET_REQUEST, ber.RESPONSE, ber.SET_REQUEST]))
        return ber.decode_message(ber.encode_message(0, b"x", pdu, 1, 0, 0, vbs))
    # Built by hand: fields a decoder would never leave that way.
    return ber.SnmpMessage(
        version=draw(st.integers(-1, 5)), community=b"public",
        pdu_type=draw(st.sampled_from([ber.TRAP_V1, ber.TRAP_V2, ber.INFORM_REQUEST, 0x00])),
        request_id=draw(st.none() | st.integers()), error_status=None, error_index=None,
        varbinds=vbs, enterprise=draw(st.none() | _oids),
        agent_addr=draw(st.none() | st.just("10.0.0.2")),
        generic_trap=draw(st.none() | st.integers(-3, 9)),
        specific_trap=draw(st.none() | st.integers(-3, 2**33)),
        time_stamp=draw(st.none() | st.integers(0, 2**32 - 1)),
    )


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(odd_messages(), st.sampled_from([SRC, ("::1", 162), ("::ffff:1.2.3.4", 5)]))
def test_trap_from_message_only_raises_value_errors(msg, source) -> None:
    try:
        t = trap_from_message(msg, source, 1.0)
    except ValueError as e:
        assert isinstance(e, ConvertError)
        return
    assert isinstance(t, Trap) and t.trap_oid
    for vb in t.varbinds:
        varbind_to_json(*vb)


# --- the receiver -------------------------------------------------------------------


def test_good_traps_delivered_and_counted() -> None:
    r, got, clock = make_receiver()
    feed(r, clock, good_v2(), good_v1(), good_v1(generic=2, specific=0))
    assert [t.trap_oid for t in got] == [LINK_DOWN, ENTERPRISE + ".0.17", LINK_DOWN]
    assert got[0].source == SRC and got[0].received <= time.time()
    assert r.counters.get("traps_delivered") == 3 == r.counters.get("datagrams_received")
    assert r.transport.writes == []  # traps are not answered


def test_inform_answered_before_the_sink() -> None:
    seen_writes: list[int] = []

    def sink(trap: Trap) -> None:
        seen_writes.append(len(r.transport.writes))
        got.append(trap)

    got: list[Trap] = []
    r, _, clock = make_receiver(sink)
    addr = ("2001:db8::5", 16200)
    feed(r, clock, good_inform(request_id=-123456), addr=addr)
    assert seen_writes == [1]  # the response was written before the sink ran
    assert len(r.transport.writes) == 1
    data, to = r.transport.writes[0]
    assert to == addr
    resp = ber.decode_message(data)
    assert resp.pdu_type == ber.RESPONSE and resp.version == ber.VERSION_2C
    assert resp.request_id == -123456 and resp.error_status == 0 and resp.error_index == 0
    assert resp.community == b"public"
    assert resp.varbinds == v2_varbinds()
    assert got[0].pdu == "inform" and r.counters.get("informs_answered") == 1


def test_inform_with_bad_community_is_not_answered() -> None:
    r, got, clock = make_receiver()
    feed(r, clock, ber.encode_inform(b"secret?", 5, v2_varbinds()))
    assert r.transport.writes == [] and got == []
    assert r.counters.get("bad_community") == 1


def test_empty_community_set_accepts_any() -> None:
    r, got, clock = make_receiver(communities=set())
    feed(r, clock, good_v2(community=b"anything"), good_v1(community=b""))
    assert len(got) == 2 and got[0].community == b"anything"


def test_failures_counted_by_reason() -> None:
    r, got, clock = make_receiver()
    datagrams = {
        "malformed": [b"", b"\x00", b"\x30", b"\x30\x80\x02\x01\x01", good_v2()[:-3]],
        "unsupported_version": [b"\x30\x03\x02\x01\x02", b"\x30\x03\x02\x01\x07"],
        "v3_not_configured": [b"\x30\x03\x02\x01\x03"],
        "wrong_pdu": [ber.encode_get(1, b"public", 1, [SYS_UPTIME_0]),
                      ber.encode_response(0, b"public", 1, 0, 0, []),
                      # a v1 Trap-PDU inside a v2c message
                      b"\x30" + good_v1()[1:4] + b"\x01" + good_v1()[5:]],
        "bad_community": [good_v2(community=b"private"), good_v1(community=b"")],
        "no_trap_oid": [ber.encode_trap_v2(b"public", 1, [(SYS_UPTIME_0, ber.TIMETICKS, 1)])],
        "bad_v1_trap": [good_v1(generic=9)],
    }
    for reason, items in datagrams.items():
        before = r.counters.get(reason)
        feed(r, clock, *items)
        assert r.counters.get(reason) - before == len(items), reason
    assert got == []
    feed(r, clock, good_v2())
    assert len(got) == 1
    assert outcomes(r) == r.counters.get("datagrams_received")
    assert r.counters.get("malformed_truncated") >= 1
    assert r.counters.get("malformed_length") >= 1


def test_peek_version_and_classes() -> None:
    assert peek_version(good_v1()) == 0
    assert peek_version(good_v2()) == 1
    assert peek_version(b"\x30\x82\x01\x00\x02\x01\x03") == 3
    for bad in (b"", b"\x04\x01", b"\x30\x85\x00", b"\x30\x03\x04\x01\x00", b"\x30\x03\x02\x00"):
        with pytest.raises(ber.BERError):
            peek_version(bad)
    assert malformed_class(ber.BERError(0, "truncated message")) == "truncated"
    assert malformed_class(ber.BERError(0, "indefinite length in PDU")) == "length"
    assert malformed_class(ber.BERError(0, "whatever else")) == "other"


def test_queue_full_drops_are_counted() -> None:
    r, got, clock = make_receiver(queue_size=10)
    for i in range(15):
        r.datagramReceived(ber.encode_trap_v2(b"public", i, v2_varbinds(uptime=i)), SRC)
    assert len(r.queue) == 10
    assert r.counters.get("dropped_queue_full") == 5
    clock.advance(0)
    # the first ten, in order: the newest five were the ones dropped
    assert [t.uptime for t in got] == list(range(10))
    assert r.counters.get("queue_high_water") == 10
    r.datagramReceived(good_v2(), SRC)
    clock.advance(0)
    assert len(got) == 11


def test_drain_runs_in_slices() -> None:
    got: list[Trap] = []
    reactor = StepReactor()
    r = TrapReceiver(reactor, got.append, Counters("traps"), slice_max=2000, slice_seconds=10.0)
    r.transport = FakeTransport()
    d = good_v2()
    for _ in range(4500):
        r.datagramReceived(d, SRC)
    assert len(reactor.calls) == 1  # one drain scheduled, not 4500
    reactor.turn()
    assert len(got) == 2000 and len(r.queue) == 2500 and len(reactor.calls) == 1
    r.datagramReceived(d, SRC)  # arrivals between slices schedule nothing more
    assert len(reactor.calls) == 1
    reactor.turn()
    assert len(got) == 4000
    reactor.turn()
    assert len(got) == 4501 and not r.queue and not reactor.calls
    assert r.counters.get("queue_depth") == 0


def test_datagrams_queued_at_stop_are_counted() -> None:
    r, got, clock = make_receiver()
    r.datagramReceived(good_v2(), SRC)
    r.datagramReceived(good_v2(), SRC)
    r.stopProtocol()
    assert not clock.getDelayedCalls() and not r.queue
    assert r.counters.get("dropped_at_stop") == 2 and got == []


def test_drain_slice_time_budget() -> None:
    def slow_sink(trap: Trap) -> None:
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < 0.0005:
            pass
        got.append(trap)

    got: list[Trap] = []
    reactor = StepReactor()
    r = TrapReceiver(reactor, slow_sink, Counters("traps"), slice_max=100_000,
                     slice_seconds=0.02)
    r.transport = FakeTransport()
    for _ in range(1000):
        r.datagramReceived(good_v2(), SRC)
    reactor.turn()
    # 20 ms at >= 0.5 ms a trap: well under the 1000 queued (checked every 64)
    assert 0 < len(got) <= 128
    turns = 1
    while r.queue:
        reactor.turn()
        turns += 1
    assert len(got) == 1000 and turns >= 8


def test_sink_errors_do_not_stop_the_receiver() -> None:
    calls: list[Trap] = []

    def sink(trap: Trap) -> None:
        calls.append(trap)
        if len(calls) == 1:
            raise RuntimeError("bus on fire")

    r, _, clock = make_receiver(sink)
    feed(r, clock, good_v2(), good_v2())
    assert len(calls) == 2
    assert r.counters.get("sink_errors") == 1 and r.counters.get("traps_delivered") == 1


def test_bad_community_rate_limited_in_log(log_events) -> None:
    r, got, clock = make_receiver()
    bad = good_v2(community=b"guess")

    def community_logs() -> list[dict]:
        return [e for e in log_events if "wrong community" in e.get("log_format", "")]

    feed(r, clock, *[bad] * 50)
    feed(r, clock, bad, addr=("192.0.2.99", 1))  # another source logs on its own
    assert r.counters.get("bad_community") == 51
    logs = community_logs()
    assert [(e["source"], e["suppressed"]) for e in logs] == [(SRC[0], 0), ("192.0.2.99", 0)]
    clock.advance(5)
    feed(r, clock, bad)
    assert len(community_logs()) == 2
    clock.advance(5.01)
    feed(r, clock, bad)
    logs = community_logs()
    assert len(logs) == 3 and logs[-1]["source"] == SRC[0] and logs[-1]["suppressed"] == 50
    assert got == []
    assert all("guess" not in repr(e) for e in logs)  # the community is never logged


def test_v3_handler_results() -> None:
    v3 = b"\x30\x05\x02\x01\x03\x04\x00"
    trap = Trap(source=SRC, version="v3", pdu="trap", trap_oid=LINK_DOWN, uptime=1,
                agent_address=SRC[0], varbinds=(), received=1.0, user="u")
    results = iter([trap, b"report", (b"response", trap), None, 42])
    seen: list[tuple[bytes, tuple]] = []

    def handler(data, addr):
        seen.append((data, addr))
        r_ = next(results, None)
        if r_ is None and len(seen) > 5:
            raise ValueError("boom")
        return r_

    r, got, clock = make_receiver(v3_handler=handler)
    feed(r, clock, *[v3] * 6)
    assert seen[0] == (v3, SRC)
    assert got == [trap, trap]
    assert [w for w, _ in r.transport.writes] == [b"report", b"response"]
    assert r.counters.get("v3_errors") == 2  # 42 is no answer; the raise
    assert r.counters.get("v3_not_configured") == 0


# --- fuzzing --------------------------------------------------------------------


def _mutate(rng: random.Random, d: bytes) -> bytes:
    b = bytearray(d)
    op = rng.randrange(9) if len(b) >= 8 else rng.choice([4, 8])
    if op == 0:  # flip bits
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
    elif op == 1:  # truncate
        del b[rng.randrange(len(b)):]
    elif op == 2:  # wrong length octet somewhere
        b[rng.randrange(1, len(b))] = rng.choice([0x00, 0x01, 0x7F, 0x80, 0x81, 0xFF])
    elif op == 3:  # a huge long-form length
        i = rng.randrange(1, len(b))
        b[i:i + 1] = bytes([0x84, 0xFF, 0xFF, 0xFF, 0xFF]) if rng.random() < 0.5 else b"\x83\x7f\xff\xff"
    elif op == 4:  # insert garbage
        i = rng.randrange(len(b) + 1)
        b[i:i] = rng.randbytes(rng.randint(1, 8))
    elif op == 5:  # delete a chunk
        i = rng.randrange(len(b))
        del b[i:i + rng.randint(1, 8)]
    elif op == 6:  # another version
        b[4] = rng.choice([0, 1, 2, 3, 4, 0x7F, 0x80, 0xFF])
    elif op == 7:  # another PDU tag
        p = 7 + b[6]
        if p < len(b):
            b[p] = rng.choice([0xA0, 0xA2, 0xA4, 0xA5, 0xA6, 0xA7, 0xA8, 0xA9, 0x30, 0xBF])
    else:  # random bytes, sometimes with a plausible start
        b = bytearray(rng.randbytes(rng.randint(0, 300)))
        if b and rng.random() < 0.5:
            b[0] = 0x30
    return bytes(b)


def test_fuzz_mutated_datagrams_are_only_counted(log_events) -> None:
    rng = random.Random(20261122)
    seeds = [good_v2(), good_inform(), good_v1(), good_v1(generic=2, specific=0),
             ber.encode_trap_v2(b"public", 2**31 - 1, v2_varbinds()[:2]),
             ber.encode_trap_v2(b"public", 3, v2_varbinds() + [
                 (f"1.3.6.1.4.1.9999.3.{i}", ber.OCTET_STRING, b"x" * 130) for i in range(3)])]
    r, got, clock = make_receiver()
    marker = ber.encode_trap_v2(b"public", 424242, v2_varbinds(trap_oid="1.3.6.1.4.1.9999.0.1"))
    deadline = time.monotonic() + 5.0
    n = 0
    while time.monotonic() < deadline:
        batch = [_mutate(rng, rng.choice(seeds)) for _ in range(50)]
        if rng.random() < 0.3:  # mutate the mutants
            batch = [_mutate(rng, d) if d else d for d in batch]
        before = len(got)
        feed(r, clock, *batch, marker)
        n += len(batch)
        assert got[-1].trap_oid == "1.3.6.1.4.1.9999.0.1", "the next good trap was lost"
        assert len(got) > before
        for data, addr in r.transport.writes:
            assert addr == SRC
            assert ber.decode_message(data).pdu_type == ber.RESPONSE
    assert n > 5000
    c = r.counters
    assert c.get("internal_errors") == 0
    assert not [e for e in log_events if e.get("log_failure") is not None]
    assert outcomes(r) == c.get("datagrams_received") == n + n // 50
    assert c.get("malformed") > 0 and c.get("bad_community") > 0 and c.get("wrong_pdu") > 0
    assert c.get("unsupported_version") > 0 and c.get("v3_not_configured") > 0


# --- trust: agent-addr, Reports -------------------------------------------------


def test_v1_agent_addr_names_the_host_only_from_a_trusted_relay() -> None:
    r, got, clock = make_receiver()   # no trusted relay
    feed(r, clock, good_v1(generic=3, specific=0), addr=("203.0.113.9", 40000))
    (t,) = got
    assert t.agent_address == "203.0.113.9" and t.claimed_address == "10.1.2.3"
    assert (SNMP_TRAP_ADDRESS_0, ber.IP_ADDRESS, "10.1.2.3") in t.varbinds
    r, got, clock = make_receiver(trusted_relays=TrustedRelays(["203.0.113.0/24"]))
    feed(r, clock, good_v1(generic=3, specific=0), addr=("203.0.113.9", 40000))
    assert got[0].agent_address == "10.1.2.3" and got[0].claimed_address is None


def test_reports_are_rate_limited_inform_responses_are_not() -> None:
    v3 = b"\x30\x05\x02\x01\x03\x04\x00"
    trap = Trap(source=SRC, version="v3", pdu="inform", trap_oid=LINK_DOWN, uptime=1,
                agent_address=SRC[0], varbinds=(), received=1.0, user="u")
    answers = [(b"report", None)] * 50 + [(b"response", trap)] * 20
    it = iter(answers)
    r, got, clock = make_receiver(v3_handler=lambda data, addr: next(it))
    feed(r, clock, *[v3] * len(answers))
    writes = [w for w, _ in r.transport.writes]
    assert writes.count(b"report") == 10          # one second's worth of the default 10/s
    assert writes.count(b"response") == 20 and len(got) == 20
    assert r.counters.get("reports_sent") == 10
    assert r.counters.get("reports_suppressed_source") == 40
    clock.advance(1.0)                            # the bucket refills
    it = iter([(b"report", None)] * 20)
    feed(r, clock, *[v3] * 20)
    assert [w for w, _ in r.transport.writes].count(b"report") == 20
