"""The hand-encoded hot frames equal what txamqp itself encodes and decodes."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings, strategies as st
from txamqp.connection import Body, Frame, Header, Method
from txamqp.protocol import FrameReceiver

from connector.amqp import fastpath, fieldtable
from connector.amqp.spec import load_spec

fieldtable.install_into_txamqp()
SPEC = load_spec()
BASIC = SPEC.classes.byname["basic"]


def txamqp_frame(channel: int, payload) -> bytes:
    receiver = FrameReceiver(SPEC)
    return receiver._pack_frame(Frame(channel, payload))


def txamqp_unpack(data: bytes):
    return FrameReceiver(SPEC)._unpack_frame(data)


def _method(name: str, *args):
    return Method(BASIC.methods.byname[name], *args)


# txamqp writes a short string's length in characters, not bytes, so it is
# only a valid reference for ASCII; UTF-8 is checked by a round trip below.
shortstrs = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=40)
props = st.fixed_dictionaries(
    {},
    optional={
        "content-type": shortstrs,
        "headers": st.dictionaries(st.text(min_size=1, max_size=10), st.one_of(
            st.integers(-2**31, 2**31 - 1), st.text(max_size=20), st.booleans()), max_size=4),
        "delivery-mode": st.integers(1, 2),
        "priority": st.integers(0, 9),
        "message-id": shortstrs,
        "timestamp": st.integers(0, 2**40),
        "type": shortstrs,
        "app-id": shortstrs,
    },
)


@settings(max_examples=150, deadline=None)
@given(channel=st.integers(1, 100), exchange=shortstrs, key=shortstrs, properties=props,
       body=st.binary(max_size=3000))
def test_publish_frames_equal_txamqp(channel, exchange, key, properties, body):
    frame_max = 1024
    ours = fastpath.encode_publish(channel, exchange, key, properties, body, frame_max)
    theirs = txamqp_frame(channel, _method("publish", 0, exchange, key, False, False))
    theirs += txamqp_frame(channel, Header(BASIC, 0, len(body), **properties))
    for start in range(0, len(body), frame_max - 8):
        theirs += txamqp_frame(channel, Body(body[start:start + frame_max - 8]))
    assert ours == theirs


def test_standard_properties_equal_the_generic_encoder():
    flags, data = fastpath.encode_standard_properties("id-1", 1700000000, "perf",
                                                      fastpath.shortstr("snmp"))
    assert (flags, data) == fastpath.encode_properties({
        "content-type": "application/json", "delivery-mode": 2, "message-id": "id-1",
        "timestamp": 1700000000, "type": "perf", "app-id": "snmp"})


@pytest.mark.parametrize("multiple", [True, False])
def test_ack_frame_equals_txamqp(multiple):
    assert fastpath.encode_ack(3, 2**40 + 5, multiple) == txamqp_frame(
        3, _method("ack", 2**40 + 5, multiple))


@settings(max_examples=150, deadline=None)
@given(tag=st.integers(1, 2**64 - 1), redelivered=st.booleans(), consumer=shortstrs,
       exchange=shortstrs, key=shortstrs, properties=props)
def test_deliver_and_header_decode_like_txamqp(tag, redelivered, consumer, exchange, key,
                                               properties):
    method = txamqp_frame(1, _method("deliver", consumer, tag, redelivered, exchange, key))
    d = fastpath.decode_deliver(method[7:-1])
    assert (d.consumer_tag, d.delivery_tag, d.redelivered, d.exchange, d.routing_key) == (
        consumer, tag, redelivered, exchange, key)
    header = txamqp_frame(1, Header(BASIC, 0, 10, **properties))
    decoded = fastpath.decode_properties(header[7:-1], 12)
    expected = txamqp_unpack(header).payload.properties
    assert decoded == {k: v for k, v in expected.items() if v is not None}


@pytest.mark.parametrize("name,ack", [("ack", True), ("nack", False)])
def test_confirms_decode(name, ack):
    args = (77, True) if ack else (77, True, False)
    data = txamqp_frame(1, _method(name, *args))
    assert fastpath.decode_confirm(data[7:-1]) == (77, True)


def test_long_short_string_is_refused():
    with pytest.raises(fastpath.FrameError):
        fastpath.shortstr("x" * 256)


def test_body_split_at_frame_max():
    data = fastpath.encode_publish(1, "e", "k", {}, b"x" * 2500, 1000)
    bodies = []
    pos = 0
    while pos < len(data):
        ftype, _ch, size = fastpath._frame_header.unpack_from(data, pos)
        if ftype == fastpath.FRAME_BODY:
            bodies.append(size)
        assert data[pos + 7 + size] == fastpath.FRAME_END
        pos += 8 + size
    assert bodies == [992, 992, 516]


def test_utf8_names_round_trip_with_byte_lengths():
    name = "équipement-ß.北京"
    payload = (fastpath._method_id.pack(60, 60) + fastpath.shortstr("ctag")
               + fastpath._u64_u8.pack(9, 1) + fastpath.shortstr(name) + fastpath.shortstr(name))
    d = fastpath.decode_deliver(payload)
    assert (d.exchange, d.routing_key, d.redelivered) == (name, name, True)
    flags, data = fastpath.encode_properties({"type": name, "headers": {"h": name}})
    decoded = fastpath.decode_properties(struct.pack("!H", flags) + data, 0)
    assert decoded == {"type": name, "headers": {"h": name}}
