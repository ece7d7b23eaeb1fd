"""snmpwire.ber proven against pysnmp 7 / pyasn1.

* pysnmp-built messages decode with our decoder to the same values;
* our messages decode with pyasn1 to the same values, and are byte-for-byte
  pyasn1's encoding (except where pyasn1 pads a negative integer);
* v1 Trap-PDUs both ways;
* malformed input (every truncation, random mutations, random bytes) only
  ever raises BERError, warm caches never change a result, and whatever we
  accept from a mutated message pyasn1 accepts with the same values.
"""

from __future__ import annotations

import random
from typing import NamedTuple

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pyasn1.codec.ber import decoder as pyasn1_decoder
from pyasn1.codec.ber import encoder as pyasn1_encoder
from pyasn1.error import PyAsn1Error
from pysnmp.proto import api

from snmpwire import ber
from snmpwire.ber import BERError, decode_message

v1 = api.PROTOCOL_MODULES[api.SNMP_VERSION_1]
v2c = api.PROTOCOL_MODULES[api.SNMP_VERSION_2C]

SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# --------------------------------------------------------------------------
# Strategies

I32_EDGES = [0, 1, -1, 127, 128, -128, -129, 255, 256, -256, 32767, 32768, -32768,
             -32769, 2**23, -(2**23), 2**31 - 1, -(2**31)]
U32_EDGES = [0, 1, 127, 128, 255, 256, 65535, 65536, 2**31 - 1, 2**31, 2**32 - 1]
U64_EDGES = U32_EDGES + [2**32, 2**63 - 1, 2**63, 2**64 - 1]
SUBID_EDGES = [0, 1, 39, 40, 127, 128, 16383, 16384, 2**21, 2**28 - 1, 2**28, 2**31, 2**32 - 1]
# pyasn1 encodes exactly these with a needless leading 0xFF octet
PYASN1_PADDED = {-(2**7), -(2**15), -(2**23), -(2**31)}


def ints(lo: int, hi: int, edges: list[int]) -> st.SearchStrategy[int]:
    return st.one_of(st.sampled_from(edges), st.integers(lo, hi))


subids = st.one_of(st.integers(0, 127), st.sampled_from(SUBID_EDGES), st.integers(0, 2**32 - 1))


@st.composite
def oids(draw) -> str:
    first = draw(st.sampled_from([0, 1, 2]))
    if first < 2:
        second = draw(st.integers(0, 39))
    else:
        second = draw(st.one_of(st.integers(0, 47), st.sampled_from([48, 2**32 - 81, 2**32 - 1]),
                                st.integers(0, 2**32 - 1)))
    if draw(st.integers(0, 9)) == 0:  # now and then a long OID (up to the 128-arc limit)
        rest = draw(st.lists(st.integers(0, 300), min_size=100, max_size=126))
    else:
        rest = draw(st.lists(subids, max_size=12))
    return ".".join(map(str, [first, second, *rest]))


octets = st.one_of(st.binary(max_size=40), st.sampled_from([b"", b"\x00", b"\xff" * 3, bytes(range(256))]))
VALUES = {
    ber.INTEGER: ints(-(2**31), 2**31 - 1, I32_EDGES),
    ber.OCTET_STRING: octets,
    ber.NULL: st.none(),
    ber.OBJECT_IDENTIFIER: oids(),
    ber.IP_ADDRESS: st.binary(min_size=4, max_size=4).map(lambda b: ".".join(map(str, b))),
    ber.COUNTER32: ints(0, 2**32 - 1, U32_EDGES),
    ber.GAUGE32: ints(0, 2**32 - 1, U32_EDGES),
    ber.TIMETICKS: ints(0, 2**32 - 1, U32_EDGES),
    ber.OPAQUE: octets,
    ber.COUNTER64: ints(0, 2**64 - 1, U64_EDGES),
    ber.NO_SUCH_OBJECT: st.none(),
    ber.NO_SUCH_INSTANCE: st.none(),
    ber.END_OF_MIB_VIEW: st.none(),
}
V1_TAGS = [ber.INTEGER, ber.OCTET_STRING, ber.NULL, ber.OBJECT_IDENTIFIER, ber.IP_ADDRESS,
           ber.COUNTER32, ber.GAUGE32, ber.TIMETICKS, ber.OPAQUE]
V2_TAGS = list(VALUES)
assert set(V2_TAGS) == set(ber.VALUE_TAGS)


def varbinds(version: int) -> st.SearchStrategy[list]:
    tags = V1_TAGS if version == 0 else V2_TAGS
    vb = st.sampled_from(tags).flatmap(lambda t: st.tuples(oids(), st.just(t), VALUES[t]))
    return st.lists(vb, max_size=8)


class Msg(NamedTuple):
    version: int
    community: bytes
    pdu_type: int
    request_id: int
    a: int  # error-status / non-repeaters
    b: int  # error-index / max-repetitions
    varbinds: list


V1_PDUS = [ber.GET_REQUEST, ber.GETNEXT_REQUEST, ber.RESPONSE, ber.SET_REQUEST]
V2_PDUS = V1_PDUS + [ber.GETBULK_REQUEST, ber.INFORM_REQUEST, ber.TRAP_V2, ber.REPORT]
small_uints = ints(0, 2**31 - 1, [0, 1, 5, 18, 127, 128, 255, 256, 2**31 - 1])


@st.composite
def messages(draw) -> Msg:
    version = draw(st.sampled_from([0, 1]))
    return Msg(
        version,
        draw(st.one_of(st.binary(max_size=20), st.binary(min_size=120, max_size=300))),
        draw(st.sampled_from(V1_PDUS if version == 0 else V2_PDUS)),
        draw(ints(-(2**31), 2**31 - 1, I32_EDGES)),
        draw(small_uints),
        draw(small_uints),
        draw(varbinds(version)),
    )


class Trap(NamedTuple):
    community: bytes
    enterprise: str
    agent_addr: str
    generic: int
    specific: int
    timestamp: int
    varbinds: list


traps = st.builds(
    Trap,
    st.binary(max_size=20),
    oids(),
    VALUES[ber.IP_ADDRESS],
    ints(-(2**31), 2**31 - 1, [0, 1, 2, 3, 4, 5, 6]),
    ints(-(2**31), 2**31 - 1, I32_EDGES),
    VALUES[ber.TIMETICKS],
    varbinds(0),
)

# --------------------------------------------------------------------------
# pysnmp side: build, encode, decode

PDU_CLASSES = {
    (0, ber.GET_REQUEST): v1.GetRequestPDU,
    (0, ber.GETNEXT_REQUEST): v1.GetNextRequestPDU,
    (0, ber.RESPONSE): v1.GetResponsePDU,
    (0, ber.SET_REQUEST): v1.SetRequestPDU,
    (1, ber.GET_REQUEST): v2c.GetRequestPDU,
    (1, ber.GETNEXT_REQUEST): v2c.GetNextRequestPDU,
    (1, ber.RESPONSE): v2c.ResponsePDU,
    (1, ber.SET_REQUEST): v2c.SetRequestPDU,
    (1, ber.GETBULK_REQUEST): v2c.GetBulkRequestPDU,
    (1, ber.INFORM_REQUEST): v2c.InformRequestPDU,
    (1, ber.TRAP_V2): v2c.SNMPv2TrapPDU,
    (1, ber.REPORT): v2c.ReportPDU,
}

V1_TYPES = {
    ber.INTEGER: v1.Integer, ber.OCTET_STRING: v1.OctetString, ber.IP_ADDRESS: v1.IpAddress,
    ber.COUNTER32: v1.Counter, ber.GAUGE32: v1.Gauge, ber.TIMETICKS: v1.TimeTicks,
    ber.OPAQUE: v1.Opaque,
}
V2_TYPES = {
    ber.INTEGER: v2c.Integer, ber.OCTET_STRING: v2c.OctetString, ber.IP_ADDRESS: v2c.IpAddress,
    ber.COUNTER32: v2c.Counter32, ber.GAUGE32: v2c.Gauge32, ber.TIMETICKS: v2c.TimeTicks,
    ber.OPAQUE: v2c.Opaque, ber.COUNTER64: v2c.Counter64,
    ber.NO_SUCH_OBJECT: v2c.NoSuchObject, ber.NO_SUCH_INSTANCE: v2c.NoSuchInstance,
    ber.END_OF_MIB_VIEW: v2c.EndOfMibView,
}
TAG_BY_TAGSET = {cls.tagSet: tag for tag, cls in {**V1_TYPES, **V2_TYPES}.items()}
TAG_BY_TAGSET[v2c.Null.tagSet] = ber.NULL
TAG_BY_TAGSET[v2c.ObjectIdentifier.tagSet] = ber.OBJECT_IDENTIFIER


def oid_tuple(oid: str) -> tuple[int, ...]:
    return tuple(int(x) for x in oid.split("."))


def to_pyasn1(version: int, tag: str, value: object):
    if tag == ber.NULL:
        return v2c.Null("")
    if tag == ber.OBJECT_IDENTIFIER:
        return v2c.ObjectIdentifier(oid_tuple(value))
    if tag == ber.IP_ADDRESS:
        value = bytes(oid_tuple(value))
    if tag in (ber.NO_SUCH_OBJECT, ber.NO_SUCH_INSTANCE, ber.END_OF_MIB_VIEW):
        value = ""
    return (V1_TYPES if version == 0 else V2_TYPES)[tag](value)


def from_pyasn1(value) -> tuple[str, object]:
    tag = TAG_BY_TAGSET[value.tagSet]
    if tag in (ber.INTEGER, ber.COUNTER32, ber.GAUGE32, ber.TIMETICKS, ber.COUNTER64):
        return tag, int(value)
    if tag in (ber.OCTET_STRING, ber.OPAQUE):
        return tag, value.asOctets()
    if tag == ber.OBJECT_IDENTIFIER:
        return tag, str(value)
    if tag == ber.IP_ADDRESS:
        return tag, ".".join(map(str, value.asNumbers()))
    return tag, None


def pysnmp_encode(m: Msg) -> bytes:
    mod = api.PROTOCOL_MODULES[m.version]
    pdu = PDU_CLASSES[(m.version, m.pdu_type)]()
    vbs = [(oid_tuple(o), to_pyasn1(m.version, t, v)) for o, t, v in m.varbinds]
    if m.pdu_type == ber.GETBULK_REQUEST:
        mod.apiBulkPDU.set_defaults(pdu)
        mod.apiBulkPDU.set_non_repeaters(pdu, m.a)
        mod.apiBulkPDU.set_max_repetitions(pdu, m.b)
    else:
        mod.apiPDU.set_defaults(pdu)
        mod.apiPDU.set_error_status(pdu, m.a)
        mod.apiPDU.set_error_index(pdu, m.b)
    mod.apiPDU.set_request_id(pdu, m.request_id)
    mod.apiPDU.set_varbinds(pdu, vbs)
    msg = mod.Message()
    mod.apiMessage.set_defaults(msg)
    mod.apiMessage.set_version(msg, m.version)
    mod.apiMessage.set_community(msg, m.community)
    mod.apiMessage.set_pdu(msg, pdu)
    return pyasn1_encoder.encode(msg)


def pdu_tag(pdu) -> int:
    t = pdu.tagSet.superTags[-1]
    return t.tagClass | t.tagFormat | t.tagId


def pysnmp_decode(data: bytes):
    """pysnmp's reading of a message, in our model (Msg or Trap + version)."""
    version = int(api.decodeMessageVersion(data))
    mod = api.PROTOCOL_MODULES[version]
    msg, rest = pyasn1_decoder.decode(data, asn1Spec=mod.Message())
    if rest:
        raise PyAsn1Error("trailing octets")
    pdu = mod.apiMessage.get_pdu(msg)
    ptype = pdu_tag(pdu)
    if ptype == ber.TRAP_V1:
        vbs = [(str(o), *from_pyasn1(v)) for o, v in v1.apiTrapPDU.get_varbinds(pdu)]
        return version, Trap(
            bytes(mod.apiMessage.get_community(msg)),
            str(v1.apiTrapPDU.get_enterprise(pdu)),
            ".".join(map(str, v1.apiTrapPDU.get_agent_address(pdu).asNumbers())),
            int(v1.apiTrapPDU.get_generic_trap(pdu)),
            int(v1.apiTrapPDU.get_specific_trap(pdu)),
            int(v1.apiTrapPDU.get_timestamp(pdu)),
            vbs,
        )
    vbs = [(str(o), *from_pyasn1(v)) for o, v in mod.apiPDU.get_varbinds(pdu)]
    return version, Msg(version, bytes(mod.apiMessage.get_community(msg)), ptype,
                        int(pdu[0]), int(pdu[1]), int(pdu[2]), vbs)


def ours_as_model(m: ber.SnmpMessage):
    if m.pdu_type == ber.TRAP_V1:
        return m.version, Trap(m.community, m.enterprise, m.agent_addr, m.generic_trap,
                               m.specific_trap, m.time_stamp, m.varbinds)
    return m.version, Msg(m.version, m.community, m.pdu_type, m.request_id,
                          m.error_status, m.error_index, m.varbinds)


def ours_encode(m: Msg) -> bytes:
    if m.pdu_type == ber.GETBULK_REQUEST and all(t == ber.NULL for _, t, _ in m.varbinds):
        return ber.encode_getbulk(m.community, m.request_id, m.a, m.b, [o for o, _, _ in m.varbinds])
    return ber.encode_message(m.version, m.community, m.pdu_type, m.request_id, m.a, m.b, m.varbinds)


def pyasn1_pads(m: Msg) -> bool:
    return m.request_id in PYASN1_PADDED or any(
        t == ber.INTEGER and v in PYASN1_PADDED for _, t, v in m.varbinds)


def decode_cold(data: bytes):
    ber.clear_caches()
    return decode_message(data)


# --------------------------------------------------------------------------
# Differential tests against pysnmp / pyasn1

IFTABLE_ROW = [
    ("1.3.6.1.2.1.2.2.1.2.1", ber.OCTET_STRING, b"eth0"),
    ("1.3.6.1.2.1.2.2.1.3.1", ber.INTEGER, 6),
    ("1.3.6.1.2.1.2.2.1.5.1", ber.GAUGE32, 10**9),
    ("1.3.6.1.2.1.2.2.1.10.1", ber.COUNTER32, 2**32 - 1),
    ("1.3.6.1.2.1.31.1.1.1.6.1", ber.COUNTER64, 2**64 - 1),
]


@SETTINGS
@given(messages())
@example(Msg(1, b"public", ber.RESPONSE, 1, 0, 0, IFTABLE_ROW))
@example(Msg(1, b"", ber.RESPONSE, -(2**31), 2**31 - 1, 0,
             [("2.4294967295.4294967295", ber.INTEGER, -(2**31)),
              ("0.0", ber.OCTET_STRING, b""), ("1.39", ber.IP_ADDRESS, "255.0.0.1"),
              ("1.3", ber.OBJECT_IDENTIFIER, ".".join(["1"] * 128)),
              ("1.3.6", ber.END_OF_MIB_VIEW, None)]))
@example(Msg(0, b"x" * 200, ber.SET_REQUEST, 0, 0, 0,
             [("1.3.6.1.4.1.4294967295." + ".".join(["4294967295"] * 121), ber.OPAQUE, b"\x9f\x78\x04")]))
def test_pysnmp_and_ours_agree(m: Msg) -> None:
    theirs = pysnmp_encode(m)
    ours = ours_encode(m)
    # pysnmp's bytes decode with our decoder to the same values (cold, then warm caches)
    assert ours_as_model(decode_cold(theirs)) == (m.version, m)
    assert ours_as_model(decode_message(theirs)) == (m.version, m)
    # our bytes decode with pyasn1 to the same values
    assert pysnmp_decode(ours) == (m.version, m)
    # byte for byte, except for the negative integers pyasn1 pads
    if pyasn1_pads(m):
        assert len(ours) < len(theirs)
    else:
        assert ours == theirs
    assert ours_as_model(decode_message(ours)) == (m.version, m)
    assert reference_decode(ours) == decode_message(ours)


def pysnmp_encode_trap(t: Trap) -> bytes:
    pdu = v1.TrapPDU()
    v1.apiTrapPDU.set_defaults(pdu)
    v1.apiTrapPDU.set_enterprise(pdu, oid_tuple(t.enterprise))
    v1.apiTrapPDU.set_agent_address(pdu, v1.IpAddress(bytes(oid_tuple(t.agent_addr))))
    v1.apiTrapPDU.set_generic_trap(pdu, t.generic)
    v1.apiTrapPDU.set_specific_trap(pdu, t.specific)
    v1.apiTrapPDU.set_timestamp(pdu, t.timestamp)
    v1.apiTrapPDU.set_varbinds(pdu, [(oid_tuple(o), to_pyasn1(0, tg, v)) for o, tg, v in t.varbinds])
    msg = v1.Message()
    v1.apiMessage.set_defaults(msg)
    v1.apiMessage.set_community(msg, t.community)
    v1.apiMessage.set_pdu(msg, pdu)
    return pyasn1_encoder.encode(msg)


@settings(SETTINGS, max_examples=60)
@given(traps)
@example(Trap(b"public", "1.3.6.1.4.1.8072.3.2.10", "192.168.1.254", 6, 17, 2**32 - 1,
              [("1.3.6.1.2.1.2.2.1.1.3", ber.INTEGER, 3), ("1.3.6.1.2.1.1.5.0", ber.OCTET_STRING, b"sw1")]))
def test_v1_trap_equal_to_pysnmp(t: Trap) -> None:
    theirs = pysnmp_encode_trap(t)
    ours = ber.encode_trap_v1(*t)
    assert ours_as_model(decode_cold(theirs)) == (0, t)
    assert ours_as_model(decode_message(theirs)) == (0, t)
    assert pysnmp_decode(ours) == (0, t)
    if t.generic in PYASN1_PADDED or t.specific in PYASN1_PADDED or any(
            tg == ber.INTEGER and v in PYASN1_PADDED for _, tg, v in t.varbinds):
        assert len(ours) < len(theirs)
    else:
        assert ours == theirs


def test_encode_requests_equal_pysnmp() -> None:
    oids = ["1.3.6.1.2.1.2.2.1.10", "1.3.6.1.2.1.31.1.1.1.6", "1.3.6.1.4.1.2021.10.1.3.1"]
    for version in (0, 1):
        for pdu_type, fn in ((ber.GET_REQUEST, ber.encode_get), (ber.GETNEXT_REQUEST, ber.encode_getnext)):
            m = Msg(version, b"public", pdu_type, 0x7FFFFFFF, 0, 0, [(o, ber.NULL, None) for o in oids])
            assert fn(version, b"public", 0x7FFFFFFF, oids) == pysnmp_encode(m)
    m = Msg(1, b"public", ber.GETBULK_REQUEST, 42, 1, 25, [(o, ber.NULL, None) for o in oids])
    assert ber.encode_getbulk(b"public", 42, 1, 25, oids) == pysnmp_encode(m)
    vbs = [("1.3.6.1.2.1.1.3.0", ber.TIMETICKS, 100), ("1.3.6.1.6.3.1.1.4.1.0", ber.OBJECT_IDENTIFIER,
                                                        "1.3.6.1.6.3.1.1.5.3")]
    assert ber.encode_trap_v2(b"c", 7, vbs) == pysnmp_encode(Msg(1, b"c", ber.TRAP_V2, 7, 0, 0, vbs))
    assert ber.encode_inform(b"c", 7, vbs) == pysnmp_encode(Msg(1, b"c", ber.INFORM_REQUEST, 7, 0, 0, vbs))
    assert ber.encode_response(0, b"c", 7, 2, 1, vbs[:1]) == pysnmp_encode(
        Msg(0, b"c", ber.RESPONSE, 7, 2, 1, vbs[:1]))
    assert ber.encode_set(1, b"c", 7, vbs) == pysnmp_encode(Msg(1, b"c", ber.SET_REQUEST, 7, 0, 0, vbs))


def test_pyasn1_padded_integers_are_accepted() -> None:
    for v in sorted(PYASN1_PADDED):
        m = Msg(1, b"p", ber.RESPONSE, v, 0, 0, [("1.3.6.1", ber.INTEGER, v)])
        theirs = pysnmp_encode(m)
        assert ours_as_model(decode_cold(theirs)) == (1, m)
        assert ours_as_model(decode_message(theirs)) == (1, m)
        assert pysnmp_decode(ours_encode(m)) == (1, m)
    assert ber.encode_response(1, b"", 0, 0, 0, [("1.3", ber.INTEGER, -(2**31))]).endswith(
        b"\x02\x04\x80\x00\x00\x00")


def test_integer_boundaries_and_encodings() -> None:
    cases = [
        (b"\x02\x01\x00", ber.INTEGER, 0),
        (b"\x02\x01\x7f", ber.INTEGER, 127),
        (b"\x02\x02\x00\x80", ber.INTEGER, 128),
        (b"\x02\x01\x80", ber.INTEGER, -128),
        (b"\x02\x04\x7f\xff\xff\xff", ber.INTEGER, 2**31 - 1),
        (b"\x02\x04\x80\x00\x00\x00", ber.INTEGER, -(2**31)),
        (b"\x41\x05\x00\xff\xff\xff\xff", ber.COUNTER32, 2**32 - 1),
        (b"\x42\x05\x00\x80\x00\x00\x00", ber.GAUGE32, 2**31),
        (b"\x43\x01\x00", ber.TIMETICKS, 0),
        (b"\x46\x09\x00\xff\xff\xff\xff\xff\xff\xff\xff", ber.COUNTER64, 2**64 - 1),
        (b"\x46\x01\x00", ber.COUNTER64, 0),
    ]
    for tlv, tag, value in cases:
        vb = b"\x06\x02\x2b\x06" + tlv
        data = _wrap_v2c_response(b"\x30" + bytes([len(vb)]) + vb)
        assert decode_cold(data).varbinds == [("1.3.6", tag, value)]
        assert decode_message(data).varbinds == [("1.3.6", tag, value)]
        assert ber.encode_response(1, b"public", 1, 0, 0, [("1.3.6", tag, value)]) == data


def _wrap_v2c_response(varbind_tlvs: bytes, version: int = 1) -> bytes:
    vbl = b"\x30" + ber._len_octets(len(varbind_tlvs)) + varbind_tlvs
    pdu_body = b"\x02\x01\x01\x02\x01\x00\x02\x01\x00" + vbl
    pdu = b"\xa2" + ber._len_octets(len(pdu_body)) + pdu_body
    body = bytes([2, 1, version]) + b"\x04\x06public" + pdu
    return b"\x30" + ber._len_octets(len(body)) + body


def _vb(value_tlv: bytes, oid: bytes = b"\x2b\x06") -> bytes:
    body = b"\x06" + ber._len_octets(len(oid)) + oid + value_tlv
    return b"\x30" + ber._len_octets(len(body)) + body


def test_oid_text_edges() -> None:
    cases = {
        "0.0": b"\x00",
        "0.39": b"\x27",
        "1.0": b"\x28",
        "1.39": b"\x4f",
        "2.0": b"\x50",
        "2.47": b"\x7f",
        "2.48": b"\x81\x00",
        "2.4294967295": b"\x90\x80\x80\x80\x4f",
        "1.3.6.1.4.1.4294967295": b"\x2b\x06\x01\x04\x01\x8f\xff\xff\xff\x7f",
        "1.3.128.16383.16384": b"\x2b\x81\x00\xff\x7f\x81\x80\x00",
    }
    for text, raw in cases.items():
        assert ber.encode_oid(text) == raw
        ber.clear_caches()
        assert ber.decode_oid(raw) == text
        assert ber.decode_oid(raw) == text  # cached
        assert str(v2c.ObjectIdentifier(oid_tuple(text))) == text
        assert pyasn1_encoder.encode(v2c.ObjectIdentifier(oid_tuple(text)))[2:] == raw
    assert ber.encode_oid(".1.3.6") == b"\x2b\x06"  # net-snmp's leading dot


def test_long_lengths_and_non_minimal_lengths_accepted() -> None:
    big = b"A" * 300
    data = ber.encode_response(1, b"public", 1, 0, 0, [("1.3.6.1.2.1.1.1.0", ber.OCTET_STRING, big)])
    assert b"\x04\x82\x01\x2c" in data
    assert decode_cold(data).varbinds[0][2] == big
    # an agent that always writes 0x82 lengths (non-minimal) is accepted, like pyasn1 does
    vb = _vb(b"\x41\x01\x05")
    vbl = b"\x30\x82\x00" + bytes([len(vb)]) + vb
    pdu_body = b"\x02\x01\x01\x02\x01\x00\x02\x01\x00" + vbl
    pdu = b"\xa2\x82\x00" + bytes([len(pdu_body)]) + pdu_body
    body = b"\x02\x01\x01\x04\x06public" + pdu
    data = b"\x30\x82\x00" + bytes([len(body)]) + body
    for _ in range(2):
        assert decode_message(data).varbinds == [("1.3.6", ber.COUNTER32, 5)]
    assert pysnmp_decode(data)[1].varbinds == [("1.3.6", ber.COUNTER32, 5)]
    # 4 length octets accepted, long-form inside a varbind too
    vb = b"\x30\x84\x00\x00\x00\x07\x06\x81\x02\x2b\x06\x05\x00"
    assert decode_cold(_wrap_v2c_response(vb)).varbinds == [("1.3.6", ber.NULL, None)]


def test_getbulk_and_trap_fields() -> None:
    m = decode_message(ber.encode_getbulk(b"pub", 9, 2, 30, ["1.3.6.1.2.1.1", "1.3.6.1.2.1.2.2.1.2"]))
    assert (m.pdu_type, m.request_id, m.non_repeaters, m.max_repetitions) == (ber.GETBULK_REQUEST, 9, 2, 30)
    assert [vb[1] for vb in m.varbinds] == [ber.NULL, ber.NULL]
    t = decode_message(ber.encode_trap_v1(b"pub", "1.3.6.1.4.1.9", "10.1.2.3", 6, 1, 5, []))
    assert (t.request_id, t.enterprise, t.agent_addr, t.generic_trap, t.specific_trap, t.time_stamp) == (
        None, "1.3.6.1.4.1.9", "10.1.2.3", 6, 1, 5)


# --------------------------------------------------------------------------
# Malformed input: only BERError, ever


def corpus() -> list[bytes]:
    vbs = IFTABLE_ROW + [
        ("1.3.6.1.2.1.4.20.1.1.192.168.200.1", ber.IP_ADDRESS, "192.168.200.1"),
        ("1.3.6.1.2.1.1.2.0", ber.OBJECT_IDENTIFIER, "1.3.6.1.4.1.8072.3.2.10"),
        ("1.3.6.1.2.1.1.1.0", ber.OCTET_STRING, b"Linux " * 30),
        ("1.3.6.1.4.1.1.2", ber.OPAQUE, b"\x9f\x78\x04\x3f\x80\x00\x00"),
        ("1.3.6.1.2.1.1.3.0", ber.TIMETICKS, 12345678),
        ("1.3.6.1.2.1.1.9.1.2.200", ber.NO_SUCH_INSTANCE, None),
        ("1.3.6.1.2.1.1.9.1.3.1", ber.NO_SUCH_OBJECT, None),
        ("1.3.6.1.2.1.99", ber.END_OF_MIB_VIEW, None),
    ]
    return [
        ber.encode_response(1, b"public", 0x12345678, 0, 0, vbs),
        ber.encode_response(0, b"private", 5, 2, 1, IFTABLE_ROW[:4]),
        ber.encode_getbulk(b"public", -1, 0, 25, ["1.3.6.1.2.1.2.2.1.10", "1.3.6.1.2.1.31.1.1.1.6"]),
        ber.encode_get(0, b"", 1, ["1.3.6.1.2.1.1.1.0"]),
        ber.encode_trap_v1(b"public", "1.3.6.1.4.1.9.9.41.2", "10.0.0.1", 6, 1, 4242, IFTABLE_ROW[:2]),
        ber.encode_trap_v2(b"public", 77, [("1.3.6.1.2.1.1.3.0", ber.TIMETICKS, 1),
                                            ("1.3.6.1.6.3.1.1.4.1.0", ber.OBJECT_IDENTIFIER, "1.3.6.1.6.3.1.1.5.4")]),
        ber.encode_set(1, b"x" * 130, 1, [("1.3.6.1.2.1.1.5.0", ber.OCTET_STRING, b"y" * 200)]),
    ]


def reference_decode(data: bytes) -> ber.SnmpMessage:
    """The general (slow) paths only: no header fast path, no varbind cache."""
    def general_varbinds(data: bytes, pos: int, end: int) -> list:
        out = []
        while pos < end:
            item, pos = ber._varbind(data, pos, end)
            out.append(item)
        return out

    saved = ber._varbinds
    ber._varbinds = general_varbinds
    try:
        return ber._decode_message(data)
    finally:
        ber._varbinds = saved


def check_total(data: bytes, warm_with: bytes | None = None):
    """Decode with warm caches (after decoding *warm_with*, e.g. the valid
    message *data* was derived from), cold caches and the general paths
    only: the same result each time, and no exception but BERError."""
    if warm_with is not None:
        decode_message(warm_with)
    results = []
    for how in ("warm", "cold", "reference"):
        if how == "cold":
            ber.clear_caches()
        try:
            results.append(("ok", (reference_decode if how == "reference" else decode_message)(data)))
        except BERError as exc:
            assert 0 <= exc.offset <= len(data), exc
            assert exc.reason
            results.append(("err", exc.offset, exc.reason))
    assert results[0] == results[1] == results[2]
    return results[0]


def test_every_truncation_raises_bererror() -> None:
    for data in corpus():
        for i in range(len(data)):
            outcome = check_total(data[:i], warm_with=data)
            assert outcome[0] == "err"
        assert check_total(data)[0] == "ok"


def test_every_inner_truncation_raises_bererror() -> None:
    """Truncate the varbind list at every offset, outer lengths kept right,
    so that the varbind decoder itself meets every truncated element."""
    vbs = [vb for vb in ber.decode_message(corpus()[0]).varbinds]
    vbs.append(("1.3.6.1.2.1.4.22.1.2.3.10.200.130.7", ber.OCTET_STRING, b"\x00\x1a\x2b\x3c\x4d\x5e"))
    content = ber._varbind_list(vbs)[4:]  # the list is > 255 octets: 30 82 hh ll
    assert len(content) > 0xFF
    ends = {0}  # an empty list is valid
    pos = 0
    while pos < len(content):  # where each complete varbind ends
        s, e = ber._tl(content, pos, len(content), "vb")
        ends.add(e)
        pos = e
    full = _wrap_v2c_response(content)
    for warm in (full, None):
        for i in range(len(content)):
            outcome = check_total(_wrap_v2c_response(content[:i]), warm_with=warm)
            if i in ends:
                assert outcome[0] == "ok" and len(outcome[1].varbinds) == sorted(ends).index(i)
            else:
                assert outcome[0] == "err", (i, outcome)


def pyasn1_accepts_same(data: bytes, ours: ber.SnmpMessage) -> None:
    """Whatever we accept, pysnmp reads the same (unless it is a v1 message
    carrying v2c-only value types, which we tolerate and pyasn1 refuses)."""
    if ours.version == 0 and any(t in (ber.COUNTER64, ber.NO_SUCH_OBJECT, ber.NO_SUCH_INSTANCE,
                                       ber.END_OF_MIB_VIEW) for _, t, _ in ours.varbinds):
        return
    assert pysnmp_decode(data) == ours_as_model(ours)


def mutate(rng: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        if not b:
            break
        i = rng.randrange(len(b))
        op = rng.randrange(7)
        if op == 0:
            b[i] = rng.randrange(256)
        elif op == 1:
            b[i] ^= 1 << rng.randrange(8)
        elif op == 2:
            del b[i]
        elif op == 3:
            b.insert(i, rng.randrange(256))
        elif op == 4:
            b[i] = rng.choice([0x00, 0x7F, 0x80, 0x81, 0x82, 0x84, 0x85, 0xFF, 0x30, 0x06, 0x02, 0x04])
        elif op == 5:
            b[i] = (b[i] + rng.choice([-1, 1])) & 0xFF
        else:
            j = rng.randrange(len(b))
            b[i:i] = b[j : j + rng.randint(1, 8)]
    return bytes(b)


def test_random_mutations_only_bererror_and_agree_with_pyasn1() -> None:
    rng = random.Random(20261122)
    base = corpus()
    accepted = 0
    for n in range(4000):
        original = rng.choice(base)
        data = mutate(rng, original)
        outcome = check_total(data, warm_with=original)
        if outcome[0] == "ok":
            accepted += 1
            if n % 4 == 0:  # pyasn1 is slow: check a quarter
                pyasn1_accepts_same(data, outcome[1])
    assert accepted > 50  # some mutations (values, OIDs) stay well-formed


@settings(SETTINGS, max_examples=80)
@given(messages(), st.data())
def test_mutated_hypothesis_messages(m: Msg, data) -> None:
    encoded = ours_encode(m)
    i = data.draw(st.integers(0, len(encoded) - 1))
    new = data.draw(st.integers(0, 255))
    mutated = encoded[:i] + bytes([new]) + encoded[i + 1 :]
    outcome = check_total(mutated, warm_with=encoded)
    if outcome[0] == "ok":
        pyasn1_accepts_same(mutated, outcome[1])


@settings(SETTINGS, max_examples=700)
@given(st.binary(max_size=200))
@example(b"")
@example(b"\x30")
@example(b"\x30\x80\x02\x01\x01\x00\x00")
@example(b"\x30\x85\x00\x00\x00\x00\x00")
@example(b"\x30\xff")
@example(b"\x30\x80" * 5000)
def test_random_bytes_only_bererror(data: bytes) -> None:
    check_total(data)


@settings(SETTINGS, max_examples=600)
@given(st.binary(max_size=120))
def test_random_varbind_bytes_only_bererror(body: bytes) -> None:
    """Random bytes inside a valid envelope reach the varbind decoder."""
    check_total(_wrap_v2c_response(body))
    check_total(_wrap_v2c_response(b"\x30" + bytes([len(body) & 0x7F]) + body))


MALFORMED = {
    "indefinite length": b"\x30\x80\x02\x01\x01\x04\x00\xa2\x0b\x02\x01\x01\x02\x01\x00\x02\x01\x00\x30\x00\x00\x00",
    "5 length octets": b"\x30\x85\x00\x00\x00\x00\x13" + b"\x02\x01\x01\x04\x00\xa2\x0b\x02\x01\x01\x02\x01\x00\x02\x01\x00\x30\x00",
    "version 3": b"\x30\x13\x02\x01\x03\x04\x00\xa2\x0b\x02\x01\x01\x02\x01\x00\x02\x01\x00\x30\x00",
    "version 2": b"\x30\x13\x02\x01\x02\x04\x00\xa2\x0b\x02\x01\x01\x02\x01\x00\x02\x01\x00\x30\x00",
    "negative version": b"\x30\x13\x02\x01\xff\x04\x00\xa2\x0b\x02\x01\x01\x02\x01\x00\x02\x01\x00\x30\x00",
    "getbulk in v1": b"\x30\x13\x02\x01\x00\x04\x00\xa5\x0b\x02\x01\x01\x02\x01\x00\x02\x01\x00\x30\x00",
    "v1 trap in v2c": b"\x30\x13\x02\x01\x01\x04\x00\xa4\x0b\x02\x01\x01\x02\x01\x00\x02\x01\x00\x30\x00",
    "unknown pdu": b"\x30\x13\x02\x01\x01\x04\x00\xa9\x0b\x02\x01\x01\x02\x01\x00\x02\x01\x00\x30\x00",
    "trailing octet": b"\x30\x13\x02\x01\x01\x04\x00\xa2\x0b\x02\x01\x01\x02\x01\x00\x02\x01\x00\x30\x00\x00",
    "negative error-index": b"\x30\x13\x02\x01\x01\x04\x00\xa2\x0b\x02\x01\x01\x02\x01\x00\x02\x01\xff\x30\x00",
    "empty request-id": b"\x30\x12\x02\x01\x01\x04\x00\xa2\x0a\x02\x00\x02\x01\x00\x02\x01\x00\x30\x00",
    "constructed community": b"\x30\x13\x02\x01\x01\x24\x00\xa2\x0b\x02\x01\x01\x02\x01\x00\x02\x01\x00\x30\x00",
    "pdu length past end": b"\x30\x13\x02\x01\x01\x04\x00\xa2\x0c\x02\x01\x01\x02\x01\x00\x02\x01\x00\x30\x00",
}
BAD_VALUES = {
    "empty integer": b"\x02\x00",
    "integer 6 octets": b"\x02\x06\x00\x00\x00\x00\x00\x01",
    "integer above int32": b"\x02\x05\x00\x80\x00\x00\x00",
    "negative counter32": b"\x41\x04\xff\xff\xff\xff",
    "counter32 5 octets not 00": b"\x41\x05\x01\x00\x00\x00\x00",
    "gauge32 6 octets": b"\x42\x06\x00\x00\x00\x00\x00\x01",
    "negative timeticks": b"\x43\x01\x80",
    "counter64 10 octets": b"\x46\x0a\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01",
    "negative counter64": b"\x46\x01\xff",
    "ip 5 octets": b"\x40\x05\x01\x02\x03\x04\x05",
    "ip 3 octets": b"\x40\x03\x01\x02\x03",
    "null with content": b"\x05\x01\x00",
    "noSuchObject with content": b"\x80\x01\x00",
    "constructed octet string": b"\x24\x03\x04\x01\x41",
    "unknown application tag": b"\x45\x01\x00",
    "boolean": b"\x01\x01\xff",
    "high tag number": b"\x5f\x81\x00\x00",
    "oid value empty": b"\x06\x00",
    "oid value 0x80 lead": b"\x06\x03\x2b\x80\x01",
    "no value": b"",
}
BAD_OIDS = {
    "empty": b"",
    "leading 0x80": b"\x2b\x80\x06",
    "first 0x80": b"\x80\x2b",
    "unterminated": b"\x2b\x86",
    "subid 2**32": b"\x2b\x90\x80\x80\x80\x00",
    "subid huge": b"\x2b" + b"\xff" * 20 + b"\x7f",
    "second arc 2**32": b"\x90\x80\x80\x80\x50",
    "129 arcs": b"\x2b" + b"\x01" * 127,
    "129 arcs multi": b"\x2b" + b"\x81\x01" * 127,
    "129 arcs prefix": b"\x2b" + b"\x01" * 126 + b"\x81\x00",
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_messages(name: str) -> None:
    outcome = check_total(MALFORMED[name])
    assert outcome[0] == "err", outcome


@pytest.mark.parametrize("name", sorted(BAD_VALUES))
def test_malformed_values(name: str) -> None:
    good = _wrap_v2c_response(_vb(b"\x41\x01\x05"))  # a good varbind, same OID
    outcome = check_total(_wrap_v2c_response(_vb(BAD_VALUES[name])), warm_with=good)
    assert outcome[0] == "err", outcome


@pytest.mark.parametrize("name", sorted(BAD_OIDS))
def test_malformed_oids(name: str) -> None:
    raw = BAD_OIDS[name]
    if len(raw) < 0x80:
        outcome = check_total(_wrap_v2c_response(_vb(b"\x05\x00", raw)))
        assert outcome[0] == "err", outcome
        outcome = check_total(_wrap_v2c_response(_vb(b"\x06" + bytes([len(raw)]) + raw)))
        assert outcome[0] == "err", outcome
    for warm in (False, True):
        if not warm:
            ber.clear_caches()
        with pytest.raises(BERError):
            ber.decode_oid(raw)


def test_128_arcs_accepted_everywhere() -> None:
    for raw in (b"\x2b" + b"\x01" * 126, b"\x2b" + b"\x81\x01" * 126, b"\x2b" + b"\x01" * 125 + b"\x81\x00"):
        text = ber.decode_oid(raw)
        assert text.count(".") == 127
        assert ber.encode_oid(text) == raw
        assert check_total(_wrap_v2c_response(_vb(b"\x05\x00", raw)))[0] == "ok"
    with pytest.raises(ValueError):
        ber.encode_oid(".".join(["1"] * 129))


def test_header_cache_never_changes_results() -> None:
    """Same OID, different value types and lengths, warm then cold."""
    values = [b"\x41\x01\x05", b"\x41\x05\x00\xff\xff\xff\xff", b"\x41\x02\x00\x80", b"\x02\x01\xff",
              b"\x04\x00", b"\x04\x03abc", b"\x40\x04\x0a\x00\x00\x01", b"\x06\x02\x2b\x06",
              b"\x44\x01\x00", b"\x46\x09\x00\xff\xff\xff\xff\xff\xff\xff\xff", b"\x05\x00", b"\x82\x00"]
    msgs = [_wrap_v2c_response(b"".join(_vb(v, oid) for v in values))
            for oid in (b"\x2b\x06\x01", b"\x2b\x06\x81\x00", b"\x2b\x06\x01\x81\x00")]
    for data in msgs:
        ber.clear_caches()
        cold = decode_message(data)
        for _ in range(3):
            assert decode_message(data) == cold
        assert ours_as_model(cold) == pysnmp_decode(data)
    # same header, value out of range on a cache hit
    decode_message(_wrap_v2c_response(_vb(b"\x41\x05\x00\xff\xff\xff\xff")))
    with pytest.raises(BERError, match="out of range"):
        decode_message(_wrap_v2c_response(_vb(b"\x41\x05\x01\xff\xff\xff\xff")))
    with pytest.raises(BERError, match="out of range"):
        decode_message(_wrap_v2c_response(_vb(b"\x02\x05\x00\xff\xff\xff\xff")))


def test_caches_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OID_CACHE_MAX", "VARBIND_CACHE_MAX", "PREFIX_CACHE_MAX", "ENCODE_CACHE_MAX"):
        monkeypatch.setattr(ber, name, 50)
    ber.clear_caches()
    for i in range(500):
        vbs = [(f"1.3.6.1.4.1.{i}.{j}", ber.COUNTER32, j) for j in range(3)]
        data = ber.encode_response(1, b"p", i, 0, 0, vbs)
        assert decode_message(data).varbinds == vbs
        assert ber.decode_oid(ber.encode_oid(f"1.3.{i}.{i}")) == f"1.3.{i}.{i}"
    assert all(n <= 50 for n in ber.cache_sizes().values()), ber.cache_sizes()
    ber.clear_caches()


def test_bytearray_and_memoryview_input() -> None:
    data = corpus()[0]
    assert decode_message(bytearray(data)) == decode_message(memoryview(data)) == decode_message(data)
    with pytest.raises(TypeError):
        decode_message("not bytes")  # type: ignore[arg-type]


# --------------------------------------------------------------------------
# Encoder argument checks


@pytest.mark.parametrize(
    "vb",
    [
        ("1.3", ber.INTEGER, 2**31),
        ("1.3", ber.INTEGER, -(2**31) - 1),
        ("1.3", ber.INTEGER, True),
        ("1.3", ber.COUNTER32, -1),
        ("1.3", ber.GAUGE32, 2**32),
        ("1.3", ber.COUNTER64, 2**64),
        ("1.3", ber.OCTET_STRING, "text"),
        ("1.3", ber.IP_ADDRESS, "1.2.3"),
        ("1.3", ber.IP_ADDRESS, "1.2.3.256"),
        ("1.3", ber.NULL, 0),
        ("1.3", "Float", 1.0),
        ("1.3", ber.OBJECT_IDENTIFIER, "3.1"),
        ("3.1", ber.NULL, None),
        ("1.40", ber.NULL, None),
        ("1", ber.NULL, None),
        ("1.3.x", ber.NULL, None),
        ("1.3.-1", ber.NULL, None),
        ("1.3.4294967296", ber.NULL, None),
        ("1.3..6", ber.NULL, None),
        ("1.3.\u0661", ber.NULL, None),
    ],
)
def test_encoder_rejects_bad_varbinds(vb) -> None:
    with pytest.raises((ValueError, TypeError)):
        ber.encode_response(1, b"c", 1, 0, 0, [vb])


def test_encoder_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        ber.encode_get(3, b"c", 1, ["1.3"])
    with pytest.raises(ValueError):
        ber.encode_get(1, b"c", 2**31, ["1.3"])
    with pytest.raises(TypeError):
        ber.encode_get(1, "c", 1, ["1.3"])  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        ber.encode_get(1, b"c", 1, "1.3.6")
    with pytest.raises(ValueError):
        ber.encode_getbulk(b"c", 1, -1, 10, ["1.3"])
    with pytest.raises(ValueError):
        ber.encode_message(0, b"c", ber.GETBULK_REQUEST, 1, 0, 0, [])
    with pytest.raises(ValueError):
        ber.encode_trap_v1(b"c", "1.3", "1.2.3.4", 0, 0, -1, [])
