"""A fast BER encoder/decoder for the SNMP v1/v2c message subset.

Why: pysnmp's pyasn1 codec decodes ~19,000 varbinds per CPU-second on the
target machine; the poller needs >= 100,000 end to end.  This module handles
only what SNMP v1 (RFC 1157) and v2c (RFC 1901/3416) messages contain, on
plain ``bytes`` with integer offsets.  ``bench/bench_ber.py`` measures it
against pyasn1.

Value model
    A varbind is ``(oid, tag, value)``: ``oid`` is dotted text without a
    leading dot (``"1.3.6.1.2.1.1.3.0"``), ``tag`` one of the module-level
    strings below, ``value``:

    ============================  ===========================================
    INTEGER                       int, -2**31 .. 2**31-1
    COUNTER32, GAUGE32, TIMETICKS int, 0 .. 2**32-1
    COUNTER64                     int, 0 .. 2**64-1
    OCTET_STRING, OPAQUE          bytes (Opaque content is not interpreted)
    OBJECT_IDENTIFIER             str, dotted
    IP_ADDRESS                    str, dotted quad
    NULL, NO_SUCH_OBJECT,         None
    NO_SUCH_INSTANCE,
    END_OF_MIB_VIEW
    ============================  ===========================================

How it is fast
    A varbind's header -- the octets from its SEQUENCE tag to its value's
    length octet, i.e. the OID and every tag and length -- is the key of a
    cache whose entry holds the OID text, the value tag and the total length.
    A poller sees the same headers at every poll, so a varbind costs one
    slice, one dict lookup and its value's decoding.  A header not seen yet
    is checked in full; its OID text is built from a cache of OID prefixes
    (a table column) plus the last sub-identifier.  All caches are bounded
    dicts, emptied when full (see ``*_CACHE_MAX``, :func:`clear_caches`).
    A cache never changes a result: the tests decode everything warm, cold
    and through the general (slow) path and compare.

Decoding is total: any malformed input raises :class:`BERError` (a
``ValueError``) carrying the byte offset and the reason, never another
exception.  Rules (what we accept, what we refuse):

* definite lengths only; the long form may use 1 to 4 length octets and may
  be non-minimal (agents reserve ``0x82 hh ll`` for the message length);
  indefinite lengths (``0x80``) and 5+ length octets are refused;
* every length must fit its container exactly; no trailing octets anywhere;
* primitive encodings only (a constructed OCTET STRING is refused), tags as
  SNMP defines them (no high tag numbers, no other types);
* integers: 1 to 5 content octets for the 32-bit types, 1 to 9 for
  Counter64; the value must be in the type's range (so a Counter32 with the
  high bit set and no leading 0x00 is refused); non-minimal padding inside
  those limits is tolerated (pyasn1 itself encodes -2**31 as 5 octets);
  error-status, error-index, non-repeaters and max-repetitions are >= 0;
* OIDs: non-empty, no 0x80 leading sub-identifier octet, sub-identifiers
  <= 2**32-1, at most 128 arcs (RFC 2578 section 3.5); IpAddress is 4
  octets; Null and the v2c exceptions are empty;
* version must be 0 (v1) or 1 (v2c), and the PDU type one of that version.
  Varbind value types are not checked against the version: a v1 message
  carrying a Counter64 is decoded (pyasn1 would refuse it).

Encoding always produces definite, minimal lengths and minimal integers,
byte-for-byte equal to pyasn1's output except for the four values
-2**7, -2**15, -2**23, -2**31, which pyasn1 pads with a needless 0xFF.
Bad arguments raise ``ValueError`` or ``TypeError``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence

__all__ = [
    "BERError",
    "SnmpMessage",
    "decode_message",
    "encode_get",
    "encode_getnext",
    "encode_getbulk",
    "encode_set",
    "encode_response",
    "encode_trap_v2",
    "encode_inform",
    "encode_trap_v1",
    "encode_message",
    "encode_oid",
    "decode_oid",
    "clear_caches",
    "cache_sizes",
    "VERSION_1",
    "VERSION_2C",
    "INTEGER",
    "OCTET_STRING",
    "NULL",
    "OBJECT_IDENTIFIER",
    "IP_ADDRESS",
    "COUNTER32",
    "GAUGE32",
    "TIMETICKS",
    "OPAQUE",
    "COUNTER64",
    "NO_SUCH_OBJECT",
    "NO_SUCH_INSTANCE",
    "END_OF_MIB_VIEW",
    "VALUE_TAGS",
    "GET_REQUEST",
    "GETNEXT_REQUEST",
    "RESPONSE",
    "SET_REQUEST",
    "TRAP_V1",
    "GETBULK_REQUEST",
    "INFORM_REQUEST",
    "TRAP_V2",
    "REPORT",
]

# --------------------------------------------------------------------------
# Constants

VERSION_1 = 0
VERSION_2C = 1

#: Varbind value tags (the ``tag`` element of a decoded varbind).
INTEGER = "Integer"
OCTET_STRING = "OctetString"
NULL = "Null"
OBJECT_IDENTIFIER = "ObjectIdentifier"
IP_ADDRESS = "IpAddress"
COUNTER32 = "Counter32"
GAUGE32 = "Gauge32"
TIMETICKS = "TimeTicks"
OPAQUE = "Opaque"
COUNTER64 = "Counter64"
NO_SUCH_OBJECT = "NoSuchObject"
NO_SUCH_INSTANCE = "NoSuchInstance"
END_OF_MIB_VIEW = "EndOfMibView"

#: Value tag name -> BER identifier octet.
VALUE_TAGS: dict[str, int] = {
    INTEGER: 0x02,
    OCTET_STRING: 0x04,
    NULL: 0x05,
    OBJECT_IDENTIFIER: 0x06,
    IP_ADDRESS: 0x40,
    COUNTER32: 0x41,
    GAUGE32: 0x42,
    TIMETICKS: 0x43,
    OPAQUE: 0x44,
    COUNTER64: 0x46,
    NO_SUCH_OBJECT: 0x80,
    NO_SUCH_INSTANCE: 0x81,
    END_OF_MIB_VIEW: 0x82,
}

#: PDU types: the context-specific constructed identifier octet.
GET_REQUEST = 0xA0
GETNEXT_REQUEST = 0xA1
RESPONSE = 0xA2
SET_REQUEST = 0xA3
TRAP_V1 = 0xA4
GETBULK_REQUEST = 0xA5
INFORM_REQUEST = 0xA6
TRAP_V2 = 0xA7
REPORT = 0xA8

_PDUS_BY_VERSION = {
    VERSION_1: frozenset((GET_REQUEST, GETNEXT_REQUEST, RESPONSE, SET_REQUEST, TRAP_V1)),
    VERSION_2C: frozenset(
        (GET_REQUEST, GETNEXT_REQUEST, RESPONSE, SET_REQUEST, GETBULK_REQUEST,
         INFORM_REQUEST, TRAP_V2, REPORT)
    ),
}

_INT32_MIN = -(2**31)
_INT32_MAX = 2**31 - 1
_UINT32_MAX = 2**32 - 1
_UINT64_MAX = 2**64 - 1
_MAX_ARCS = 128  # RFC 2578 section 3.5

_EXCEPTIONS = (NO_SUCH_OBJECT, NO_SUCH_INSTANCE, END_OF_MIB_VIEW)
_UNSIGNED32 = {0x41: COUNTER32, 0x42: GAUGE32, 0x43: TIMETICKS}


# --------------------------------------------------------------------------
# Errors and the message model


class BERError(ValueError):
    """Malformed or unsupported SNMP/BER input.

    ``offset`` is the byte offset in the decoded buffer where the problem
    was found, ``reason`` a short human-readable explanation.
    """

    def __init__(self, offset: int, reason: str) -> None:
        super().__init__(offset, reason)
        self.offset = offset
        self.reason = reason

    def __str__(self) -> str:
        return f"BER error at offset {self.offset}: {self.reason}"


Varbind = tuple[str, str, object]


@dataclasses.dataclass(slots=True)
class SnmpMessage:
    """A decoded SNMP v1/v2c message.

    ``pdu_type`` is the PDU's identifier octet (e.g. ``RESPONSE`` = 0xA2).
    For a GetBulk request, ``error_status``/``error_index`` hold
    non-repeaters/max-repetitions (also readable under those names).  For a
    v1 Trap-PDU (0xA4) the request fields are None and the trap fields are
    set.
    """

    version: int
    community: bytes
    pdu_type: int
    request_id: int | None
    error_status: int | None
    error_index: int | None
    varbinds: list[Varbind]
    enterprise: str | None = None
    agent_addr: str | None = None
    generic_trap: int | None = None
    specific_trap: int | None = None
    time_stamp: int | None = None

    @property
    def non_repeaters(self) -> int | None:
        """GetBulk non-repeaters (same slot as error-status)."""
        return self.error_status

    @property
    def max_repetitions(self) -> int | None:
        """GetBulk max-repetitions (same slot as error-index)."""
        return self.error_index


# --------------------------------------------------------------------------
# OID text <-> BER, with caches

#: str(i) for the one-octet sub-identifiers.
_S = [str(i) for i in range(128)]
#: Text of the first two arcs for a one-octet first sub-identifier.
_FIRST = [f"{min(i // 40, 2)}.{i - 40 * min(i // 40, 2)}" for i in range(128)]

# Caches are plain dicts, bounded by clearing them when full (cheap, no
# per-hit bookkeeping; a poller's working set is its polled OIDs).  Only OIDs
# of at most _CACHED_OID_OCTETS content octets are cached, so that hostile
# input (a trap receiver) cannot pin more than ~100 MB in the worst case.
OID_CACHE_MAX = 100_000
_CACHED_OID_OCTETS = 128
PREFIX_CACHE_MAX = 20_000
ENCODE_CACHE_MAX = 50_000
_OID_CACHE: dict[bytes, str] = {}  # OID content octets -> text
_PREFIX_CACHE: dict[bytes, str] = {}  # content of an OID of < 128 arcs -> text + "."
_OID_ENC_CACHE: dict[str, bytes] = {}  # text -> full OID TLV
_NULL_VB_CACHE: dict[str, bytes] = {}  # text -> varbind TLV with a Null value


def clear_caches(prefixes: bool = True) -> None:
    """Empty the OID caches (each is also emptied whenever full).

    With ``prefixes=False`` the decoder's prefix cache is kept: what a poller
    sees when it walks new instances of known table columns.
    """
    _OID_CACHE.clear()
    _VB_CACHE.clear()
    if prefixes:
        _PREFIX_CACHE.clear()
    _OID_ENC_CACHE.clear()
    _NULL_VB_CACHE.clear()


def cache_sizes() -> dict[str, int]:
    """Current number of entries in each OID cache."""
    return {
        "oid": len(_OID_CACHE),
        "varbind": len(_VB_CACHE),
        "prefix": len(_PREFIX_CACHE),
        "encode": len(_OID_ENC_CACHE),
        "null_varbind": len(_NULL_VB_CACHE),
    }


def _oid_full(raw: bytes, off: int) -> tuple[str, int]:
    """Decode OID content octets to (text, number of arcs); validates."""
    n = len(raw)
    if not n:
        raise BERError(off, "empty OBJECT IDENTIFIER")
    if raw.isascii():  # every sub-identifier is one octet
        if n >= _MAX_ARCS:
            raise BERError(off, f"OBJECT IDENTIFIER has {n + 1} arcs (max {_MAX_ARCS})")
        if n == 1:
            return _FIRST[raw[0]], 2
        return _FIRST[raw[0]] + "." + ".".join([_S[b] for b in raw[1:]]), n + 1
    parts: list[int] = []
    v = 0
    for i, b in enumerate(raw):
        if b < 0x80:
            parts.append((v << 7) | b)
            v = 0
        else:
            if not v and b == 0x80:
                raise BERError(off + i, "OID sub-identifier starts with 0x80 (non-minimal)")
            v = (v << 7) | (b & 0x7F)
            if v > 0x2000000:
                raise BERError(off + i, "OID sub-identifier exceeds 2**32-1")
    if raw[-1] >= 0x80:
        raise BERError(off + n - 1, "OBJECT IDENTIFIER ends inside a sub-identifier")
    first = parts[0]
    if first < 40:
        head = (0, first)
    elif first < 80:
        head = (1, first - 40)
    else:
        head = (2, first - 80)
    if head[1] > _UINT32_MAX or (len(parts) > 1 and max(parts[1:]) > _UINT32_MAX):
        raise BERError(off, "OID sub-identifier exceeds 2**32-1")
    arcs = len(parts) + 1
    if arcs > _MAX_ARCS:
        raise BERError(off, f"OBJECT IDENTIFIER has {arcs} arcs (max {_MAX_ARCS})")
    text = f"{head[0]}.{head[1]}"
    if len(parts) > 1:
        text += "." + ".".join(map(str, parts[1:]))
    return text, arcs


def _oid_miss(raw: bytes, off: int) -> str:
    """OID text for content octets not in the OID cache; fills the caches.

    The OID is split before its last sub-identifier: the prefix (a table
    column, usually) is looked up in the prefix cache, so the instances of
    one column cost one dict lookup and one concatenation each.
    """
    n = len(raw)
    if n < 2 or raw[-1] >= 0x80:
        text = _oid_full(raw, off)[0]
    else:
        i = n - 2
        while i >= 0 and raw[i] >= 0x80:
            i -= 1
        if i < 0:  # a single (multi-octet) sub-identifier
            text = _oid_full(raw, off)[0]
        else:
            prefix = raw[: i + 1]
            ptext = _PREFIX_CACHE.get(prefix)
            if ptext is None:
                ptext, arcs = _oid_full(prefix, off)
                if arcs >= _MAX_ARCS:
                    raise BERError(off, f"OBJECT IDENTIFIER has more than {_MAX_ARCS} arcs")
                ptext += "."
                if i < _CACHED_OID_OCTETS:
                    if len(_PREFIX_CACHE) >= PREFIX_CACHE_MAX:
                        _PREFIX_CACHE.clear()
                    _PREFIX_CACHE[prefix] = ptext
            if i == n - 2:
                text = ptext + _S[raw[-1]]
            else:
                tail = raw[i + 1 :]
                if tail[0] == 0x80:
                    raise BERError(off + i + 1, "OID sub-identifier starts with 0x80 (non-minimal)")
                if len(tail) > 5:
                    raise BERError(off + i + 1, "OID sub-identifier exceeds 2**32-1")
                v = 0
                for b in tail:
                    v = (v << 7) | (b & 0x7F)
                if v > _UINT32_MAX:
                    raise BERError(off + i + 1, "OID sub-identifier exceeds 2**32-1")
                text = ptext + str(v)
    if n <= _CACHED_OID_OCTETS:
        if len(_OID_CACHE) >= OID_CACHE_MAX:
            _OID_CACHE.clear()
        _OID_CACHE[raw] = text
    return text


def decode_oid(raw: bytes, offset: int = 0) -> str:
    """Dotted text of OID *content* octets (without tag and length)."""
    raw = bytes(raw)
    text = _OID_CACHE.get(raw)
    if text is None:
        text = _oid_miss(raw, offset)
    return text


def _subid_octets(v: int, out: bytearray) -> None:
    if v < 0x80:
        out.append(v)
        return
    tmp = [v & 0x7F]
    v >>= 7
    while v:
        tmp.append(0x80 | (v & 0x7F))
        v >>= 7
    tmp.reverse()
    out.extend(tmp)


def _oid_content(oid: str) -> bytes:
    if not isinstance(oid, str):
        raise TypeError(f"OID must be a dotted str, not {type(oid).__name__}")
    text = oid[1:] if oid.startswith(".") else oid
    parts = text.split(".")
    arcs = []
    for p in parts:
        if not (p.isascii() and p.isdigit()):
            raise ValueError(f"bad OID {oid!r}: arc {p!r} is not a decimal number")
        arcs.append(int(p))
    if len(arcs) < 2:
        raise ValueError(f"bad OID {oid!r}: needs at least two arcs")
    if len(arcs) > _MAX_ARCS:
        raise ValueError(f"bad OID {oid!r}: {len(arcs)} arcs (max {_MAX_ARCS})")
    first, second = arcs[0], arcs[1]
    if first > 2 or (first < 2 and second > 39):
        raise ValueError(f"bad OID {oid!r}: first arcs {first}.{second} not allowed")
    if max(arcs) > _UINT32_MAX:
        raise ValueError(f"bad OID {oid!r}: sub-identifier exceeds 2**32-1")
    out = bytearray()
    _subid_octets(first * 40 + second, out)
    for a in arcs[2:]:
        if a < 0x80:
            out.append(a)
        else:
            _subid_octets(a, out)
    return bytes(out)


def _oid_tlv(oid: str) -> bytes:
    tlv = _OID_ENC_CACHE.get(oid)
    if tlv is None:
        tlv = _tlv(0x06, _oid_content(oid))
        if len(_OID_ENC_CACHE) >= ENCODE_CACHE_MAX:
            _OID_ENC_CACHE.clear()
        _OID_ENC_CACHE[oid] = tlv
    return tlv


def encode_oid(oid: str) -> bytes:
    """BER content octets of a dotted OID (no tag, no length)."""
    return _oid_content(oid)


# --------------------------------------------------------------------------
# Encoding

_SHORT_LEN = [bytes((i,)) for i in range(128)]


def _len_octets(n: int) -> bytes:
    if n < 0x80:
        return _SHORT_LEN[n]
    body = n.to_bytes((n.bit_length() + 7) >> 3, "big")
    return bytes((0x80 | len(body),)) + body


def _tlv(tag: int, content: bytes) -> bytes:
    n = len(content)
    if n < 0x80:
        return bytes((tag, n)) + content
    return bytes((tag,)) + _len_octets(n) + content


def _int_tlv(tag: int, v: int) -> bytes:
    body = v.to_bytes(((v + (v < 0)).bit_length() >> 3) + 1, "big", signed=True)
    return bytes((tag, len(body))) + body


def _check_int(v: object, lo: int, hi: int, what: str) -> int:
    if not isinstance(v, int) or isinstance(v, bool):
        raise TypeError(f"{what} must be an int, not {type(v).__name__}")
    if not lo <= v <= hi:
        raise ValueError(f"{what} {v} out of range {lo}..{hi}")
    return v


def _check_bytes(v: object, what: str) -> bytes:
    if isinstance(v, bytes):
        return v
    if isinstance(v, (bytearray, memoryview)):
        return bytes(v)
    raise TypeError(f"{what} must be bytes, not {type(v).__name__}")


def _ip_octets(v: object) -> bytes:
    if isinstance(v, (bytes, bytearray)) and len(v) == 4:
        return bytes(v)
    if isinstance(v, str):
        parts = v.split(".")
        if len(parts) == 4 and all(p.isascii() and p.isdigit() and len(p) <= 3 for p in parts):
            octets = [int(p) for p in parts]
            if max(octets) <= 255:
                return bytes(octets)
    raise ValueError(f"bad IpAddress {v!r}: expected a dotted quad")


def _value_tlv(tag: str, value: object) -> bytes:
    if tag == INTEGER:
        return _int_tlv(0x02, _check_int(value, _INT32_MIN, _INT32_MAX, "Integer"))
    if tag in (COUNTER32, GAUGE32, TIMETICKS):
        return _int_tlv(VALUE_TAGS[tag], _check_int(value, 0, _UINT32_MAX, tag))
    if tag == COUNTER64:
        return _int_tlv(0x46, _check_int(value, 0, _UINT64_MAX, tag))
    if tag == OCTET_STRING or tag == OPAQUE:
        return _tlv(VALUE_TAGS[tag], _check_bytes(value, tag))
    if tag == OBJECT_IDENTIFIER:
        return _oid_tlv(value)  # type: ignore[arg-type]
    if tag == IP_ADDRESS:
        return b"\x40\x04" + _ip_octets(value)
    if tag in (NULL, NO_SUCH_OBJECT, NO_SUCH_INSTANCE, END_OF_MIB_VIEW):
        if value is not None:
            raise ValueError(f"{tag} takes no value (None), got {value!r}")
        return bytes((VALUE_TAGS[tag], 0))
    raise ValueError(f"unknown varbind tag {tag!r}")


def _varbind_tlv(oid: str, tag: str, value: object) -> bytes:
    if tag == NULL and value is None:
        return _null_varbind(oid)
    return _tlv(0x30, _oid_tlv(oid) + _value_tlv(tag, value))


def _null_varbind(oid: str) -> bytes:
    tlv = _NULL_VB_CACHE.get(oid)
    if tlv is None:
        tlv = _tlv(0x30, _oid_tlv(oid) + b"\x05\x00")
        if len(_NULL_VB_CACHE) >= ENCODE_CACHE_MAX:
            _NULL_VB_CACHE.clear()
        _NULL_VB_CACHE[oid] = tlv
    return tlv


def _varbind_list(varbinds: Iterable[Sequence[object]]) -> bytes:
    parts = []
    for vb in varbinds:
        if len(vb) != 3:
            raise ValueError(f"varbind must be (oid, tag, value), got {vb!r}")
        parts.append(_varbind_tlv(*vb))  # type: ignore[arg-type]
    return _tlv(0x30, b"".join(parts))


def _null_list(oids: Iterable[str]) -> bytes:
    if isinstance(oids, str):
        raise TypeError("oids must be a sequence of OIDs, not one str")
    return _tlv(0x30, b"".join([_null_varbind(o) for o in oids]))


def _wrap(version: int, community: bytes, pdu_type: int, pdu_body: bytes) -> bytes:
    _check_int(version, VERSION_1, VERSION_2C, "version (0 = v1, 1 = v2c)")
    if pdu_type not in _PDUS_BY_VERSION[version]:
        raise ValueError(f"PDU type 0x{pdu_type:02X} does not exist in version {version}")
    community = _check_bytes(community, "community")
    return _tlv(
        0x30,
        bytes((2, 1, version)) + _tlv(0x04, community) + _tlv(pdu_type, pdu_body),
    )


def _pdu_head(request_id: int, a: int, b: int, a_name: str, b_name: str) -> bytes:
    return (
        _int_tlv(2, _check_int(request_id, _INT32_MIN, _INT32_MAX, "request_id"))
        + _int_tlv(2, _check_int(a, 0, _INT32_MAX, a_name))
        + _int_tlv(2, _check_int(b, 0, _INT32_MAX, b_name))
    )


def encode_message(
    version: int,
    community: bytes,
    pdu_type: int,
    request_id: int,
    error_status: int,
    error_index: int,
    varbinds: Iterable[Sequence[object]],
) -> bytes:
    """Encode any non-v1-trap PDU with ``(oid, tag, value)`` varbinds."""
    if pdu_type == TRAP_V1:
        raise ValueError("use encode_trap_v1 for a v1 Trap-PDU")
    body = _pdu_head(request_id, error_status, error_index, "error_status", "error_index")
    return _wrap(version, community, pdu_type, body + _varbind_list(varbinds))


def encode_get(version: int, community: bytes, request_id: int, oids: Sequence[str]) -> bytes:
    """GetRequest for *oids* (Null values)."""
    body = _pdu_head(request_id, 0, 0, "error_status", "error_index") + _null_list(oids)
    return _wrap(version, community, GET_REQUEST, body)


def encode_getnext(version: int, community: bytes, request_id: int, oids: Sequence[str]) -> bytes:
    """GetNextRequest for *oids* (Null values)."""
    body = _pdu_head(request_id, 0, 0, "error_status", "error_index") + _null_list(oids)
    return _wrap(version, community, GETNEXT_REQUEST, body)


def encode_getbulk(
    community: bytes,
    request_id: int,
    non_repeaters: int,
    max_repetitions: int,
    oids: Sequence[str],
) -> bytes:
    """GetBulkRequest (v2c only) for *oids* (Null values)."""
    body = _pdu_head(request_id, non_repeaters, max_repetitions, "non_repeaters", "max_repetitions")
    return _wrap(VERSION_2C, community, GETBULK_REQUEST, body + _null_list(oids))


def encode_set(
    version: int, community: bytes, request_id: int, varbinds: Iterable[Sequence[object]]
) -> bytes:
    """SetRequest with ``(oid, tag, value)`` varbinds."""
    return encode_message(version, community, SET_REQUEST, request_id, 0, 0, varbinds)


def encode_response(
    version: int,
    community: bytes,
    request_id: int,
    error_status: int,
    error_index: int,
    varbinds: Iterable[Sequence[object]],
) -> bytes:
    """Response (v1 GetResponse) PDU with ``(oid, tag, value)`` varbinds."""
    return encode_message(
        version, community, RESPONSE, request_id, error_status, error_index, varbinds
    )


def encode_trap_v2(
    community: bytes, request_id: int, varbinds: Iterable[Sequence[object]]
) -> bytes:
    """SNMPv2-Trap PDU (v2c).  By RFC 3416 the first two varbinds should be
    sysUpTime.0 and snmpTrapOID.0; the caller supplies them."""
    return encode_message(VERSION_2C, community, TRAP_V2, request_id, 0, 0, varbinds)


def encode_inform(
    community: bytes, request_id: int, varbinds: Iterable[Sequence[object]]
) -> bytes:
    """InformRequest PDU (v2c), varbinds as for :func:`encode_trap_v2`."""
    return encode_message(VERSION_2C, community, INFORM_REQUEST, request_id, 0, 0, varbinds)


def encode_trap_v1(
    community: bytes,
    enterprise: str,
    agent_addr: str,
    generic: int,
    specific: int,
    timestamp: int,
    varbinds: Iterable[Sequence[object]],
) -> bytes:
    """SNMPv1 Trap-PDU (RFC 1157)."""
    body = (
        _oid_tlv(enterprise)
        + b"\x40\x04"
        + _ip_octets(agent_addr)
        + _int_tlv(2, _check_int(generic, _INT32_MIN, _INT32_MAX, "generic"))
        + _int_tlv(2, _check_int(specific, _INT32_MIN, _INT32_MAX, "specific"))
        + _int_tlv(0x43, _check_int(timestamp, 0, _UINT32_MAX, "timestamp"))
        + _varbind_list(varbinds)
    )
    return _wrap(VERSION_1, community, TRAP_V1, body)


# --------------------------------------------------------------------------
# Decoding


def _tl(data: bytes, pos: int, end: int, what: str) -> tuple[int, int]:
    """Length of the TLV whose identifier octet is at *pos*: (start, end)."""
    if pos + 2 > end:
        raise BERError(pos, f"truncated {what}")
    n = data[pos + 1]
    start = pos + 2
    if n >= 0x80:
        k = n & 0x7F
        if not k:
            raise BERError(pos + 1, f"indefinite length in {what}")
        if k > 4:
            raise BERError(pos + 1, f"{what} length takes {k} octets (max 4)")
        start += k
        if start > end:
            raise BERError(pos + 1, f"truncated length of {what}")
        n = int.from_bytes(data[pos + 2 : start], "big")
    stop = start + n
    if stop > end:
        raise BERError(pos, f"{what} length {n} runs past its container ({end - start} octets left)")
    return start, stop


def _expect(data: bytes, pos: int, end: int, tag: int, what: str) -> tuple[int, int]:
    if pos >= end:
        raise BERError(pos, f"missing {what}")
    if data[pos] != tag:
        raise BERError(pos, f"{what}: expected tag 0x{tag:02X}, got 0x{data[pos]:02X}")
    return _tl(data, pos, end, what)


def _int_value(data: bytes, s: int, e: int, lo: int, hi: int, maxlen: int, what: str) -> int:
    n = e - s
    if not n:
        raise BERError(s, f"empty {what}")
    if n > maxlen:
        raise BERError(s, f"{what} has {n} content octets (max {maxlen})")
    v = int.from_bytes(data[s:e], "big", signed=True)
    if not lo <= v <= hi:
        raise BERError(s, f"{what} {v} out of range {lo}..{hi}")
    return v


def _int32_field(data: bytes, pos: int, end: int, what: str) -> tuple[int, int]:
    s, e = _expect(data, pos, end, 0x02, what)
    return _int_value(data, s, e, _INT32_MIN, _INT32_MAX, 5, what), e


def _uint31_field(data: bytes, pos: int, end: int, what: str) -> tuple[int, int]:
    s, e = _expect(data, pos, end, 0x02, what)
    return _int_value(data, s, e, 0, _INT32_MAX, 5, what), e


def _value(vt: int, data: bytes, s: int, e: int) -> tuple[str, object]:
    """Decode one varbind value (identifier octet *vt*, content [s, e))."""
    n = e - s
    if vt == 0x02:
        return INTEGER, _int_value(data, s, e, _INT32_MIN, _INT32_MAX, 5, INTEGER)
    if vt in _UNSIGNED32:
        tag = _UNSIGNED32[vt]
        return tag, _int_value(data, s, e, 0, _UINT32_MAX, 5, tag)
    if vt == 0x04:
        return OCTET_STRING, data[s:e]
    if vt == 0x46:
        return COUNTER64, _int_value(data, s, e, 0, _UINT64_MAX, 9, COUNTER64)
    if vt == 0x06:
        raw = data[s:e]
        text = _OID_CACHE.get(raw)
        return OBJECT_IDENTIFIER, text if text is not None else _oid_miss(raw, s)
    if vt == 0x40:
        if n != 4:
            raise BERError(s, f"IpAddress has {n} octets (expected 4)")
        return IP_ADDRESS, "%d.%d.%d.%d" % (data[s], data[s + 1], data[s + 2], data[s + 3])
    if vt == 0x44:
        return OPAQUE, data[s:e]
    if vt == 0x05 or 0x80 <= vt <= 0x82:
        if n:
            raise BERError(s, f"{'Null' if vt == 5 else _EXCEPTIONS[vt - 0x80]} with {n} content octets")
        return (NULL if vt == 5 else _EXCEPTIONS[vt - 0x80]), None
    raise BERError(s, f"unsupported varbind value tag 0x{vt:02X}")  # pragma: no cover


# Varbind header cache.  Key: the octets of a varbind from its SEQUENCE tag
# through the value's length octet (30 L 06 L <oid> T L), all short-form.
# A key fixes the OID, the value tag and every length, so a hit needs only
# the value's content decoded (and, for integers, its range checked).
# Value: (oid text, tag name, kind, total varbind length).
_K_U32, _K_INT, _K_BYTES, _K_U64, _K_NONE, _K_IP, _K_OID = 1, 2, 3, 4, 5, 6, 7
#: value identifier octet -> (kind, tag name)
_KINDS = {
    0x41: (_K_U32, COUNTER32),
    0x42: (_K_U32, GAUGE32),
    0x43: (_K_U32, TIMETICKS),
    0x02: (_K_INT, INTEGER),
    0x04: (_K_BYTES, OCTET_STRING),
    0x44: (_K_BYTES, OPAQUE),
    0x46: (_K_U64, COUNTER64),
    0x05: (_K_NONE, NULL),
    0x80: (_K_NONE, NO_SUCH_OBJECT),
    0x81: (_K_NONE, NO_SUCH_INSTANCE),
    0x82: (_K_NONE, END_OF_MIB_VIEW),
    0x40: (_K_IP, IP_ADDRESS),
    0x06: (_K_OID, OBJECT_IDENTIFIER),
}
VARBIND_CACHE_MAX = 100_000
_VB_CACHE: dict[bytes, tuple[str, str, int, int]] = {}


def _varbind(data: bytes, pos: int, end: int) -> tuple[Varbind, int]:
    """Decode one varbind with full checks (the general path)."""
    s, e = _expect(data, pos, end, 0x30, "varbind")
    os_, oe = _expect(data, s, e, 0x06, "varbind name")
    raw = data[os_:oe]
    oid = _OID_CACHE.get(raw)
    if oid is None:
        oid = _oid_miss(raw, os_)
    if oe >= e:
        raise BERError(oe, "varbind has no value")
    if data[oe] not in _KINDS:
        raise BERError(oe, f"unsupported varbind value tag 0x{data[oe]:02X}")
    vs, ve = _tl(data, oe, e, "varbind value")
    if ve != e:
        raise BERError(ve, "trailing octets in varbind")
    tag, value = _value(data[oe], data, vs, ve)
    return (oid, tag, value), e


def _header_miss(data: bytes, pos: int, vs: int, end: int, key: bytes) -> tuple[str, str, int, int] | None:
    """Validate and cache a varbind header not yet in the header cache.

    *key* is ``data[pos:vs]``, *vs* where the value's content would start if
    every length is short-form.  Returns the cache entry, or None when the
    varbind has another shape (long lengths, bad lengths, unknown tag); the
    general path then decodes it or raises.
    """
    if data[pos] != 0x30 or data[pos + 2] != 0x06:
        return None
    ln = data[pos + 1]
    vl = data[vs - 1]
    total = 2 + ln
    kt = _KINDS.get(data[vs - 2])
    if kt is None or (ln | data[pos + 3] | vl) >= 0x80 or vs + vl != pos + total or pos + total > end:
        return None
    kind = kt[0]
    if kind <= _K_INT:
        if not 0 < vl <= 5:
            return None
    elif kind == _K_U64:
        if not 0 < vl <= 9:
            return None
    elif kind == _K_NONE:
        if vl:
            return None
    elif kind == _K_IP:
        if vl != 4:
            return None
    # The OID: a known prefix (table column) and a one-octet last
    # sub-identifier is the usual case, then the OID cache, then the works.
    oid = None
    last = data[vs - 3]
    if last < 0x80 and vs - 4 >= pos + 4 and data[vs - 4] < 0x80:
        ptext = _PREFIX_CACHE.get(data[pos + 4 : vs - 3])
        if ptext is not None:
            oid = ptext + _S[last]
    if oid is None:
        raw = data[pos + 4 : vs - 2]
        oid = _OID_CACHE.get(raw)
        if oid is None:
            oid = _oid_miss(raw, pos + 4)
    entry = (oid, kt[1], kind, total)
    if len(_VB_CACHE) >= VARBIND_CACHE_MAX:
        _VB_CACHE.clear()
    _VB_CACHE[key] = entry
    return entry


def _varbinds(data: bytes, pos: int, end: int) -> list[Varbind]:
    """Decode the varbinds in [pos, end).

    The usual varbind (short-form lengths, known value tag) is decoded
    inline, its header (sequence, OID, value tag and lengths) looked up in
    the header cache.  Anything else goes through :func:`_varbind`, which
    decodes it or raises the precise :class:`BERError`.
    """
    out: list[Varbind] = []
    append = out.append
    hget = _VB_CACHE.get
    oget = _OID_CACHE.get
    header_miss = _header_miss
    fb = int.from_bytes
    while pos < end:
        try:
            vs = pos + 6 + data[pos + 3]
            key = data[pos:vs]
            hit = hget(key)
            if hit is None:
                hit = header_miss(data, pos, vs, end, key)
            if hit is not None:
                oid, tag, kind, vend = hit
                vend += pos
                if vend <= end:
                    if kind == 1:  # Counter32, Gauge32, TimeTicks
                        v = fb(data[vs:vend], "big", signed=True)
                        if 0 <= v <= 0xFFFFFFFF:
                            append((oid, tag, v))
                            pos = vend
                            continue
                    elif kind == 2:  # Integer
                        v = fb(data[vs:vend], "big", signed=True)
                        if -0x80000000 <= v <= 0x7FFFFFFF:
                            append((oid, tag, v))
                            pos = vend
                            continue
                    elif kind == 3:  # OctetString, Opaque
                        append((oid, tag, data[vs:vend]))
                        pos = vend
                        continue
                    elif kind == 5:  # Null and the v2c exceptions
                        append((oid, tag, None))
                        pos = vend
                        continue
                    elif kind == 4:  # Counter64
                        v = fb(data[vs:vend], "big", signed=True)
                        if 0 <= v <= 0xFFFFFFFFFFFFFFFF:
                            append((oid, tag, v))
                            pos = vend
                            continue
                    elif kind == 6:  # IpAddress
                        append((oid, tag, "%d.%d.%d.%d" % tuple(data[vs:vend])))
                        pos = vend
                        continue
                    else:  # an ObjectIdentifier value
                        raw = data[vs:vend]
                        v = oget(raw)
                        if v is None:
                            v = _oid_miss(raw, vs)
                        append((oid, tag, v))
                        pos = vend
                        continue
                    # an integer out of its range: the general path explains
        except IndexError:
            pass  # ran off the buffer: the general path says where and why
        item, pos = _varbind(data, pos, end)
        append(item)
    return out


def decode_message(data: bytes) -> SnmpMessage:
    """Decode one SNMP v1/v2c message; raise :class:`BERError` if malformed."""
    if type(data) is not bytes:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"data must be bytes, not {type(data).__name__}")
        data = bytes(data)
    try:
        msg = _fast_message(data)
        if msg is None:
            msg = _decode_message(data)
        return msg
    except BERError:
        raise
    except (IndexError, ValueError, OverflowError, TypeError) as exc:  # pragma: no cover
        # Defensive net: the checks should make this unreachable.
        raise BERError(-1, f"malformed message ({type(exc).__name__}: {exc})") from None


_FAST_PDUS = (
    None,
    frozenset((GET_REQUEST, GETNEXT_REQUEST, RESPONSE, SET_REQUEST)),  # v1 (trap excluded)
    _PDUS_BY_VERSION[VERSION_2C],
)


def outer_sequence(data: bytes) -> tuple[int, int] | None:
    """(content offset, content length) of a message's outer SEQUENCE written
    with a 1-, 2- or 3-octet length (what agents send); None otherwise, and
    the general decoders then decode it or say why not. Used by the fast
    paths of this module and of the SNMPv3 parser."""
    if len(data) < 4 or data[0] != 0x30:
        return None
    ln = data[1]
    if ln < 0x80:
        return 2, ln
    if ln == 0x81:
        return 3, data[2]
    if ln == 0x82:
        return 4, (data[2] << 8) | data[3]
    return None


def _fast_message(data: bytes) -> SnmpMessage | None:
    """The usual message shape, with few calls; None if anything differs
    (the general :func:`_decode_message` then decodes or explains)."""
    try:
        n = len(data)
        head = outer_sequence(data)
        if head is None:
            return None
        p, ln = head
        # version: 02 01 00|01 ; community: 04 short
        if p + ln != n or data[p] != 0x02 or data[p + 1] != 1 or data[p + 2] > 1 or data[p + 3] != 0x04:
            return None
        version = data[p + 2]
        cl = data[p + 4]
        if cl >= 0x80:
            return None
        p += 5
        community = data[p : p + cl]
        p += cl
        pdu_type = data[p]
        if pdu_type not in _FAST_PDUS[version + 1]:
            return None
        ln = data[p + 1]
        if ln < 0x80:
            p += 2
        elif ln == 0x81:
            ln = data[p + 2]
            p += 3
        elif ln == 0x82:
            ln = (data[p + 2] << 8) | data[p + 3]
            p += 4
        else:
            return None
        if p + ln != n:
            return None
        # request-id, error-status, error-index: 02 with 1..4 content octets
        fb = int.from_bytes
        if data[p] != 0x02 or not 0 < data[p + 1] <= 4:
            return None
        q = p + 2 + data[p + 1]
        request_id = fb(data[p + 2 : q], "big", signed=True)
        if data[q] != 0x02 or not 0 < data[q + 1] <= 4:
            return None
        p = q + 2 + data[q + 1]
        error_status = fb(data[q + 2 : p], "big", signed=True)
        if data[p] != 0x02 or not 0 < data[p + 1] <= 4:
            return None
        q = p + 2 + data[p + 1]
        error_index = fb(data[p + 2 : q], "big", signed=True)
        if error_status < 0 or error_index < 0:
            return None
        # variable-bindings SEQUENCE up to the end
        if data[q] != 0x30:
            return None
        ln = data[q + 1]
        if ln < 0x80:
            q += 2
        elif ln == 0x81:
            ln = data[q + 2]
            q += 3
        elif ln == 0x82:
            ln = (data[q + 2] << 8) | data[q + 3]
            q += 4
        else:
            return None
        if q + ln != n:
            return None
    except IndexError:
        return None
    return SnmpMessage(
        version, community, pdu_type, request_id, error_status, error_index,
        _varbinds(data, q, n),
    )


def _decode_message(data: bytes) -> SnmpMessage:
    """General message decoder: every shape, precise errors."""
    n = len(data)
    s, e = _expect(data, 0, n, 0x30, "message")
    if e != n:
        raise BERError(e, f"{n - e} trailing octets after the message")
    vs, p = _expect(data, s, e, 0x02, "version")
    version = _int_value(data, vs, p, _INT32_MIN, _INT32_MAX, 5, "version")
    if version not in _PDUS_BY_VERSION:
        raise BERError(vs, f"unsupported SNMP version {version} (only 0 = v1, 1 = v2c)")
    cs, p = _expect(data, p, e, 0x04, "community")
    community = data[cs:p]
    if p >= e:
        raise BERError(p, "missing PDU")
    pdu_type = data[p]
    if pdu_type not in _PDUS_BY_VERSION[version]:
        raise BERError(p, f"PDU tag 0x{pdu_type:02X} is not a version-{version} PDU")
    ps, pe = _tl(data, p, e, "PDU")
    if pe != e:
        raise BERError(pe, "trailing octets after the PDU")
    if pdu_type == TRAP_V1:
        es, p = _expect(data, ps, pe, 0x06, "enterprise")
        enterprise = decode_oid(data[es:p], es)
        as_, p = _expect(data, p, pe, 0x40, "agent-addr")
        if p - as_ != 4:
            raise BERError(as_, f"agent-addr has {p - as_} octets (expected 4)")
        agent_addr = "%d.%d.%d.%d" % (data[as_], data[as_ + 1], data[as_ + 2], data[as_ + 3])
        generic, p = _int32_field(data, p, pe, "generic-trap")
        specific, p = _int32_field(data, p, pe, "specific-trap")
        ts, p = _expect(data, p, pe, 0x43, "time-stamp")
        time_stamp = _int_value(data, ts, p, 0, _UINT32_MAX, 5, "time-stamp")
        ls, le = _expect(data, p, pe, 0x30, "variable-bindings")
        if le != pe:
            raise BERError(le, "trailing octets after variable-bindings")
        return SnmpMessage(
            version, community, pdu_type, None, None, None, _varbinds(data, ls, le),
            enterprise, agent_addr, generic, specific, time_stamp,
        )
    request_id, p = _int32_field(data, ps, pe, "request-id")
    names = ("non-repeaters", "max-repetitions") if pdu_type == GETBULK_REQUEST else ("error-status", "error-index")
    error_status, p = _uint31_field(data, p, pe, names[0])
    error_index, p = _uint31_field(data, p, pe, names[1])
    ls, le = _expect(data, p, pe, 0x30, "variable-bindings")
    if le != pe:
        raise BERError(le, "trailing octets after variable-bindings")
    return SnmpMessage(
        version, community, pdu_type, request_id, error_status, error_index,
        _varbinds(data, ls, le),
    )
