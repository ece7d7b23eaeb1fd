"""Unit tests for connector.amqp.fieldtable (AMQP 0-9-1 field tables)."""

from __future__ import annotations

import calendar
import random
import struct
from collections import OrderedDict
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from io import BytesIO
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connector.amqp.fieldtable import (
    CLIENT_CAPABILITIES,
    TYPE_CODES,
    FieldTableError,
    FieldTableTypeError,
    FieldValue,
    client_properties,
    decode_array,
    decode_table,
    encode_array,
    encode_table,
    install_into_txamqp,
)

UTC = timezone.utc


# -- helpers: build wire bytes by hand, independently of the codec ----------------


def short(raw: bytes) -> bytes:
    return bytes([len(raw)]) + raw


def long_(raw: bytes) -> bytes:
    return struct.pack(">I", len(raw)) + raw


def field(name: str, code: str, payload: bytes) -> bytes:
    return short(name.encode()) + code.encode() + payload


def assert_same(actual: Any, expected: Any, where: str = "") -> None:
    """Equality that also checks types (True == 1 == 1.0 in Python)."""
    assert type(actual) is type(expected), f"{where}: {actual!r} vs {expected!r}"
    if isinstance(expected, dict):
        assert list(actual) == list(expected), where
        for key in expected:
            assert_same(actual[key], expected[key], f"{where}.{key}")
    elif isinstance(expected, list):
        assert len(actual) == len(expected), where
        for i, (a, e) in enumerate(zip(actual, expected)):
            assert_same(a, e, f"{where}[{i}]")
    elif isinstance(expected, float):
        # Bit-exact: keeps -0.0 apart from 0.0.
        assert struct.pack(">d", actual) == struct.pack(">d", expected), where
    elif isinstance(expected, Decimal):
        assert actual.as_tuple() == expected.as_tuple(), where
    elif isinstance(expected, datetime):
        assert actual == expected and actual.tzinfo == UTC, where
    else:
        assert actual == expected, where


def roundtrip(table: dict[str, Any]) -> dict[str, Any]:
    data = encode_table(table)
    decoded, end = decode_table(data)
    assert end == len(data)
    return decoded


# -- every type code -----------------------------------------------------------------

JUNE_1 = datetime(2024, 6, 1, 10, 0, tzinfo=UTC)
JUNE_1_S = calendar.timegm(JUNE_1.utctimetuple())

# (code, value given, value decoded, payload bytes after the type code)
TYPED_CASES = [
    ("t", True, True, b"\x01"),
    ("t", False, False, b"\x00"),
    ("b", -128, -128, b"\x80"),
    ("b", 127, 127, b"\x7f"),
    ("B", 255, 255, b"\xff"),
    ("s", -32768, -32768, b"\x80\x00"),
    ("U", -2, -2, b"\xff\xfe"),
    ("u", 65535, 65535, b"\xff\xff"),
    ("I", -(2**31), -(2**31), b"\x80\x00\x00\x00"),
    ("i", 2**32 - 1, 2**32 - 1, b"\xff\xff\xff\xff"),
    ("l", -(2**63), -(2**63), b"\x80" + b"\x00" * 7),
    ("L", 2**63 - 1, 2**63 - 1, b"\x7f" + b"\xff" * 7),
    ("L", -1, -1, b"\xff" * 8),
    ("f", 1.5, 1.5, struct.pack(">f", 1.5)),
    ("d", -0.25, -0.25, struct.pack(">d", -0.25)),
    ("D", Decimal("-12.345"), Decimal("-12.345"), b"\x03" + struct.pack(">i", -12345)),
    ("D", 7, Decimal("7"), b"\x00" + struct.pack(">i", 7)),
    ("S", "héllo", "héllo", long_("héllo".encode())),
    ("S", b"\xff\xfe", b"\xff\xfe", long_(b"\xff\xfe")),
    ("S", b"ascii", "ascii", long_(b"ascii")),
    ("x", b"\x00\x01", b"\x00\x01", long_(b"\x00\x01")),
    ("x", "é", "é".encode(), long_("é".encode())),
    ("A", [1, "a"], [1, "a"], long_(b"I\x00\x00\x00\x01S\x00\x00\x00\x01a")),
    ("A", (), [], long_(b"")),
    ("T", JUNE_1, JUNE_1, struct.pack(">Q", JUNE_1_S)),
    ("T", JUNE_1_S, JUNE_1, struct.pack(">Q", JUNE_1_S)),
    ("F", {"k": None}, {"k": None}, long_(b"\x01kV")),
    ("V", None, None, b""),
]


def test_typed_cases_cover_every_type_code() -> None:
    assert {case[0] for case in TYPED_CASES} == set(TYPE_CODES) == set("tbBsUuIilLfdDSxATFV")


@pytest.mark.parametrize(("code", "given_value", "decoded", "payload"), TYPED_CASES)
def test_every_type_code_in_a_table(code: str, given_value: Any, decoded: Any,
                                    payload: bytes) -> None:
    data = encode_table({"k": FieldValue(code, given_value)})
    assert data == long_(field("k", code, payload))
    table, end = decode_table(data)
    assert end == len(data)
    assert_same(table, {"k": decoded})


@pytest.mark.parametrize(("code", "given_value", "decoded", "payload"), TYPED_CASES)
def test_every_type_code_in_an_array(code: str, given_value: Any, decoded: Any,
                                     payload: bytes) -> None:
    data = encode_array([FieldValue(code, given_value), None])
    assert data == long_(code.encode() + payload + b"V")
    items, end = decode_array(data)
    assert end == len(data)
    assert_same(items, [decoded, None])


@pytest.mark.parametrize(("value", "code"), [
    (True, "t"),
    (False, "t"),
    (0, "I"),
    (2**31 - 1, "I"),
    (-(2**31), "I"),
    (2**31, "l"),
    (-(2**31) - 1, "l"),
    (2**63 - 1, "l"),
    (-(2**63), "l"),
    (1.0, "d"),
    ("text", "S"),
    (b"raw", "x"),
    (bytearray(b"raw"), "x"),
    (memoryview(b"raw"), "x"),
    (Decimal("1.5"), "D"),
    (datetime(2020, 1, 1), "T"),
    (None, "V"),
    ([1], "A"),
    ((1,), "A"),
    ({"a": 1}, "F"),
    (OrderedDict(a=1), "F"),
    (MappingProxyType({"a": 1}), "F"),
])
def test_python_types_map_to_amqp_codes(value: Any, code: str) -> None:
    data = encode_table({"k": value})
    assert data[6:7] == code.encode()  # 4 length + 1 name length + "k"


@pytest.mark.parametrize("value", [2**31 - 1, -(2**31), 2**31, -(2**31) - 1,
                                   2**63 - 1, -(2**63), 0, -1])
def test_boundary_ints_roundtrip(value: int) -> None:
    assert_same(roundtrip({"n": value}), {"n": value})


@pytest.mark.parametrize("value", [2**63, -(2**63) - 1, 10**30])
def test_int_outside_64_bits_is_refused_naming_the_key(value: int) -> None:
    with pytest.raises(FieldTableError, match="too_big") as info:
        encode_table({"ok": 1, "too_big": value})
    assert isinstance(info.value, ValueError)
    assert info.value.path == ["too_big"]
    assert "long-long" in str(info.value)


def test_empty_table_and_array() -> None:
    assert encode_table({}) == b"\x00\x00\x00\x00"
    assert decode_table(b"\x00\x00\x00\x00") == ({}, 4)
    assert encode_array([]) == b"\x00\x00\x00\x00"
    assert decode_array(b"\x00\x00\x00\x00") == ([], 4)


def test_nested_tables_and_arrays() -> None:
    table = {
        "outer": {"inner": {"deep": [1, [2, [3, {"x": b"\x00"}]], {}]}},
        "list": [[], [None], [{"a": [True, False]}]],
        "tuple": (1, ("two", 3.0)),
    }
    assert_same(roundtrip(table), {
        "outer": {"inner": {"deep": [1, [2, [3, {"x": b"\x00"}]], {}]}},
        "list": [[], [None], [{"a": [True, False]}]],
        "tuple": [1, ["two", 3.0]],
    })


def test_unicode_keys_and_values() -> None:
    table = {"clé": "valeur", "键": "值", "emoji 🐇": "🥕", "": "empty key"}
    assert_same(roundtrip(table), table)


def test_field_name_length_limit_is_in_utf8_bytes() -> None:
    ok = {"a" * 255: 1, "é" * 127 + "a": 2}
    assert_same(roundtrip(ok), ok)
    for key in ("a" * 256, "é" * 128):
        with pytest.raises(FieldTableError, match="255"):
            encode_table({key: 1})


def test_field_name_not_utf8_survives_a_roundtrip() -> None:
    # Some publisher wrote a Latin-1 name: decoding must not fail the delivery.
    data = long_(field("x", "I", b"\x00\x00\x00\x01").replace(b"x", b"\xe9"))
    table, _ = decode_table(data)
    assert list(table) == ["\udce9"]
    assert encode_table(table) == data


@pytest.mark.parametrize("value", [
    Decimal("0"), Decimal("1.50"), Decimal("-0.001"), Decimal("2147483647"),
    Decimal("-2147483648"), Decimal("-214748.3648"), Decimal("0.00"),
    Decimal("1E-255"), Decimal("42"),
])
def test_decimal_roundtrip_keeps_scale(value: Decimal) -> None:
    assert_same(roundtrip({"d": value}), {"d": value})


@pytest.mark.parametrize(("value", "decoded"), [
    (Decimal("1E+3"), Decimal("1000")),
    # Too many digits: only as many trailing zeros as needed are dropped.
    (Decimal("1.00000000000000000000"), Decimal("1.000000000")),
    (Decimal("5" + "0" * 300 + "E-300"), Decimal("5.00000000")),
    (Decimal("-0"), Decimal("0")),
    (Decimal("0E+7"), Decimal("0")),
])
def test_decimal_normalised_when_needed(value: Decimal, decoded: Decimal) -> None:
    assert_same(roundtrip({"d": value}), {"d": decoded})


@pytest.mark.parametrize("value", [
    Decimal("2147483648"), Decimal("-2147483649"), Decimal("1E-256"),
    Decimal("1E+10"), Decimal("NaN"), Decimal("Infinity"), Decimal("0.12345678901"),
])
def test_decimal_not_representable(value: Decimal) -> None:
    with pytest.raises(FieldTableError, match="decimal"):
        encode_table({"d": value})


def test_decimal_decoding_ignores_the_decimal_context() -> None:
    import decimal

    with decimal.localcontext() as ctx:
        ctx.prec = 3
        table, _ = decode_table(long_(field("d", "D", b"\x02" + struct.pack(">i", 123456))))
    assert_same(table, {"d": Decimal("1234.56")})


def test_datetimes() -> None:
    naive = datetime(2024, 6, 1, 10, 0, 0, 999_999)
    paris = datetime(2024, 6, 1, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    table = roundtrip({"naive": naive, "paris": paris, "epoch": datetime(1970, 1, 1)})
    # Seconds precision, UTC, aware.
    assert_same(table, {"naive": JUNE_1, "paris": JUNE_1,
                        "epoch": datetime(1970, 1, 1, tzinfo=UTC)})
    with pytest.raises(FieldTableError, match="1970"):
        encode_table({"old": datetime(1969, 12, 31, 23, 59, 59)})


def test_timestamp_beyond_datetime_range_decodes_to_int() -> None:
    millis = JUNE_1_S * 1000  # a publisher confusing ms with s
    data = long_(field("t", "T", struct.pack(">Q", millis)) + field("m", "T", b"\xff" * 8))
    assert_same(decode_table(data)[0], {"t": millis, "m": 2**64 - 1})


def test_long_string_falls_back_to_bytes_when_not_utf8() -> None:
    data = long_(field("bin", "S", long_(b"\x80\x81")) + field("txt", "S", long_(b"ok"))
                 + field("surrogate", "S", long_(b"\xed\xa0\x80")))
    assert_same(decode_table(data)[0],
                {"bin": b"\x80\x81", "txt": "ok", "surrogate": b"\xed\xa0\x80"})


def test_none_bytes_and_floats() -> None:
    table = {"none": None, "bytes": b"\x00\xff" * 100, "inf": float("inf"),
             "neg_zero": -0.0, "tiny": 5e-324}
    assert_same(roundtrip(table), table)


def test_decode_at_offset_and_with_trailing_data() -> None:
    data = encode_table({"a": 1})
    buf = b"\x99\x99" + data + b"trailing"
    assert decode_table(buf, 2) == ({"a": 1}, 2 + len(data))
    assert decode_table(memoryview(buf), 2) == ({"a": 1}, 2 + len(data))
    assert decode_table(bytearray(buf), 2) == ({"a": 1}, 2 + len(data))
    array = encode_array(["x"])
    assert decode_array(data + array, len(data)) == (["x"], len(data) + len(array))


# -- a real x-death header, as RabbitMQ lays it out -------------------------------------

DEATH_TIME = datetime(2024, 6, 1, 8, 30, 15, tzinfo=UTC)


def xdeath_bytes() -> bytes:
    death = b"".join([
        field("count", "l", struct.pack(">q", 1)),
        field("reason", "S", long_(b"rejected")),
        field("queue", "S", long_(b"centaure.snmp.poll")),
        field("time", "T", struct.pack(">Q", calendar.timegm(DEATH_TIME.utctimetuple()))),
        field("exchange", "S", long_(b"centaure.events")),
        field("routing-keys", "A", long_(b"S" + long_(b"snmp.poll.r1"))),
    ])
    headers = b"".join([
        field("x-death", "A", long_(b"F" + long_(death))),
        field("x-first-death-exchange", "S", long_(b"centaure.events")),
        field("x-first-death-queue", "S", long_(b"centaure.snmp.poll")),
        field("x-first-death-reason", "S", long_(b"rejected")),
    ])
    return long_(headers)


XDEATH = {
    "x-death": [{
        "count": 1,
        "reason": "rejected",
        "queue": "centaure.snmp.poll",
        "time": DEATH_TIME,
        "exchange": "centaure.events",
        "routing-keys": ["snmp.poll.r1"],
    }],
    "x-first-death-exchange": "centaure.events",
    "x-first-death-queue": "centaure.snmp.poll",
    "x-first-death-reason": "rejected",
}


def test_decode_rabbitmq_x_death() -> None:
    data = xdeath_bytes()
    table, end = decode_table(data)
    assert end == len(data)
    assert_same(table, XDEATH)


def test_encode_x_death_like_rabbitmq_given_explicit_long_count() -> None:
    # Python's int 1 would go out as I; RabbitMQ writes the count as l.
    table = {**XDEATH, "x-death": [{**XDEATH["x-death"][0], "count": FieldValue("l", 1)}]}
    assert encode_table(table) == xdeath_bytes()


# -- property-based round trip ------------------------------------------------------------

keys = st.text(max_size=12).filter(lambda k: len(k.encode()) <= 255)
scalars = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=30),
    st.binary(max_size=30),
    st.builds(lambda unscaled, scale: Decimal(f"{unscaled}E-{scale}"),
              st.integers(-(2**31), 2**31 - 1), st.integers(0, 255)),
    st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59),
                 timezones=st.sampled_from([None, UTC])).map(lambda d: d.replace(microsecond=0)),
    st.none(),
)
values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.lists(children, max_size=4).map(tuple),
        st.dictionaries(keys, children, max_size=4),
    ),
    max_leaves=25,
)


def expected_decoding(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [expected_decoding(v) for v in value]
    if isinstance(value, dict):
        return {k: expected_decoding(v) for k, v in value.items()}
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC)  # generated naive or UTC
    return value


@settings(max_examples=300, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(keys, values, max_size=6))
def test_property_roundtrip(table: dict[str, Any]) -> None:
    data = encode_table(table)
    decoded, end = decode_table(data)
    assert end == len(data)
    assert_same(decoded, expected_decoding(table))
    assert encode_table(decoded) == data  # decoding loses nothing that matters


# -- malformed input -----------------------------------------------------------------------

RICH = {
    **XDEATH,
    "caps": dict(CLIENT_CAPABILITIES),
    "typed": [FieldValue(code, value) for code, value, _, _ in TYPED_CASES],
    "big": 2**40,
    "dec": Decimal("-3.14"),
    "raw": b"\x00\x01\x02",
    "float": 2.5,
}


def check_only_field_table_error(data: bytes) -> None:
    try:
        decode_table(data)
    except FieldTableError as exc:
        # The catch-all in the codec is a safety net; explicit checks must fire.
        assert "internal" not in str(exc), exc


def test_every_prefix_is_rejected() -> None:
    data = encode_table(RICH)
    for size in range(len(data)):
        with pytest.raises(FieldTableError):
            decode_table(data[:size])
        check_only_field_table_error(data[:size])


def test_random_corruption_raises_only_field_table_error() -> None:
    rng = random.Random(0xC3A7)
    base = encode_table(RICH)
    for _ in range(3000):
        data = bytearray(base)
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        if rng.random() < 0.2:  # also shift everything after a point
            pos = rng.randrange(len(data))
            if rng.random() < 0.5:
                del data[pos]
            else:
                data.insert(pos, rng.randrange(256))
        check_only_field_table_error(bytes(data))


@settings(max_examples=300, deadline=None, database=None)
@given(st.binary(max_size=64))
def test_arbitrary_bytes_raise_only_field_table_error(body: bytes) -> None:
    check_only_field_table_error(long_(body))
    check_only_field_table_error(body)


def test_unknown_type_code_names_field_and_offset() -> None:
    data = long_(field("ok", "V", b"") + field("key", "Z", b""))
    with pytest.raises(FieldTableError) as info:
        decode_table(data)
    assert info.value.path == ["key"]
    assert info.value.offset == 4 + 4 + 1 + 3
    assert str(info.value) == "field 'key' at offset 12: unknown field type code 'Z'"


def test_nested_error_names_the_full_path() -> None:
    data = xdeath_bytes().replace(b"\x05countl", b"\x05count\x00")
    with pytest.raises(FieldTableError) as info:
        decode_table(data)
    assert info.value.path == ["x-death", 0, "count"]
    assert "'x-death[0].count'" in str(info.value)
    assert "0x00" in str(info.value)
    assert data[info.value.offset] == 0


def test_length_past_the_end() -> None:
    data = long_(field("s", "S", struct.pack(">I", 100) + b"abc"))
    with pytest.raises(FieldTableError, match="declares 100 bytes but only 3") as info:
        decode_table(data)
    assert info.value.path == ["s"]
    assert info.value.offset == 4 + 3


def test_nested_value_cannot_spill_out_of_its_table() -> None:
    # The inner table claims 10 bytes; the outer one holds only 2 after the
    # length, although the buffer has plenty more.
    inner = field("a", "F", struct.pack(">I", 10) + b"\x01b")
    data = long_(inner) + b"V" * 30
    with pytest.raises(FieldTableError, match="declares 10 bytes"):
        decode_table(data)


def test_truncated_field_name() -> None:
    data = long_(field("first", "V", b"") + b"\x09abc")
    with pytest.raises(FieldTableError, match="field name 'abc'") as info:
        decode_table(data)
    assert info.value.offset == 4 + 7


@pytest.mark.parametrize("offset", [-1, 100])
def test_offset_outside_buffer(offset: int) -> None:
    with pytest.raises(FieldTableError):
        decode_table(b"\x00\x00\x00\x00", offset)


def test_deep_nesting_is_a_field_table_error() -> None:
    inner = b""
    for _ in range(5000):
        inner = b"A" + long_(inner)
    with pytest.raises(FieldTableError, match="nested too deeply"):
        decode_table(long_(short(b"k") + inner))
    looped: dict[str, Any] = {}
    looped["self"] = looped
    with pytest.raises(FieldTableError, match="nested too deeply"):
        encode_table(looped)


def test_decode_rejects_non_buffers() -> None:
    with pytest.raises(TypeError):
        decode_table("not bytes")  # type: ignore[arg-type]


# -- encoding errors -----------------------------------------------------------------------


@pytest.mark.parametrize("value", [{1, 2}, object(), datetime(2020, 1, 1).date(), 1j])
def test_unsupported_python_type(value: Any) -> None:
    with pytest.raises(FieldTableTypeError, match="no AMQP field type") as info:
        encode_table({"outer": [{"bad": value}]})
    assert isinstance(info.value, TypeError) and isinstance(info.value, ValueError)
    assert info.value.path == ["outer", 0, "bad"]
    assert str(info.value).startswith("field 'outer[0].bad': ")


def test_non_str_key_and_non_mapping_table() -> None:
    with pytest.raises(FieldTableTypeError, match="field name must be str"):
        encode_table({1: "x"})  # type: ignore[dict-item]
    with pytest.raises(FieldTableTypeError):
        encode_table([("a", 1)])  # type: ignore[arg-type]
    with pytest.raises(FieldTableTypeError):
        encode_array({"a": 1})  # type: ignore[arg-type]


def test_lone_surrogate_value_is_refused() -> None:
    with pytest.raises(FieldTableError, match="UTF-8"):
        encode_table({"s": "\ud800"})


@pytest.mark.parametrize(("code", "value"), [
    ("b", 128), ("b", -129), ("B", -1), ("B", 256), ("s", 2**15), ("U", -(2**15) - 1),
    ("u", 65536), ("I", 2**31), ("i", -1), ("i", 2**32), ("l", 2**63), ("L", 2**63),
    ("f", 1e300), ("T", -1), ("T", 2**64), ("V", 0), ("I", 1.5),
])
def test_field_value_out_of_range(code: str, value: Any) -> None:
    with pytest.raises(FieldTableError) as info:
        encode_table({"k": FieldValue(code, value)})
    assert info.value.path == ["k"]


@pytest.mark.parametrize(("code", "value"), [
    ("I", "1"), ("d", None), ("S", 1), ("x", 1), ("A", {}), ("F", []), ("T", 1.5), ("D", 1.5),
])
def test_field_value_wrong_python_type(code: str, value: Any) -> None:
    with pytest.raises(FieldTableTypeError):
        encode_table({"k": FieldValue(code, value)})


def test_field_value_unknown_code() -> None:
    with pytest.raises(FieldTableError, match="unknown AMQP field type code"):
        FieldValue("Z", 1)
    assert FieldValue("b", 1) == FieldValue("b", 1)
    with pytest.raises(AttributeError):
        FieldValue("b", 1).value = 2  # type: ignore[misc]


# -- client properties ----------------------------------------------------------------------


def test_client_properties() -> None:
    props = client_properties("centaure-snmp", "1.2.3")
    assert props["product"] == "centaure-snmp"
    assert props["version"] == "1.2.3"
    assert str(props["platform"]).startswith("Python 3.")
    assert props["information"]
    assert props["capabilities"] == {
        "publisher_confirms": True,
        "connection.blocked": True,
        "consumer_cancel_notify": True,
        "basic.nack": True,
        "authentication_failure_close": True,
    }
    data = encode_table(props)
    assert field("basic.nack", "t", b"\x01") in data
    assert_same(decode_table(data)[0], props)
    # Callers get their own copy; the shared constant is read-only.
    props["capabilities"]["basic.nack"] = False  # type: ignore[index]
    assert CLIENT_CAPABILITIES["basic.nack"] is True
    with pytest.raises(TypeError):
        CLIENT_CAPABILITIES["x"] = True  # type: ignore[index]


# -- txamqp -------------------------------------------------------------------------------------


@pytest.fixture
def codec_cls(monkeypatch: pytest.MonkeyPatch) -> type:
    from txamqp.codec import Codec

    # Restored at teardown, so the install below stays local to each test.
    monkeypatch.setattr(Codec, "encode_table", Codec.__dict__["encode_table"])
    monkeypatch.setattr(Codec, "decode_table", Codec.__dict__["decode_table"])
    install_into_txamqp()
    return Codec


def test_install_is_idempotent(codec_cls: type) -> None:
    encode, decode = codec_cls.encode_table, codec_cls.decode_table
    install_into_txamqp()
    install_into_txamqp()
    assert codec_cls.encode_table is encode
    assert codec_cls.decode_table is decode


@pytest.mark.parametrize("table", [XDEATH, client_properties("centaure", "0.1.0")],
                         ids=["x-death", "client-properties"])
def test_txamqp_codec_roundtrip(codec_cls: type, table: dict[str, Any]) -> None:
    stream = BytesIO()
    codec = codec_cls(stream)
    codec.encode_octet(7)
    codec.encode("table", table)
    codec.encode_shortstr("after")
    codec.flush()
    assert stream.getvalue() == b"\x07" + encode_table(table) + b"\x05after"

    reader = codec_cls(BytesIO(stream.getvalue()))
    assert reader.decode_octet() == 7
    assert_same(reader.decode("table"), expected_decoding(table))
    assert reader.decode_shortstr() == "after"  # stream position is right


def test_txamqp_codec_decodes_rabbitmq_x_death(codec_cls: type) -> None:
    assert_same(codec_cls(BytesIO(xdeath_bytes())).decode_table(), XDEATH)


def test_txamqp_codec_none_table_is_empty(codec_cls: type) -> None:
    stream = BytesIO()
    codec_cls(stream).encode_table(None)
    assert stream.getvalue() == b"\x00\x00\x00\x00"


def test_txamqp_codec_errors(codec_cls: type) -> None:
    # Length beyond the frame: txamqp would return a short read.
    with pytest.raises(FieldTableError, match="only 2 remain"):
        codec_cls(BytesIO(b"\x00\x00\x00\x09\x01a")).decode_table()
    with pytest.raises(FieldTableError, match="only 0 remain"):
        codec_cls(BytesIO(b"\x00\x00\x00\x09")).decode_table()
    # Offsets are reported within the codec's stream.
    codec = codec_cls(BytesIO(b"\x07" + long_(field("key", "Z", b""))))
    codec.decode_octet()
    with pytest.raises(FieldTableError) as info:
        codec.decode_table()
    assert info.value.offset == 1 + 4 + 4
    assert info.value.path == ["key"]


MINI_SPEC = """<?xml version="1.0"?>
<amqp major="0" minor="9" port="5672">
  <constant name="frame-method" value="1"/>
  <constant name="frame-header" value="2"/>
  <domain name="octet" type="octet"/>
  <domain name="shortstr" type="shortstr"/>
  <domain name="longstr" type="longstr"/>
  <domain name="longlong" type="longlong"/>
  <domain name="bit" type="bit"/>
  <domain name="timestamp" type="timestamp"/>
  <domain name="table" type="table"/>
  <domain name="peer-properties" type="table"/>
  <class name="connection" handler="connection" index="10">
    <method name="start-ok" synchronous="1" index="11">
      <field name="client-properties" domain="peer-properties"/>
      <field name="mechanism" domain="shortstr"/>
      <field name="response" domain="longstr"/>
      <field name="locale" domain="shortstr"/>
    </method>
  </class>
  <class name="basic" handler="channel" index="60">
    <field name="content-type" domain="shortstr"/>
    <field name="content-encoding" domain="shortstr"/>
    <field name="headers" domain="table"/>
    <field name="delivery-mode" domain="octet"/>
    <field name="timestamp" domain="timestamp"/>
    <method name="ack" index="80">
      <field name="delivery-tag" domain="longlong"/>
      <field name="multiple" domain="bit"/>
    </method>
  </class>
</amqp>
"""


def test_txamqp_frames_use_the_codec(codec_cls: type) -> None:
    """What the live connection does: start-ok method and content header."""
    from txamqp import spec as txspec
    from txamqp.connection import Header, Method

    spec = txspec.load_string(MINI_SPEC)
    props = client_properties("centaure", "0.1.0")
    start_ok = spec.classes.byname["connection"].methods.byname["start-ok"]

    stream = BytesIO()
    Method(start_ok, props, "PLAIN", "\x00guest\x00guest", "en_US").encode(codec_cls(stream))
    decoded = Method.decode(spec, codec_cls(BytesIO(stream.getvalue())))
    assert_same(decoded.args[0], props)
    assert decoded.args[1:] == ("PLAIN", "\x00guest\x00guest", "en_US")

    basic = spec.classes.byname["basic"]
    stream = BytesIO()
    Header(basic, 0, 12, headers={**XDEATH, "x-death": [
        {**XDEATH["x-death"][0], "count": FieldValue("l", 1)}]},
        **{"content-type": "text/plain"}).encode(codec_cls(stream))
    header = Header.decode(spec, codec_cls(BytesIO(stream.getvalue())))
    assert header.size == 12
    assert header["content-type"] == "text/plain"
    assert_same(header["headers"], XDEATH)
