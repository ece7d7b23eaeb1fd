"""The bus message model: round trips, hand-written bodies, strict decoding."""

from __future__ import annotations

import json
import time
import typing

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connector import messages as m
from connector.messages import (
    Alarm,
    AlarmCommand,
    AlarmSnapshot,
    Event,
    MessageError,
    Metric,
    Notification,
    Perf,
    SnapshotAlarm,
    Status,
    Threshold,
    ThresholdValue,
    Varbind,
    decode,
    encode,
    exchange_name,
    routing_key,
)

TS = 1767225600.25  # 2026-01-01T00:00:00.25Z
SRC = "centaure-snmp@node1"


def samples() -> dict[str, m.MessageBase]:
    """One fully populated message per type, optional fields set."""
    return {
        "perf": Perf(
            ts=TS, source=SRC, host="ups1.dc1.example.net", address="192.0.2.10",
            device_type="ups",
            metrics=[
                Metric(name="upsBatteryCharge", value=97, kind="gauge", unit="%",
                       oid="1.3.6.1.2.1.33.1.2.4.0"),
                Metric(name="ifInOctets", index="3", value=123456789012, kind="counter",
                       unit="octets", oid="1.3.6.1.2.1.2.2.1.10.3"),
                Metric(name="upsInputVoltage", index="1", value=229.5, kind="gauge",
                       unit="V", oid="1.3.6.1.2.1.33.1.3.3.1.3.1"),
                Metric(name="sysDescr", value="APC Smart-UPS", kind="text",
                       oid="1.3.6.1.2.1.1.1.0"),
                Metric(name="upsSecondsOnBattery", value=None, kind="gauge", unit="s",
                       oid="1.3.6.1.2.1.33.1.2.2.0"),
            ],
        ),
        "alarm_snapshot": AlarmSnapshot(
            ts=TS, source=SRC, host="ups1.dc1.example.net",
            alarms=[
                SnapshotAlarm(key="1.3.6.1.2.1.33.1.6.3.1", name="upsAlarmBatteryBad",
                              severity="major", message="Battery bad", since=TS - 60),
                SnapshotAlarm(key="7", name="upsAlarmOnBypass", severity="warning",
                              message="On bypass"),
            ],
        ),
        "event": Event(
            ts=TS, source="centaure-traps@node1", host="sw1.example.net",
            address="192.0.2.20", snmp_version="v2c", trap_oid="1.3.6.1.6.3.1.1.5.3",
            name="linkDown", severity="major",
            varbinds=[
                Varbind(oid="1.3.6.1.2.1.2.2.1.1.12", name="ifIndex", type="Integer32",
                        value=12),
                Varbind(oid="1.3.6.1.2.1.2.2.1.2.12", type="OctetString", value="ge-0/0/12"),
            ],
            unknown_sender=True,
        ),
        "threshold": Threshold(
            ts=TS, source="centaure-alerter@node1", host="ups1.dc1.example.net",
            rule="battery-low", state="breached",
            values=[ThresholdValue(metric="upsBatteryCharge", value=18.0),
                    ThresholdValue(metric="ifInOctets", index="3", value=5)],
        ),
        "alarm": Alarm(
            ts=TS, source="centaure-correlator@node1", host="sw1.example.net",
            ref=2**64 - 1, name="linkDown", severity="major", state="updated",
            message="ge-0/0/12 down", first_seen=TS - 300, last_seen=TS,
            cleared_at=None, count=3, origin="trap", acked_by="alice", flapping=True,
            cause_ref=0,
        ),
        "alarm_command": AlarmCommand(
            ts=TS, source="centaure-cli@admin1", ref=42, action="note", user="alice",
            note="vendor ticket 1234", host="sw1.example.net",
        ),
        "notification": Notification(
            ts=TS, source="centaure-alerter@node1", ref=42, rule="battery-low",
            channel="webhook", recipient="https://hooks.example.net/noc", state="failed",
            attempts=3, reason="HTTP 503", host="ups1.dc1.example.net",
        ),
        "status": Status(
            ts=TS, source="centaure-db@node2", connector="centaure-db", node="node2",
            pid=4242, version="0.1.0", state="degraded", uptime=3600.5,
            counters={"messages_in": 1200, "buffered": 17, "errors": 0,
                      "poll_latency_p95": 0.42},
        ),
    }


# --- the model ------------------------------------------------------------------


def test_message_types_are_the_design_names() -> None:
    assert m.MESSAGE_TYPES == (
        "perf", "alarm_snapshot", "event", "threshold", "alarm", "alarm_command",
        "notification", "status",
    )
    assert set(m.MESSAGE_CLASSES) == set(m.MESSAGE_TYPES)
    assert set(typing.get_args(m.Message)) == set(m.MESSAGE_CLASSES.values())
    for name, cls in m.MESSAGE_CLASSES.items():
        assert cls.__struct_config__.tag == name
        assert cls.__struct_config__.tag_field == "type"


def test_severities_ordered_and_matching_the_literal() -> None:
    assert m.SEVERITIES == ("critical", "major", "minor", "warning", "info", "unknown")
    assert typing.get_args(m.Severity) == m.SEVERITIES
    assert sorted(["info", "critical", "unknown", "minor"], key=m.SEVERITY_RANK.__getitem__) == [
        "critical", "minor", "info", "unknown"]


def test_constructor_defaults_v_and_ts() -> None:
    before = time.time()
    status = Status(source="centaure-snmp@n1", connector="centaure-snmp", node="n1", pid=1,
                    version="0.1.0", state="ok", uptime=0.0, counters={})
    assert status.v == 1
    assert before <= status.ts <= time.time()
    assert status.msg_type == "status"


def test_encoded_body_puts_the_common_fields_first() -> None:
    body = json.loads(encode(samples()["alarm_command"]))
    assert list(body)[:4] == ["type", "v", "ts", "source"]
    assert body["type"] == "alarm_command" and body["v"] == 1


@pytest.mark.parametrize("msg_type", m.MESSAGE_TYPES)
def test_round_trip(msg_type: str) -> None:
    msg = samples()[msg_type]
    assert decode(encode(msg)) == msg
    assert decode(encode(msg), expected_type=msg_type) == msg
    assert type(decode(encode(msg))) is m.MESSAGE_CLASSES[msg_type]
    # decode() reads our own bodies' type and version from their prefix.
    assert m._OWN_PREFIX.match(encode(msg))


def test_decode_accepts_str_bytearray_and_memoryview() -> None:
    body = encode(samples()["threshold"])
    expected = samples()["threshold"]
    assert decode(body.decode()) == expected
    assert decode(bytearray(body)) == expected
    assert decode(memoryview(body)) == expected


# --- hand-written bodies, as an operator sees them on the bus ---------------------

FIXTURES: dict[str, str] = {
    "perf": """
        {
          "type": "perf", "v": 1, "ts": 1767225600.25, "source": "centaure-snmp@node1",
          "host": "ups1.dc1.example.net", "address": "192.0.2.10", "device_type": "ups",
          "metrics": [
            {"name": "upsBatteryCharge", "index": "", "value": 97, "kind": "gauge",
             "unit": "%", "oid": "1.3.6.1.2.1.33.1.2.4.0"},
            {"name": "ifInOctets", "index": "3", "value": 123456789012, "kind": "counter",
             "unit": "octets", "oid": "1.3.6.1.2.1.2.2.1.10.3"},
            {"name": "upsInputVoltage", "index": "1", "value": 229.5, "kind": "gauge",
             "unit": "V", "oid": "1.3.6.1.2.1.33.1.3.3.1.3.1"},
            {"name": "sysDescr", "index": "", "value": "APC Smart-UPS", "kind": "text",
             "unit": null, "oid": "1.3.6.1.2.1.1.1.0"},
            {"name": "upsSecondsOnBattery", "value": null, "kind": "gauge", "unit": "s",
             "oid": "1.3.6.1.2.1.33.1.2.2.0"}
          ]
        }
    """,
    "alarm_snapshot": """
        {
          "type": "alarm_snapshot", "v": 1, "ts": 1767225600.25,
          "source": "centaure-snmp@node1", "host": "ups1.dc1.example.net",
          "alarms": [
            {"key": "1.3.6.1.2.1.33.1.6.3.1", "name": "upsAlarmBatteryBad",
             "severity": "major", "message": "Battery bad", "since": 1767225540.25},
            {"key": "7", "name": "upsAlarmOnBypass", "severity": "warning",
             "message": "On bypass"}
          ]
        }
    """,
    "event": """
        {
          "type": "event", "v": 1, "ts": 1767225600.25, "source": "centaure-traps@node1",
          "host": "sw1.example.net", "address": "192.0.2.20", "snmp_version": "v2c",
          "trap_oid": "1.3.6.1.6.3.1.1.5.3", "name": "linkDown", "severity": "major",
          "varbinds": [
            {"oid": "1.3.6.1.2.1.2.2.1.1.12", "name": "ifIndex", "type": "Integer32",
             "value": 12},
            {"oid": "1.3.6.1.2.1.2.2.1.2.12", "name": null, "type": "OctetString",
             "value": "ge-0/0/12"}
          ],
          "unknown_sender": true
        }
    """,
    "threshold": """
        {
          "type": "threshold", "v": 1, "ts": 1767225600.25,
          "source": "centaure-alerter@node1", "host": "ups1.dc1.example.net",
          "rule": "battery-low", "state": "breached",
          "values": [
            {"metric": "upsBatteryCharge", "index": "", "value": 18.0},
            {"metric": "ifInOctets", "index": "3", "value": 5}
          ]
        }
    """,
    "alarm": """
        {
          "type": "alarm", "v": 1, "ts": 1767225600.25,
          "source": "centaure-correlator@node1", "host": "sw1.example.net",
          "ref": 18446744073709551615, "name": "linkDown", "severity": "major",
          "state": "updated", "message": "ge-0/0/12 down",
          "first_seen": 1767225300.25, "last_seen": 1767225600.25, "cleared_at": null,
          "count": 3, "origin": "trap", "acked_by": "alice", "flapping": true,
          "cause_ref": 0
        }
    """,
    "alarm_command": """
        {
          "type": "alarm_command", "v": 1, "ts": 1767225600.25,
          "source": "centaure-cli@admin1", "ref": 42, "action": "note", "user": "alice",
          "note": "vendor ticket 1234", "host": "sw1.example.net"
        }
    """,
    "notification": """
        {
          "type": "notification", "v": 1, "ts": 1767225600.25,
          "source": "centaure-alerter@node1", "ref": 42, "rule": "battery-low",
          "channel": "webhook", "recipient": "https://hooks.example.net/noc",
          "state": "failed", "attempts": 3, "reason": "HTTP 503",
          "host": "ups1.dc1.example.net"
        }
    """,
    "status": """
        {
          "type": "status", "v": 1, "ts": 1767225600.25, "source": "centaure-db@node2",
          "connector": "centaure-db", "node": "node2", "pid": 4242, "version": "0.1.0",
          "state": "degraded", "uptime": 3600.5,
          "counters": {"messages_in": 1200, "buffered": 17, "errors": 0,
                       "poll_latency_p95": 0.42}
        }
    """,
}


@pytest.mark.parametrize("msg_type", m.MESSAGE_TYPES)
def test_hand_written_body_decodes_to_the_expected_struct(msg_type: str) -> None:
    assert decode(FIXTURES[msg_type].encode("utf-8"), expected_type=msg_type) == samples()[msg_type]


def test_optional_fields_may_be_omitted() -> None:
    cmd = decode(b'{"type":"alarm_command","v":1,"ts":1,"source":"cli@h","ref":7,'
                 b'"action":"ack","user":"bob"}')
    assert cmd == AlarmCommand(ts=1.0, source="cli@h", ref=7, action="ack", user="bob")
    assert cmd.note is None and cmd.host is None


def test_unknown_fields_are_ignored() -> None:
    # Tolerant reader: a v1 producer may add an optional field.
    body = json.loads(encode(samples()["status"]))
    body["zone"] = "dc1"
    assert decode(json.dumps(body).encode()) == samples()["status"]


def test_ref_bounds() -> None:
    def cmd(ref: int) -> bytes:
        return (b'{"type":"alarm_command","v":1,"ts":1,"source":"cli@h","ref":%d,'
                b'"action":"ack","user":"bob"}' % ref)

    assert decode(cmd(0)).ref == 0
    assert decode(cmd(2**64 - 1)).ref == 2**64 - 1
    with pytest.raises(MessageError) as err:
        decode(cmd(2**64))
    assert str(err.value) == ("invalid 'alarm_command' message: `ref` must be an unsigned "
                              "64-bit integer, got 18446744073709551616")
    with pytest.raises(MessageError) as err:
        decode(cmd(-1))
    assert str(err.value) == "invalid 'alarm_command' message: Expected `int` >= 0 - at `$.ref`"


# --- rejections -------------------------------------------------------------------


def _perf(**changes: object) -> bytes:
    body = json.loads(FIXTURES["perf"])
    for key, value in changes.items():
        if value is _DROP:
            del body[key]
        else:
            body[key] = value
    return json.dumps(body).encode()


_DROP = object()

REJECTIONS = [
    pytest.param(b"", "empty message body", id="empty"),
    pytest.param(b'{"type": "perf", "v": 1,', "invalid JSON: Input data was truncated",
                 id="truncated"),
    pytest.param(b"{'type': 'perf'}",
                 "invalid JSON: JSON is malformed: object keys must be strings (byte 1)",
                 id="not-json"),
    pytest.param(b"\xff\xfe", "invalid JSON: JSON is malformed: invalid character (byte 0)",
                 id="not-utf8"),
    pytest.param(b'{"type": "perf", "v": 1, "ts": 1} {}',
                 "invalid JSON: JSON is malformed: trailing characters (byte 35)",
                 id="trailing"),
    pytest.param(b'[{"type": "perf"}]', "message body is not a JSON object (got array)",
                 id="array"),
    pytest.param(b"null", "message body is not a JSON object (got null)", id="null"),
    pytest.param(b'"perf"', "message body is not a JSON object (got string)", id="string"),
    pytest.param(b'{"v": 1, "ts": 1, "source": "a@b"}', "message has no `type` field",
                 id="no-type"),
    pytest.param(b'{"type": 3, "v": 1}', "message `type` must be a string, got number",
                 id="type-not-str"),
    pytest.param(b'{"type": "perfs", "v": 1}',
                 "unknown message type 'perfs' (known: perf, alarm_snapshot, event, "
                 "threshold, alarm, alarm_command, notification, status)",
                 id="unknown-type"),
    pytest.param(_perf(v=_DROP), "message of type 'perf' has no `v` (version) field",
                 id="no-v"),
    # v is read before the schema: a v2 body whose fields changed gets the version
    # reason, not "missing required field `host`".
    pytest.param(_perf(v=2, host=_DROP, target={"name": "ups1"}),
                 "unsupported message version v=2 for type 'perf' (this build reads v=1)",
                 id="v2-new-fields"),
    pytest.param(_perf(v=0), "unsupported message version v=0 for type 'perf' "
                 "(this build reads v=1)", id="v0"),
    pytest.param(_perf(v=True), "unsupported message version v=true for type 'perf' "
                 "(this build reads v=1)", id="v-true"),
    pytest.param(_perf(v=1.0), "unsupported message version v=1.0 for type 'perf' "
                 "(this build reads v=1)", id="v-float"),
    pytest.param(_perf(v="1"), "unsupported message version v=\"1\" for type 'perf' "
                 "(this build reads v=1)", id="v-str"),
    pytest.param(_perf(ts=_DROP), "message of type 'perf' has no `ts` field", id="no-ts"),
    pytest.param(_perf(host=5),
                 "invalid 'perf' message: Expected `str`, got `int` - at `$.host`",
                 id="host-int"),
    pytest.param(_perf(host=""),
                 "invalid 'perf' message: Expected `str` of length >= 1 - at `$.host`",
                 id="host-empty"),
    pytest.param(_perf(host="ups 1"),
                 "invalid 'perf' message: Expected `str` matching regex '^\\\\S+$' - at `$.host`",
                 id="host-blank"),
    pytest.param(_perf(host="h" * 241),
                 "invalid 'perf' message: Expected `str` of length <= 240 - at `$.host`",
                 id="host-too-long"),
    pytest.param(_perf(host=_DROP),
                 "invalid 'perf' message: Object missing required field `host`",
                 id="host-missing"),
    pytest.param(_perf(source="centaure-snmp"),
                 "invalid 'perf' message: Expected `str` matching regex "
                 "'^[^@\\\\s]+@[^@\\\\s]+$' - at `$.source`", id="source-no-node"),
    pytest.param(_perf(ts=-1.0),
                 "invalid 'perf' message: Expected `float` >= 0.0 - at `$.ts`", id="ts-negative"),
    pytest.param(_perf(ts=1767225600250),  # milliseconds, not seconds
                 "invalid 'perf' message: Expected `float` <= 32503680000.0 - at `$.ts`",
                 id="ts-millis"),
    pytest.param(_perf(ts="2026-01-01T00:00:00Z"),
                 "invalid 'perf' message: Expected `float`, got `str` - at `$.ts`",
                 id="ts-str"),
    pytest.param(b'{"type": "perf", "v": 1, "ts": 1e400}',
                 "invalid message: Number out of range - at `$.ts`", id="ts-inf"),
    pytest.param(b'{"type":"perf","v":1,"ts":1e400}',
                 "invalid 'perf' message: Number out of range - at `$.ts`", id="ts-inf-compact"),
    pytest.param(_perf(metrics=[{"name": "x", "index": "", "value": 1, "kind": "rate",
                                 "unit": None, "oid": "1.3"}]),
                 "invalid 'perf' message: Invalid enum value 'rate' - at `$.metrics[0].kind`",
                 id="metric-kind"),
    pytest.param(_perf(metrics=[{"name": "x", "value": [1], "kind": "gauge", "oid": "1.3"}]),
                 "invalid 'perf' message: Expected `int | float | str | null`, got `array` "
                 "- at `$.metrics[0].value`", id="metric-value"),
    pytest.param(b'{"type":"alarm_command","v":1,"ts":1,"source":"cli@h","ref":1,'
                 b'"action":"note","user":"bob"}',
                 "invalid 'alarm_command' message: action 'note' needs a non-empty `note`",
                 id="note-without-text"),
    pytest.param(b'{"type":"event","v":1,"ts":1,"source":"t@h","host":"h","address":"a",'
                 b'"snmp_version":"2c","trap_oid":"1.3","name":"x","severity":"major",'
                 b'"varbinds":[]}',
                 "invalid 'event' message: Invalid enum value '2c' - at `$.snmp_version`",
                 id="snmp-version"),
    pytest.param(b'{"type":"alarm_snapshot","v":1,"ts":1,"source":"t@h","host":"h",'
                 b'"alarms":[{"key":"k","name":"n","severity":"cleared","message":""}]}',
                 "invalid 'alarm_snapshot' message: Invalid enum value 'cleared' - at "
                 "`$.alarms[0].severity`", id="severity"),
]


@pytest.mark.parametrize(("body", "reason"), REJECTIONS)
def test_rejection_reasons(body: bytes, reason: str) -> None:
    with pytest.raises(MessageError) as err:
        decode(body)
    assert str(err.value) == reason
    assert isinstance(err.value, ValueError)


# Bodies written by encode() (compact, common fields first) skip the envelope
# pass; they must get the very same reasons as any other body.
COMPACT_REJECTIONS = [
    pytest.param(b'{"type":"perf","v":2,"ts":1,"source":"a@b","target":{}}',
                 "unsupported message version v=2 for type 'perf' (this build reads v=1)",
                 id="v2"),
    pytest.param(b'{"type":"perf","v":10,"ts":1}',
                 "unsupported message version v=10 for type 'perf' (this build reads v=1)",
                 id="v10"),
    pytest.param(b'{"type":"perf","v":-1,"ts":1}',
                 "unsupported message version v=-1 for type 'perf' (this build reads v=1)",
                 id="v-negative"),
    pytest.param(b'{"type":"perfs","v":1,"ts":1}',
                 "unknown message type 'perfs' (known: perf, alarm_snapshot, event, "
                 "threshold, alarm, alarm_command, notification, status)", id="unknown-type"),
    pytest.param(b'{"type":"perf","v":1,"ts":1,"source":"a@b"',
                 "invalid JSON: Input data was truncated", id="truncated"),
    pytest.param(b'{"type":"perf","v":1,"ts":1,"source":"a@b"}',
                 "invalid 'perf' message: Object missing required field `host`",
                 id="missing-field"),
    pytest.param(encode(samples()["perf"]) + b" x",
                 f"invalid JSON: JSON is malformed: trailing characters "
                 f"(byte {len(encode(samples()['perf'])) + 2})", id="trailing"),
    pytest.param(b'{"type":"perf","v":1,"ts":null,"source":"a@b"}',
                 "invalid 'perf' message: Expected `float`, got `null` - at `$.ts`",
                 id="ts-null"),
]


@pytest.mark.parametrize(("body", "reason"), COMPACT_REJECTIONS)
def test_rejection_reasons_of_compact_bodies(body: bytes, reason: str) -> None:
    with pytest.raises(MessageError) as err:
        decode(body)
    assert str(err.value) == reason
    # The envelope path (a str body, or pretty-printed) says the same.
    with pytest.raises(MessageError) as err:
        decode(body.decode())
    assert str(err.value) == reason


def test_encoded_message_of_a_newer_version_is_refused() -> None:
    newer = msgspec.structs.replace(samples()["alarm"], v=2)  # type: ignore[type-var]
    with pytest.raises(MessageError) as err:
        decode(encode(newer))
    assert str(err.value) == ("unsupported message version v=2 for type 'alarm' "
                              "(this build reads v=1)")


def test_expected_type_mismatch() -> None:
    with pytest.raises(MessageError) as err:
        decode(encode(samples()["alarm"]), expected_type="perf")
    assert str(err.value) == "expected a 'perf' message, got 'alarm'"


def test_expected_type_is_checked_before_the_fields() -> None:
    # An alarm on the perf queue is "wrong type", even when its fields are bad too.
    body = json.loads(encode(samples()["alarm"]))
    body["host"] = ""
    with pytest.raises(MessageError, match="^expected a 'perf' message, got 'alarm'$"):
        decode(json.dumps(body).encode(), expected_type="perf")


def test_unknown_expected_type_is_a_caller_bug_not_a_bad_message() -> None:
    with pytest.raises(ValueError) as err:
        decode(encode(samples()["perf"]), expected_type="perfs")
    assert not isinstance(err.value, MessageError)
    assert str(err.value) == "unknown expected_type 'perfs'"


def test_messages_are_immutable() -> None:
    with pytest.raises(AttributeError):
        samples()["perf"].host = "other"  # type: ignore[misc]


# --- routing ----------------------------------------------------------------------


@pytest.mark.parametrize(("msg_type", "key"), [
    ("perf", "perf.ups1.dc1.example.net"),
    ("alarm_snapshot", "alarm_snapshot.ups1.dc1.example.net"),
    ("event", "event.sw1.example.net"),
    ("threshold", "threshold.ups1.dc1.example.net"),
    ("alarm", "alarm.sw1.example.net"),
    ("alarm_command", "alarm_command.sw1.example.net"),
    ("notification", "notification.ups1.dc1.example.net"),
    ("status", "status.node2"),
])
def test_routing_key(msg_type: str, key: str) -> None:
    assert routing_key(samples()[msg_type]) == key


def test_routing_key_without_host() -> None:
    cmd = AlarmCommand(source="cli@h", ref=1, action="ack", user="bob")
    note = Notification(source="alerter@h", channel="email", recipient="noc@example.net",
                        state="suppressed", attempts=0)
    assert routing_key(cmd) == "alarm_command._"
    assert routing_key(note) == "notification._"


def test_routing_key_fits_amqp_shortstr() -> None:
    longest = AlarmSnapshot(source="s@n", host="h" * 240, alarms=[])
    assert len(routing_key(longest)) == 255
    with pytest.raises(MessageError, match="routing key longer than 255 bytes"):
        routing_key(AlarmSnapshot(source="s@n", host="é" * 200, alarms=[]))


def test_exchange_name() -> None:
    assert exchange_name("centaure", "perf") == "centaure.perf"
    assert exchange_name("test1.centaure", "alarm_command") == "test1.centaure.alarm_command"
    assert exchange_name("centaure", m.DEAD_LETTER) == "centaure.dead"
    with pytest.raises(ValueError, match="unknown message type 'perfs'"):
        exchange_name("centaure", "perfs")


# --- property-based ---------------------------------------------------------------

# Plain alphabets and maps rather than from_regex: much faster to generate.
_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=30)
_host = st.text("abcdefghijklmnopqrstuvwxyz0123456789.-", min_size=1, max_size=63)
_arcs = st.lists(st.integers(min_value=0, max_value=2**32 - 1), min_size=1, max_size=12)
_scalar = st.one_of(
    st.none(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    _text,
)
_metric = st.builds(
    Metric,
    name=st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=30),
    index=st.one_of(st.just(""), _arcs.map(lambda a: ".".join(map(str, a)))),
    value=_scalar,
    kind=st.sampled_from(["gauge", "counter", "text"]),
    unit=st.none() | _text,
    oid=_arcs.map(lambda a: "1.3." + ".".join(map(str, a))),
)
_perf_st = st.builds(
    Perf,
    ts=st.floats(min_value=0.0, max_value=32503680000.0),
    source=st.builds("{}@{}".format, st.text("abcdefghijklmnopqrstuvwxyz-", min_size=1),
                     _host),
    host=_host,
    address=_text,
    device_type=_text,
    metrics=st.lists(_metric, max_size=20),
)


@settings(max_examples=200, deadline=None)
@given(_perf_st)
def test_perf_round_trip_property(msg: Perf) -> None:
    body = encode(msg)
    decoded = decode(body, expected_type="perf")
    assert decoded == msg
    # Same JSON types on both sides: 1.0 stays a float, 1 stays an int.
    assert [type(x.value) for x in decoded.metrics] == [type(x.value) for x in msg.metrics]
    assert encode(decoded) == body
