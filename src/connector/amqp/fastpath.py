"""Hand-encoded AMQP frames for the hot path: publish, deliver, ack, nack.

txamqp turns every frame into objects and walks each through several
Deferreds, locks and queues: on this machine that caps a connection at a few
thousand messages per second. The frames a connector sends and receives per
message are few and fixed (basic.publish + content header + body out,
basic.deliver + header + body in, basic.ack both ways), so they are encoded
and decoded here with ``struct`` and handed to plain callbacks. Every other
frame (handshake, declarations, qos, consume, close, heartbeats...) still
goes through txamqp unchanged.

Layouts follow AMQP 0-9-1 section 4.2 (frames) and the basic class's
property list; they are checked against txamqp's own encoder by tests.
"""

from __future__ import annotations

import struct

from connector.amqp import fieldtable

FRAME_METHOD = 1
FRAME_HEADER = 2
FRAME_BODY = 3
FRAME_HEARTBEAT = 8
FRAME_END = 0xCE
FRAME_END_BYTE = b"\xce"

BASIC = 60
BASIC_PUBLISH = 40
BASIC_DELIVER = 60
BASIC_ACK = 80
BASIC_NACK = 120

_frame_header = struct.Struct("!BHI")
_method_id = struct.Struct("!HH")
_content_header = struct.Struct("!HHQH")
_u64_u8 = struct.Struct("!QB")
_u64 = struct.Struct("!Q")
_u8 = struct.Struct("!B")

_PUBLISH_PREFIX = struct.pack("!HHH", BASIC, BASIC_PUBLISH, 0)
_ACK_PREFIX = struct.pack("!HH", BASIC, BASIC_ACK)

# The basic class's properties, in wire order, with their flag bit and kind.
PROPERTIES: tuple[tuple[str, int, str], ...] = (
    ("content-type", 15, "shortstr"),
    ("content-encoding", 14, "shortstr"),
    ("headers", 13, "table"),
    ("delivery-mode", 12, "octet"),
    ("priority", 11, "octet"),
    ("correlation-id", 10, "shortstr"),
    ("reply-to", 9, "shortstr"),
    ("expiration", 8, "shortstr"),
    ("message-id", 7, "shortstr"),
    ("timestamp", 6, "timestamp"),
    ("type", 5, "shortstr"),
    ("user-id", 4, "shortstr"),
    ("app-id", 3, "shortstr"),
    ("reserved", 2, "shortstr"),
)


class FrameError(ValueError):
    """A frame that does not follow the protocol."""


def shortstr(value: str | bytes) -> bytes:
    """A short string: one length octet and at most 255 bytes."""
    data = value.encode() if isinstance(value, str) else value
    if len(data) > 255:
        raise FrameError(f"short string longer than 255 bytes: {data[:40]!r}...")
    return _u8.pack(len(data)) + data


def frame(frame_type: int, channel: int, payload: bytes) -> bytes:
    """One complete frame: header, payload, frame-end octet."""
    return _frame_header.pack(frame_type, channel, len(payload)) + payload + FRAME_END_BYTE


def encode_properties(properties: dict) -> tuple[int, bytes]:
    """The property flags and the encoded properties of a content header."""
    flags = 0
    parts = []
    for name, bit, kind in PROPERTIES:
        value = properties.get(name)
        if value is None:
            continue
        flags |= 1 << bit
        if kind == "shortstr":
            parts.append(shortstr(value))
        elif kind == "octet":
            parts.append(_u8.pack(value))
        elif kind == "timestamp":
            parts.append(_u64.pack(int(value)))
        else:
            parts.append(fieldtable.encode_table(value))
    return flags, b"".join(parts)


_JSON_PERSISTENT = shortstr("application/json") + b"\x02"
_STANDARD_FLAGS = (1 << 15) | (1 << 12) | (1 << 7) | (1 << 6) | (1 << 5) | (1 << 3)
#: The user-id property's flag, added to the standard ones when a user is set.
USER_ID_FLAG = 1 << 4


def encode_standard_properties(message_id: str, timestamp: int, msg_type: str,
                               app_id: bytes) -> tuple[int, bytes]:
    """The properties every Centaure message carries, encoded without a loop.

    ``app_id`` is the already encoded short string (it never changes).
    """
    return _STANDARD_FLAGS, b"".join((
        _JSON_PERSISTENT, shortstr(message_id), _u64.pack(timestamp), shortstr(msg_type), app_id))


def encode_publish(channel: int, exchange: str, routing_key: str, properties: dict | None,
                   body: bytes, frame_max: int,
                   encoded_properties: tuple[int, bytes] | None = None) -> bytes:
    """basic.publish, its content header and body frames, ready to write.

    Give either ``properties`` or, already encoded, ``encoded_properties``.
    """
    method = _PUBLISH_PREFIX + shortstr(exchange) + shortstr(routing_key) + b"\x00"
    flags, props = encoded_properties or encode_properties(properties)
    header = _content_header.pack(BASIC, 0, len(body), flags) + props
    out = [frame(FRAME_METHOD, channel, method), frame(FRAME_HEADER, channel, header)]
    chunk = max(frame_max - 8, 1) if frame_max else len(body) or 1
    for start in range(0, len(body), chunk):
        out.append(frame(FRAME_BODY, channel, body[start:start + chunk]))
    return b"".join(out)


def encode_ack(channel: int, delivery_tag: int, multiple: bool) -> bytes:
    """basic.ack from a consumer."""
    return frame(FRAME_METHOD, channel, _ACK_PREFIX + _u64_u8.pack(delivery_tag, 1 if multiple else 0))


def _read_shortstr(data, pos: int) -> tuple[str, int]:
    n = data[pos]
    end = pos + 1 + n
    if end > len(data):
        raise FrameError("short string runs past the end of its frame")
    raw = data[pos + 1:end]
    try:
        return str(raw, "utf-8"), end
    except UnicodeDecodeError:
        return str(raw, "latin-1"), end


# flags -> the (name, kind) of the properties present, in wire order: a message
# carries the same few properties as the previous ones, so the 14 bits are
# looked at once per combination, not once per message.
_PRESENT: dict[int, tuple[tuple[str, str], ...]] = {}


def decode_properties(data, pos: int) -> dict:
    """The properties of a content header, keyed like txamqp's."""
    (flags,) = struct.unpack_from("!H", data, pos)
    pos += 2
    while flags & 1:  # a continuation flag word (never used by basic, but legal)
        (more,) = struct.unpack_from("!H", data, pos)
        pos += 2
        flags &= ~1
        if not more & 1:
            break
    present = _PRESENT.get(flags)
    if present is None:
        present = _PRESENT[flags] = tuple((name, kind) for name, bit, kind in PROPERTIES
                                          if flags & (1 << bit))
    props: dict = {}
    for name, kind in present:
        if kind == "shortstr":
            props[name], pos = _read_shortstr(data, pos)
        elif kind == "octet":
            props[name] = data[pos]
            pos += 1
        elif kind == "timestamp":
            (props[name],) = _u64.unpack_from(data, pos)
            pos += 8
        else:
            props[name], pos = fieldtable.decode_table(data, pos)
    return props


class Deliver:
    """A basic.deliver being assembled from its method, header and body frames."""

    __slots__ = ("consumer_tag", "delivery_tag", "redelivered", "exchange", "routing_key",
                 "properties", "size", "chunks", "received")

    def __init__(self, consumer_tag, delivery_tag, redelivered, exchange, routing_key) -> None:
        self.consumer_tag = consumer_tag
        self.delivery_tag = delivery_tag
        self.redelivered = redelivered
        self.exchange = exchange
        self.routing_key = routing_key
        self.properties: dict | None = None
        self.size = 0
        self.chunks: list[bytes] = []
        self.received = 0

    @property
    def body(self) -> bytes:
        return self.chunks[0] if len(self.chunks) == 1 else b"".join(self.chunks)


def decode_deliver(payload) -> Deliver:
    """The arguments of a basic.deliver method payload (after class and method ids)."""
    consumer_tag, pos = _read_shortstr(payload, 4)
    delivery_tag, bits = _u64_u8.unpack_from(payload, pos)
    pos += 9
    exchange, pos = _read_shortstr(payload, pos)
    routing_key, pos = _read_shortstr(payload, pos)
    return Deliver(consumer_tag, delivery_tag, bool(bits & 1), exchange, routing_key)


def decode_confirm(payload) -> tuple[int, bool]:
    """delivery-tag and multiple of a basic.ack or basic.nack payload."""
    tag, bits = _u64_u8.unpack_from(payload, 4)
    return tag, bool(bits & 1)
