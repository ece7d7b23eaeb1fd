"""Deterministic ``event`` message ids: the same trap gives the same id on any receiver.

Datagrams are built with our BER encoder (v1, v2c trap and inform) and the
USM encoder (v3), decoded as the receivers decode them, then
``trap_message_id`` is compared; the trap service is checked to publish the
event under that id.
"""

from __future__ import annotations

import re

from connector.metrics import Counters
from snmpwire import ber
from snmpwire.oids import SNMP_TRAP_OID_0, SYS_UPTIME_0
from snmpwire.usm import UsmUser, encode_notification, localized_keys
from connector_traps.convert import trap_from_message
from connector_traps.model import Trap, trap_message_id
from connector_traps.receiver import TrapReceiver
from connector_traps.usm import UserTable, V3Receiver
from tests.unit.trap_service_support import make_service

LINK_DOWN = "1.3.6.1.6.3.1.1.5.3"
IF_INDEX = "1.3.6.1.2.1.2.2.1.1"
ENGINE = bytes.fromhex("8000000001020304")
OTHER_ENGINE = bytes.fromhex("80000000010203ff")
OURS = bytes.fromhex("80001f8804") + b"centaure"


def v2c(request_id: int = 42, uptime: int = 1000, index: int = 7, inform: bool = False,
        oid: str = LINK_DOWN, community: bytes = b"public") -> bytes:
    vbs = [(SYS_UPTIME_0, ber.TIMETICKS, uptime), (SNMP_TRAP_OID_0, ber.OBJECT_IDENTIFIER, oid),
           (f"{IF_INDEX}.{index}", ber.INTEGER, index)]
    encode = ber.encode_inform if inform else ber.encode_trap_v2
    return encode(community, request_id, vbs)


def v1(timestamp: int = 1000, index: int = 7, agent: str = "192.0.2.1", generic: int = 2,
       specific: int = 0, enterprise: str = "1.3.6.1.4.1.9999") -> bytes:
    return ber.encode_trap_v1(b"public", enterprise, agent, generic, specific, timestamp,
                              [(f"{IF_INDEX}.{index}", ber.INTEGER, index)])


def decoded(data: bytes, source=("192.0.2.1", 40000), received: float = 0.0) -> Trap:
    return trap_from_message(ber.decode_message(data), source, received)


def mid(data: bytes, source=("192.0.2.1", 40000), received: float = 0.0) -> str:
    return trap_message_id(decoded(data, source, received))


def test_same_trap_same_id_whatever_the_receiver_and_time():
    a = mid(v2c(), received=1.0)
    # Another receiver, later, from another source port of the same agent, another community.
    b = trap_message_id(decoded(v2c(community=b"other"), ("192.0.2.1", 50123), received=9.5))
    assert a == b
    assert re.fullmatch(r"trap:[0-9a-f]{32}", a)
    # An IPv4-mapped source (a dual-stack socket) is the same sender.
    assert mid(v2c(), ("::ffff:192.0.2.1", 1)) == a


def test_what_identifies_a_v2c_trap_changes_its_id():
    base = mid(v2c())
    others = {
        "request-id": mid(v2c(request_id=43)),
        "source": mid(v2c(), ("192.0.2.2", 40000)),
        "uptime": mid(v2c(uptime=1001)),
        "trap OID": mid(v2c(oid="1.3.6.1.6.3.1.1.5.4")),
        "varbinds": mid(v2c(index=8)),
        "inform": mid(v2c(inform=True)),
    }
    assert base not in others.values(), others
    assert len(set(others.values())) == len(others), others


def test_an_inform_retransmitted_keeps_its_id():
    first = mid(v2c(request_id=7, inform=True), received=1.0)
    again = mid(v2c(request_id=7, inform=True), received=4.0)
    assert first == again


def test_v1_fields_identify_a_v1_trap():
    base = mid(v1())
    assert mid(v1(), ("192.0.2.1", 1162)) == base
    changed = [mid(v1(timestamp=1001)), mid(v1(agent="192.0.2.99")), mid(v1(generic=3)),
               mid(v1(generic=6, specific=1)), mid(v1(generic=6, specific=2)),
               mid(v1(enterprise="1.3.6.1.4.1.8888")), mid(v1(index=8)),
               mid(v1(), ("192.0.2.2", 40000))]
    assert base not in changed and len(set(changed)) == len(changed)
    # Two ports going down in the same hundredth of a second: two traps, two ids.
    assert mid(v1(index=1)) != mid(v1(index=2))


def test_v1_and_v2c_of_the_same_notification_differ():
    assert mid(v1(generic=2)) != mid(v2c())


def _v3_trap(engine: bytes = ENGINE, request_id: int = 77, msg_id: int = 1, etime: int = 99,
             uptime: int = 1000, inform: bool = False, salt: bytes | None = None) -> Trap:
    u = UsmUser("u1", "SHA", "auth-pass-1", "AES", "priv-pass-1",
                None if inform else engine, "blumenthal")
    r = V3Receiver(UserTable([u]), OURS, clock=lambda: 1_000_000.0)
    keys = localized_keys(u, OURS if inform else engine)
    msg = encode_notification(keys, engine_id=OURS if inform else engine, user="u1",
                              trap_oid=LINK_DOWN, varbinds=[(f"{IF_INDEX}.3", ber.INTEGER, 3)],
                              uptime=uptime, inform=inform, boots=1 if inform else 3,
                              time=0 if inform else etime, msg_id=msg_id,
                              request_id=request_id, salt=salt)
    res = r.handle(msg, ("192.0.2.9", 50000))
    assert res.error is None, res.error
    return res.trap


def test_v3_engine_id_and_request_id_are_part_of_the_id():
    base = trap_message_id(_v3_trap())
    assert trap_message_id(_v3_trap()) == base
    # Encrypted again (another salt), another msgID and engine time: the same trap.
    assert trap_message_id(_v3_trap(msg_id=2, etime=100, salt=b"\x01" * 8)) == base
    assert trap_message_id(_v3_trap(engine=OTHER_ENGINE)) != base
    assert trap_message_id(_v3_trap(request_id=78)) != base
    assert trap_message_id(_v3_trap(uptime=1001)) != base
    trap = _v3_trap()
    assert trap.request_id == 77 and trap.engine_id == ENGINE
    # A v3 inform retransmitted (new msgID, same request-id) keeps its id.
    assert trap_message_id(_v3_trap(inform=True, msg_id=5)) == \
        trap_message_id(_v3_trap(inform=True, msg_id=6))


def test_two_receivers_publish_the_same_datagram_under_one_id(tmp_path):
    """Two trap services (two nodes) receive one datagram: same message id, own ts/source."""
    ids = []
    for node in ("n1", "n2"):
        folder = tmp_path / node
        folder.mkdir()
        service, clock, events, _ = make_service(folder, rate_limit="0", dedup_window="0")
        service.source = f"traps@{node}"
        deliveries = []
        service.publisher.bus.route = _recording(service.publisher.bus.route, deliveries)
        receiver = TrapReceiver(clock, service.handle, Counters("traps"))
        receiver.handle_datagram(v2c(request_id=5), ("10.0.0.1", 1162), 100.0 + len(ids))
        clock.advance(0)
        assert len(events.seen) == 1 and events.seen[0].host == "sw1"
        (props,) = deliveries
        assert props["type"] == "event"
        ids.append(props["message_id"])
    assert ids[0] == ids[1] and ids[0].startswith("trap:")


def _recording(route, into: list):
    def recorded(exchange, routing_key, body, properties):
        assert (exchange, routing_key) == ("centaure.event", "event.sw1")
        into.append(properties)
        return route(exchange, routing_key, body, properties)
    return recorded


def test_v1_conversion_keeps_the_pdu_fields():
    t = decoded(v1(generic=6, specific=17, enterprise="1.3.6.1.4.1.99999"))
    assert (t.enterprise, t.generic, t.specific, t.request_id) == ("1.3.6.1.4.1.99999", 6, 17, None)
    t2 = decoded(v2c(request_id=-5))
    assert t2.request_id == -5 and t2.enterprise is None
