"""AMQP 0-9-1 field tables: a complete codec, and its installation into txamqp.

Why txamqp is patched
---------------------
txamqp 0.8.2 (``txamqp.codec.Codec``) only decodes the field types ``S``,
``I``, ``F`` and ``t`` and only encodes ``S`` and ``I``.  Any other type
raises ``ValueError`` inside the protocol and the connection drops.  RabbitMQ
routinely sends such values: a dead-lettered message carries ``x-death``, an
array (``A``) of tables holding a long-long (``l``) count and timestamps
(``T``).  And a client must advertise its capabilities in
``connection.start-ok`` as a nested table of booleans, which txamqp cannot
encode (``True`` would go out as the integer ``I`` 1).
:func:`install_into_txamqp` replaces ``Codec.encode_table`` and
``Codec.decode_table`` with thin methods that call this module.

Type codes
----------
Python to AMQP (:func:`encode_table`): ``bool`` -> ``t``; ``int`` -> ``I``
(signed 32) when it fits, else ``l`` (signed 64), else an error; ``float``
-> ``d``; ``str`` -> ``S`` (UTF-8); ``bytes``/``bytearray``/``memoryview``
-> ``x``; ``Decimal`` -> ``D``; ``datetime`` -> ``T`` (whole seconds, UTC;
naive means UTC); ``None`` -> ``V``; ``list``/``tuple`` -> ``A``; any
``Mapping`` -> ``F``.  :class:`FieldValue` forces a type code.

AMQP to Python (:func:`decode_table`) follows RabbitMQ's reading, which
differs from the 0-9-1 specification's type table (see RabbitMQ's
"AMQP 0-9-1 errata" page and its ``rabbit_binary_parser``):

=====  ===================  ===========================================
code   decoded as           note
=====  ===================  ===========================================
t      bool                 any non-zero octet is true
b B    int                  signed / unsigned 8
s      int                  signed 16 (the spec says short string;
                            RabbitMQ and Qpid read int16)
U      int                  signed 16, the spec's spelling.  RabbitMQ
                            cannot parse it: never send ``U`` to it
u      int                  unsigned 16
I i    int                  signed / unsigned 32
l      int                  signed 64 (the spec says unsigned)
L      int                  signed 64: RabbitMQ reads both ``l`` and
                            ``L`` as signed 64, and so do we, so that a
                            value means the same here as in the broker
f d    float                IEEE 754 single / double
D      Decimal              scale octet + *signed* 32-bit unscaled value
                            (the spec says unsigned; RabbitMQ passes the
                            32 bits through unchanged, clients use signed)
S      str, or bytes        bytes when not valid UTF-8: RabbitMQ uses
                            ``S`` for binary values too
x      bytes
A      list
T      datetime             aware, UTC.  A value past year 9999 (say,
                            milliseconds written as seconds by some
                            publisher) stays an int of seconds rather
                            than failing the whole delivery
F      dict
V      None
=====  ===================  ===========================================

Field names are decoded and encoded as UTF-8 with ``surrogateescape``:
a name that is not valid UTF-8 never fails a delivery, and it encodes
back to the very same bytes.

Malformed input raises :class:`FieldTableError` (a ``ValueError``) naming
the field path (``x-death[0].count``) and the byte offset; no
``IndexError`` or ``struct.error`` escapes.
"""

from __future__ import annotations

import functools
import platform
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from types import MappingProxyType
from typing import Any

__all__ = [
    "CLIENT_CAPABILITIES",
    "FieldTableError",
    "FieldTableTypeError",
    "FieldValue",
    "TYPE_CODES",
    "client_properties",
    "decode_array",
    "decode_table",
    "decode_table_payload",
    "encode_array",
    "encode_table",
    "install_into_txamqp",
]

# -- errors -------------------------------------------------------------------


def _format_path(path: Sequence[str | int]) -> str:
    parts: list[str] = []
    for item in path:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        else:
            parts.append(f".{item}" if parts else item)
    return "".join(parts)


class FieldTableError(ValueError):
    """A field table that cannot be decoded, or a value that cannot be encoded.

    ``path`` lists the keys (str) and array indexes (int) from the outer
    table down to the faulty value; ``offset`` is the byte offset in the
    decoded buffer (None when encoding).
    """

    def __init__(self, reason: str, offset: int | None = None,
                 path: list[str | int] | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.offset = offset
        # Filled in while the exception climbs out of nested tables/arrays,
        # so the happy path never pays for building names.
        self.path: list[str | int] = [] if path is None else path

    def __str__(self) -> str:
        where = []
        if self.path:
            where.append(f"field {_format_path(self.path)!r}")
        if self.offset is not None:
            where.append(f"at offset {self.offset}")
        return f"{' '.join(where)}: {self.reason}" if where else self.reason

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.reason, self.offset, list(self.path)))


class FieldTableTypeError(FieldTableError, TypeError):
    """A Python value (or field name) of a type with no AMQP encoding."""


# -- typed values -------------------------------------------------------------

# Every code this module can write; FieldValue checks against it.
TYPE_CODES = frozenset("tbBsUuIilLfdDSxATFV")


@dataclass(frozen=True, slots=True)
class FieldValue:
    """A value with an explicit AMQP type code, e.g. ``FieldValue("b", 5)``.

    Decoding never produces a FieldValue: it yields the plain Python value.
    """

    type_code: str
    value: object = None

    def __post_init__(self) -> None:
        if self.type_code not in TYPE_CODES:
            raise FieldTableError(
                f"unknown AMQP field type code {self.type_code!r}; "
                f"expected one of {''.join(sorted(TYPE_CODES))}")


# -- precompiled structs --------------------------------------------------------

_U8 = struct.Struct(">B")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
# Tag byte + payload in one pack call for the types auto-typing produces.
_TAG_I32 = struct.Struct(">ci")
_TAG_I64 = struct.Struct(">cq")
_TAG_F64 = struct.Struct(">cd")
_TAG_U32 = struct.Struct(">cI")
_TAG_U64 = struct.Struct(">cQ")
_TAG_DEC = struct.Struct(">cBi")
_DEC = struct.Struct(">Bi")

_I32_MIN, _I32_MAX = -(1 << 31), (1 << 31) - 1
_I64_MIN, _I64_MAX = -(1 << 63), (1 << 63) - 1
_U32_MAX = (1 << 32) - 1
_U64_MAX = (1 << 64) - 1

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

# -- encoding -------------------------------------------------------------------

_Encoder = Callable[[bytearray, Any], None]


def _enc_bool(out: bytearray, value: bool) -> None:
    out += b"t\x01" if value else b"t\x00"


def _enc_int(out: bytearray, value: int) -> None:
    if _I32_MIN <= value <= _I32_MAX:
        out += _TAG_I32.pack(b"I", value)
    elif _I64_MIN <= value <= _I64_MAX:
        out += _TAG_I64.pack(b"l", value)
    else:
        raise FieldTableError(
            f"integer {value} does not fit in a signed 64-bit AMQP long-long "
            "(l); send it as a str or Decimal")


def _enc_float(out: bytearray, value: float) -> None:
    out += _TAG_F64.pack(b"d", value)


def _longstr_header(tag: bytes, size: int) -> bytes:
    if size > _U32_MAX:
        raise FieldTableError(f"value of {size} bytes exceeds the 4 GiB AMQP limit")
    return _TAG_U32.pack(tag, size)


def _enc_str(out: bytearray, value: str) -> None:
    try:
        raw = value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise FieldTableError(f"string is not encodable as UTF-8: {exc}") from None
    out += _longstr_header(b"S", len(raw))
    out += raw


def _enc_bytes(out: bytearray, value: bytes | bytearray | memoryview) -> None:
    if isinstance(value, memoryview):
        value = value.tobytes()  # len() of a memoryview counts items, not bytes
    out += _longstr_header(b"x", len(value))
    out += value


def _decimal_parts(value: Decimal) -> tuple[int, int]:
    """(scale, unscaled) with ``value == unscaled * 10**-scale``, or raise."""
    if not value.is_finite():
        raise FieldTableError(f"Decimal {value} has no AMQP decimal encoding")
    sign, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)  # finite, so never 'n'/'N'/'F'
    unscaled = 0
    for digit in digits:
        unscaled = unscaled * 10 + digit
    if unscaled == 0:
        return (min(-exponent, 255) if exponent < 0 else 0), 0
    if exponent > 0:
        # Bound the work before multiplying: more than 10 digits never fits.
        if len(digits) + exponent > 10:
            raise FieldTableError(
                f"Decimal {value} does not fit an AMQP decimal "
                "(signed 32-bit unscaled value, scale 0..255)")
        unscaled *= 10 ** exponent
        exponent = 0
    scale = -exponent
    if sign:
        unscaled = -unscaled
    # Keep the caller's scale when it fits (Decimal("1.50") stays "1.50");
    # otherwise drop trailing zeros, which changes no value.
    while (scale > 255 or not _I32_MIN <= unscaled <= _I32_MAX) \
            and scale > 0 and unscaled % 10 == 0:
        unscaled //= 10
        scale -= 1
    if scale > 255 or not _I32_MIN <= unscaled <= _I32_MAX:
        raise FieldTableError(
            f"Decimal {value} does not fit an AMQP decimal "
            "(signed 32-bit unscaled value, scale 0..255)")
    return scale, unscaled


def _enc_decimal(out: bytearray, value: Decimal) -> None:
    scale, unscaled = _decimal_parts(value)
    out += _TAG_DEC.pack(b"D", scale, unscaled)


def _timestamp_seconds(value: datetime) -> int:
    if value.tzinfo is None or value.utcoffset() is None:
        value = value.replace(tzinfo=timezone.utc)  # naive means UTC
    delta = value - _EPOCH
    # days/seconds are normalised so this floors sub-second parts.
    seconds = delta.days * 86400 + delta.seconds
    if seconds < 0:
        raise FieldTableError(
            f"datetime {value.isoformat()} is before 1970: an AMQP timestamp "
            "is unsigned")
    return seconds


def _enc_datetime(out: bytearray, value: datetime) -> None:
    out += _TAG_U64.pack(b"T", _timestamp_seconds(value))


def _enc_none(out: bytearray, value: None) -> None:
    out += b"V"


def _enc_array_value(out: bytearray, value: Sequence[object]) -> None:
    out += b"A"
    _encode_array_into(out, value)


def _enc_table_value(out: bytearray, value: Mapping[str, object]) -> None:
    out += b"F"
    _encode_table_into(out, value)


def _enc_field_value(out: bytearray, value: FieldValue) -> None:
    _TYPED_ENCODERS[value.type_code](out, value.value)


# Exact-type dispatch first: one dict look-up for the common case.
_ENCODERS: dict[type, _Encoder] = {
    bool: _enc_bool,
    int: _enc_int,
    float: _enc_float,
    str: _enc_str,
    bytes: _enc_bytes,
    bytearray: _enc_bytes,
    memoryview: _enc_bytes,
    Decimal: _enc_decimal,
    datetime: _enc_datetime,
    type(None): _enc_none,
    list: _enc_array_value,
    tuple: _enc_array_value,
    dict: _enc_table_value,
    MappingProxyType: _enc_table_value,
    FieldValue: _enc_field_value,
}

# Subclasses (IntEnum, StrEnum, OrderedDict, ...) in order of precedence:
# bool before int since bool is an int.
_SUBCLASS_ENCODERS: tuple[tuple[type | tuple[type, ...], _Encoder], ...] = (
    (bool, _enc_bool),
    (int, _enc_int),
    (float, _enc_float),
    (str, _enc_str),
    ((bytes, bytearray, memoryview), _enc_bytes),
    (Decimal, _enc_decimal),
    (datetime, _enc_datetime),
    (FieldValue, _enc_field_value),
    (Mapping, _enc_table_value),
    ((list, tuple), _enc_array_value),
)


def _encoder_for(value: object) -> _Encoder:
    for types_, encoder in _SUBCLASS_ENCODERS:
        if isinstance(value, types_):
            _ENCODERS[type(value)] = encoder  # cache: the next one is fast
            return encoder
    raise FieldTableTypeError(
        f"{type(value).__name__} has no AMQP field type; use a FieldValue "
        "or convert it (str, int, float, bytes, Decimal, datetime, None, "
        "list, dict)")


def _encode_value(out: bytearray, value: object) -> None:
    encoder = _ENCODERS.get(type(value))
    if encoder is None:
        encoder = _encoder_for(value)
    encoder(out, value)


def _close_length(out: bytearray, start: int) -> None:
    size = len(out) - start - 4
    if size > _U32_MAX:
        raise FieldTableError(f"table or array of {size} bytes exceeds 4 GiB")
    _U32.pack_into(out, start, size)


def _encode_table_into(out: bytearray, table: Mapping[str, object]) -> None:
    start = len(out)
    out += b"\x00\x00\x00\x00"  # length placeholder, patched when known
    for key, value in table.items():
        if not isinstance(key, str):
            raise FieldTableTypeError(
                f"field name must be str, not {type(key).__name__}",
                path=[repr(key)])
        try:
            name = key.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            raise FieldTableError("field name is not encodable as UTF-8",
                                  path=[key]) from None
        if len(name) > 255:
            raise FieldTableError(
                f"field name is {len(name)} bytes in UTF-8; an AMQP short "
                "string holds at most 255", path=[key])
        out.append(len(name))
        out += name
        try:
            _encode_value(out, value)
        except FieldTableError as exc:
            exc.path.insert(0, key)
            raise
    _close_length(out, start)


def _encode_array_into(out: bytearray, items: Sequence[object]) -> None:
    start = len(out)
    out += b"\x00\x00\x00\x00"
    for index, value in enumerate(items):
        try:
            _encode_value(out, value)
        except FieldTableError as exc:
            exc.path.insert(0, index)
            raise
    _close_length(out, start)


def _guard_encode(fn: Callable[[bytearray, Any], None], value: Any) -> bytes:
    out = bytearray()
    try:
        fn(out, value)
    except RecursionError:
        raise FieldTableError(
            "tables/arrays nested too deeply (or referencing themselves)") from None
    return bytes(out)


def encode_table(table: Mapping[str, object]) -> bytes:
    """Encode ``table`` as an AMQP field table, 4-byte length prefix included."""
    if not isinstance(table, Mapping):
        raise FieldTableTypeError(
            f"a field table must be a Mapping, not {type(table).__name__}")
    return _guard_encode(_encode_table_into, table)


def encode_array(items: Sequence[object]) -> bytes:
    """Encode ``items`` as an AMQP field array, 4-byte length prefix included."""
    if not isinstance(items, (list, tuple)):
        raise FieldTableTypeError(
            f"a field array must be a list or tuple, not {type(items).__name__}")
    return _guard_encode(_encode_array_into, items)


# -- explicitly typed encoders (FieldValue) --------------------------------------


def _typed_packer(code: str, fmt: str, label: str) -> _Encoder:
    packer = struct.Struct(">c" + fmt)
    tag = code.encode("ascii")

    def encode(out: bytearray, value: Any) -> None:
        if isinstance(value, (str, bytes)) or value is None:
            # struct would accept some of these for some formats; never intended.
            raise FieldTableTypeError(f"{label} ({code}) needs a number, "
                                      f"not {type(value).__name__}")
        try:
            out += packer.pack(tag, value)
        except (struct.error, OverflowError) as exc:
            raise FieldTableError(
                f"{value!r} does not fit an AMQP {label} ({code}): {exc}") from None

    return encode


def _typed_bool(out: bytearray, value: Any) -> None:
    _enc_bool(out, bool(value))


def _typed_decimal(out: bytearray, value: Any) -> None:
    if isinstance(value, int) and not isinstance(value, bool):
        value = Decimal(value)
    if not isinstance(value, Decimal):
        raise FieldTableTypeError(
            f"decimal (D) needs a Decimal or int, not {type(value).__name__}")
    _enc_decimal(out, value)


def _typed_longstr(out: bytearray, value: Any) -> None:
    if isinstance(value, str):
        _enc_str(out, value)
    elif isinstance(value, (bytes, bytearray, memoryview)):
        raw = value.tobytes() if isinstance(value, memoryview) else value
        out += _longstr_header(b"S", len(raw))
        out += raw
    else:
        raise FieldTableTypeError(
            f"long string (S) needs str or bytes, not {type(value).__name__}")


def _typed_bytes(out: bytearray, value: Any) -> None:
    if isinstance(value, str):
        value = value.encode("utf-8")
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise FieldTableTypeError(
            f"byte array (x) needs bytes or str, not {type(value).__name__}")
    _enc_bytes(out, value)


def _typed_array(out: bytearray, value: Any) -> None:
    if not isinstance(value, (list, tuple)):
        raise FieldTableTypeError(
            f"array (A) needs a list or tuple, not {type(value).__name__}")
    _enc_array_value(out, value)


def _typed_table(out: bytearray, value: Any) -> None:
    if not isinstance(value, Mapping):
        raise FieldTableTypeError(
            f"table (F) needs a Mapping, not {type(value).__name__}")
    _enc_table_value(out, value)


def _typed_timestamp(out: bytearray, value: Any) -> None:
    if isinstance(value, datetime):
        _enc_datetime(out, value)
    elif isinstance(value, int) and not isinstance(value, bool):
        if not 0 <= value <= _U64_MAX:
            raise FieldTableError(f"timestamp {value} is outside 0..2**64-1")
        out += _TAG_U64.pack(b"T", value)
    else:
        raise FieldTableTypeError(
            f"timestamp (T) needs a datetime or int seconds, not {type(value).__name__}")


def _typed_void(out: bytearray, value: Any) -> None:
    if value is not None:
        raise FieldTableError(f"void (V) carries no value, got {value!r}")
    out += b"V"


_TYPED_ENCODERS: dict[str, _Encoder] = {
    "t": _typed_bool,
    "b": _typed_packer("b", "b", "signed 8-bit"),
    "B": _typed_packer("B", "B", "unsigned 8-bit"),
    "s": _typed_packer("s", "h", "signed 16-bit"),
    "U": _typed_packer("U", "h", "signed 16-bit"),
    "u": _typed_packer("u", "H", "unsigned 16-bit"),
    "I": _typed_packer("I", "i", "signed 32-bit"),
    "i": _typed_packer("i", "I", "unsigned 32-bit"),
    "l": _typed_packer("l", "q", "signed 64-bit"),
    "L": _typed_packer("L", "q", "signed 64-bit"),
    "f": _typed_packer("f", "f", "32-bit float"),
    "d": _typed_packer("d", "d", "64-bit float"),
    "D": _typed_decimal,
    "S": _typed_longstr,
    "x": _typed_bytes,
    "A": _typed_array,
    "T": _typed_timestamp,
    "F": _typed_table,
    "V": _typed_void,
}
assert frozenset(_TYPED_ENCODERS) == TYPE_CODES

# -- decoding ---------------------------------------------------------------------

# A reader takes (buffer, position just past the type code, end of the
# enclosing table/array) and returns (value, next position).  ``end`` bounds
# every read, so a value can never spill out of its enclosing table.
_Reader = Callable[[Any, int, int], tuple[Any, int]]
_Buffer = bytes  # decoding works on bytes only (see _as_buffer)


def _truncated(label: str, needed: int, pos: int, end: int) -> FieldTableError:
    return FieldTableError(
        f"truncated {label}: needs {needed} bytes, {max(end - pos, 0)} left "
        "before the end of the enclosing table/array", pos)


def _fixed_reader(fmt: str, label: str,
                  convert: Callable[[Any], Any] | None = None) -> _Reader:
    unpack_from = struct.Struct(">" + fmt).unpack_from
    size = struct.calcsize(">" + fmt)
    if convert is None:
        def read(buf: _Buffer, pos: int, end: int) -> tuple[Any, int]:
            nxt = pos + size
            if nxt > end:
                raise _truncated(label, size, pos, end)
            return unpack_from(buf, pos)[0], nxt
    else:
        def read(buf: _Buffer, pos: int, end: int) -> tuple[Any, int]:
            nxt = pos + size
            if nxt > end:
                raise _truncated(label, size, pos, end)
            return convert(unpack_from(buf, pos)[0]), nxt
    return read


def _to_datetime(seconds: int) -> datetime | int:
    try:
        return _EPOCH + timedelta(seconds=seconds)
    except OverflowError:
        # Past year 9999 (typically milliseconds written as seconds):
        # keep the number rather than refusing the whole delivery.
        return seconds


def _read_decimal(buf: _Buffer, pos: int, end: int) -> tuple[Decimal, int]:
    nxt = pos + 5
    if nxt > end:
        raise _truncated("decimal (D)", 5, pos, end)
    scale, unscaled = _DEC.unpack_from(buf, pos)
    # Built from a string: exact whatever the thread's decimal context.
    return Decimal(f"{unscaled}E-{scale}"), nxt


def _sized(buf: _Buffer, pos: int, end: int, label: str) -> tuple[int, int]:
    """Read a 4-byte length at ``pos``; return (start, stop) of the payload."""
    start = pos + 4
    if start > end:
        raise _truncated(f"{label} length", 4, pos, end)
    stop = start + _U32.unpack_from(buf, pos)[0]
    if stop > end:
        raise FieldTableError(
            f"{label} declares {stop - start} bytes but only {end - start} "
            "are left in the enclosing table/array", pos)
    return start, stop


def _read_longstr(buf: _Buffer, pos: int, end: int) -> tuple[str | bytes, int]:
    start, stop = _sized(buf, pos, end, "long string (S)")
    raw = buf[start:stop]
    try:
        return raw.decode("utf-8"), stop
    except UnicodeDecodeError:
        return raw, stop  # RabbitMQ also uses S for binary values


def _read_bytes(buf: _Buffer, pos: int, end: int) -> tuple[bytes, int]:
    start, stop = _sized(buf, pos, end, "byte array (x)")
    return buf[start:stop], stop


def _read_table(buf: _Buffer, pos: int, end: int) -> tuple[dict[str, Any], int]:
    start, stop = _sized(buf, pos, end, "table (F)")
    return _decode_table_body(buf, start, stop), stop


def _read_array(buf: _Buffer, pos: int, end: int) -> tuple[list[Any], int]:
    start, stop = _sized(buf, pos, end, "array (A)")
    return _decode_array_body(buf, start, stop), stop


def _read_void(buf: _Buffer, pos: int, end: int) -> tuple[None, int]:
    return None, pos


_READERS: dict[int, _Reader] = {
    ord("t"): _fixed_reader("B", "boolean (t)", bool),
    ord("b"): _fixed_reader("b", "signed 8-bit (b)"),
    ord("B"): _fixed_reader("B", "unsigned 8-bit (B)"),
    ord("s"): _fixed_reader("h", "signed 16-bit (s)"),
    ord("U"): _fixed_reader("h", "signed 16-bit (U)"),
    ord("u"): _fixed_reader("H", "unsigned 16-bit (u)"),
    ord("I"): _fixed_reader("i", "signed 32-bit (I)"),
    ord("i"): _fixed_reader("I", "unsigned 32-bit (i)"),
    ord("l"): _fixed_reader("q", "signed 64-bit (l)"),
    ord("L"): _fixed_reader("q", "signed 64-bit (L)"),
    ord("f"): _fixed_reader("f", "32-bit float (f)"),
    ord("d"): _fixed_reader("d", "64-bit float (d)"),
    ord("D"): _read_decimal,
    ord("S"): _read_longstr,
    ord("x"): _read_bytes,
    ord("A"): _read_array,
    ord("T"): _fixed_reader("Q", "timestamp (T)", _to_datetime),
    ord("F"): _read_table,
    ord("V"): _read_void,
}


def _unknown_code(code: int, pos: int) -> FieldTableError:
    shown = repr(chr(code)) if 0x20 < code < 0x7F else f"0x{code:02x}"
    return FieldTableError(f"unknown field type code {shown}", pos)


def _decode_table_body(buf: _Buffer, pos: int, end: int) -> dict[str, Any]:
    result: dict[str, Any] = {}
    readers = _READERS
    while pos < end:
        name_len = buf[pos]
        name_end = pos + 1 + name_len
        if name_end >= end:  # the name and its type code must both fit
            partial = buf[pos + 1:min(name_end, end)]
            raise FieldTableError(
                f"field name {partial.decode('utf-8', 'replace')!r} (declared "
                f"{name_len} bytes) and its type code run past the end of the "
                "table", pos)
        key = buf[pos + 1:name_end].decode("utf-8", "surrogateescape")
        code = buf[name_end]
        reader = readers.get(code)
        if reader is None:
            exc = _unknown_code(code, name_end)
            exc.path.append(key)
            raise exc
        try:
            value, pos = reader(buf, name_end + 1, end)
        except FieldTableError as exc:
            exc.path.insert(0, key)
            raise
        result[key] = value
    return result


def _decode_array_body(buf: _Buffer, pos: int, end: int) -> list[Any]:
    items: list[Any] = []
    readers = _READERS
    while pos < end:
        code = buf[pos]
        reader = readers.get(code)
        if reader is None:
            exc = _unknown_code(code, pos)
            exc.path.append(len(items))
            raise exc
        try:
            value, pos = reader(buf, pos + 1, end)
        except FieldTableError as exc:
            exc.path.insert(0, len(items))
            raise
        items.append(value)
    return items


def _as_buffer(data: bytes | bytearray | memoryview) -> bytes:
    if isinstance(data, bytes):
        return data
    if isinstance(data, (bytearray, memoryview)):
        # One copy up front: slicing bytes then yields bytes (no per-value
        # copies, str.decode available), and no view pins the caller's buffer.
        return bytes(data)
    raise TypeError(f"expected bytes or memoryview, not {type(data).__name__}")


def _guard_decode(body: Callable[[_Buffer, int, int], Any],
                  buf: _Buffer, start: int, end: int) -> Any:
    try:
        return body(buf, start, end)
    except FieldTableError:
        raise
    except RecursionError:
        raise FieldTableError("tables/arrays nested too deeply", start) from None
    except (struct.error, IndexError, ValueError, OverflowError) as exc:
        # Safety net only: every check above is explicit, so reaching this
        # is a bug here, but the caller still gets the documented error type.
        raise FieldTableError(f"internal decoding error: {exc!r}", start) from exc


def _decode_sized(data: bytes | bytearray | memoryview, offset: int,
                  body: Callable[[_Buffer, int, int], Any],
                  label: str) -> tuple[Any, int]:
    buf = _as_buffer(data)
    size = len(buf)
    if not 0 <= offset <= size:
        raise FieldTableError(f"offset outside the {size}-byte buffer", offset)
    start = offset + 4
    if start > size:
        raise _truncated(f"{label} length", 4, offset, size)
    end = start + _U32.unpack_from(buf, offset)[0]
    if end > size:
        raise FieldTableError(
            f"{label} declares {end - start} bytes but only {size - start} "
            "follow its length", offset)
    return _guard_decode(body, buf, start, end), end


def decode_table(data: bytes | bytearray | memoryview,
                 offset: int = 0) -> tuple[dict[str, Any], int]:
    """Decode the length-prefixed field table at ``offset``.

    Returns ``(table, offset just past it)``.
    """
    return _decode_sized(data, offset, _decode_table_body, "table")


def decode_array(data: bytes | bytearray | memoryview,
                 offset: int = 0) -> tuple[list[Any], int]:
    """Decode the length-prefixed field array at ``offset``.

    Returns ``(items, offset just past it)``.
    """
    return _decode_sized(data, offset, _decode_array_body, "array")


def decode_table_payload(data: bytes | bytearray | memoryview) -> dict[str, Any]:
    """Decode table fields that fill ``data`` entirely (length already read)."""
    buf = _as_buffer(data)
    return _guard_decode(_decode_table_body, buf, 0, len(buf))


# -- txamqp -------------------------------------------------------------------------


def _codec_encode_table(self: Any, tbl: Mapping[str, object] | None) -> None:
    """txamqp Codec.encode_table, replaced by connector.amqp.fieldtable."""
    # txamqp's default for a table argument is {}, but callers pass None too.
    self.write(encode_table({} if tbl is None else tbl))


def _codec_decode_table(self: Any) -> dict[str, Any]:
    """txamqp Codec.decode_table, replaced by connector.amqp.fieldtable."""
    from txamqp.codec import EOF

    size = self.decode_long()
    try:
        payload = self.read(size)
    except EOF:
        payload = b""
    if len(payload) != size:
        # txamqp decodes whole frames, so a short read means a corrupt length.
        raise FieldTableError(
            f"table declares {size} bytes but only {len(payload)} remain in the frame",
            self.nread - len(payload) - 4)
    try:
        return decode_table_payload(payload)
    except FieldTableError as exc:
        # Report offsets within this codec's stream, not within the table.
        if exc.offset is not None:
            exc.offset += self.nread - size
        raise


_codec_encode_table._centaure_fieldtable = True  # type: ignore[attr-defined]
_codec_decode_table._centaure_fieldtable = True  # type: ignore[attr-defined]


def install_into_txamqp() -> None:
    """Make txamqp's Codec use this module for field tables (idempotent)."""
    from txamqp.codec import Codec

    if not getattr(Codec.encode_table, "_centaure_fieldtable", False):
        Codec.encode_table = _codec_encode_table
    if not getattr(Codec.decode_table, "_centaure_fieldtable", False):
        Codec.decode_table = _codec_decode_table


# -- connection.start-ok --------------------------------------------------------------

# What RabbitMQ looks for in the client's capabilities.  Read-only, since a
# module-level table shared by every connection must not be mutated.
CLIENT_CAPABILITIES: Mapping[str, bool] = MappingProxyType({
    "publisher_confirms": True,
    "connection.blocked": True,
    "consumer_cancel_notify": True,
    "basic.nack": True,
    "authentication_failure_close": True,
})


@functools.cache
def _platform() -> str:
    from importlib.metadata import PackageNotFoundError, version

    parts = [f"Python {platform.python_version()}"]
    for dist in ("Twisted", "txAMQP"):
        try:
            parts.append(f"{dist} {version(dist)}")
        except PackageNotFoundError:
            pass
    return ", ".join(parts)


def client_properties(product: str, version: str) -> dict[str, object]:
    """Client properties for ``connection.start-ok``, capabilities included."""
    return {
        "product": product,
        "version": version,
        "platform": _platform(),
        "information": "Centaure AMQP 0-9-1 connector (txAMQP)",
        "capabilities": dict(CLIENT_CAPABILITIES),
    }
