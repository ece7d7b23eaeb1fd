"""The messages on the bus: one msgspec Struct per type, and their JSON codec.

Every body is a JSON object carrying ``type`` (the tag), ``v`` (the schema
version, 1), ``ts`` (UNIX seconds) and ``source`` (``connector@node``), plus the
fields of its type as docs/design.md "Messages on the bus" lists them.

Producers build structs and call :func:`encode`; consumers call :func:`decode`,
which is the one place where a body from the wire is checked. Struct
constructors do *not* validate (msgspec never does on ``__init__``): a producer
that builds a bad value learns it from the consumer's dead-letter queue, so
tests of producers should round-trip through ``decode(encode(msg))``.

Decoding rules, chosen for a bus where connectors are upgraded one by one:

* ``type``, ``v`` and ``ts`` must be present on the wire, although the
  constructors default ``v`` and ``ts`` (a consumer must not stamp its own clock
  on a message that lost its timestamp).
* ``v`` is checked before the body is validated, so that a message of a newer
  schema is reported as such rather than as a confusing field error.
* Unknown fields are ignored (tolerant reader): a v1 producer may add an
  optional field without breaking older consumers. A breaking change bumps ``v``.
* Fields shown with ``?`` in docs/design.md default to ``None`` and may be omitted.
"""

from __future__ import annotations

import math
import re
import time
from typing import Annotated, Any, Final, Literal, Union

import msgspec
from msgspec import UNSET, Meta, Struct, field

from connector.partitions import partition_of

__all__ = [
    "SCHEMA_VERSION",
    "SEVERITIES",
    "SEVERITY_RANK",
    "MESSAGE_TYPES",
    "MESSAGE_CLASSES",
    "DEAD_LETTER",
    "Severity",
    "MessageError",
    "host_routing_key",
    "MessageBase",
    "Metric",
    "SnapshotAlarm",
    "Varbind",
    "ThresholdValue",
    "Perf",
    "AlarmSnapshot",
    "Event",
    "Threshold",
    "Alarm",
    "AlarmCommand",
    "Notification",
    "Status",
    "Message",
    "encode",
    "decode",
    "routing_key",
    "exchange_name",
]

#: The only schema version this build reads and writes.
SCHEMA_VERSION: Final = 1

#: Severities from the most to the least severe. There is deliberately no
#: "ok"/"cleared"/"normal": the end of a problem is a *state*
#: (``alarm.state == "cleared"``, ``threshold.state == "recovered"``), not a
#: severity, which keeps this set totally ordered. X.733 "indeterminate" and
#: anything a device reports that cannot be mapped become "unknown".
SEVERITIES: Final[tuple[str, ...]] = ("critical", "major", "minor", "warning", "info", "unknown")
Severity = Literal["critical", "major", "minor", "warning", "info", "unknown"]
#: Rank for sorting and comparing severities: 0 is the most severe.
SEVERITY_RANK: Final[dict[str, int]] = {name: rank for rank, name in enumerate(SEVERITIES)}

#: Name of the dead-letter "type", for ``exchange_name(prefix, DEAD_LETTER)``.
DEAD_LETTER: Final = "dead"

# AMQP routing keys are short strings (at most 255 bytes). The longest
# ``<type>.`` prefix is "alarm_snapshot." (15 bytes), which leaves 240 for the
# host. DNS names are at most 253 characters, so a pathological FQDN is refused
# at the edge instead of failing later inside the publisher.
_MAX_ROUTING_KEY: Final = 255
_MAX_HOST: Final = 240
# Upper bound for timestamps: catches milliseconds sent as seconds, and with
# ge=0 rejects NaN and inf (msgspec.convert of a Python float can carry them;
# JSON cannot, msgspec refuses 1e400 as out of range).
_MAX_TS: Final = 32503680000.0  # 3000-01-01T00:00:00Z

Timestamp = Annotated[float, Meta(ge=0.0, le=_MAX_TS, description="UNIX seconds")]
# Host and node names: non-empty, no whitespace (nobody can bind a queue or
# grep a log on a name with blanks), short enough for a routing key. Dots are
# allowed: hosts are FQDNs, see routing_key().
HostName = Annotated[str, Meta(min_length=1, max_length=_MAX_HOST, pattern=r"^\S+$")]
Source = Annotated[str, Meta(pattern=r"^[^@\s]+@[^@\s]+$", description="connector@node")]
NonEmpty = Annotated[str, Meta(min_length=1)]
# Unsigned 64-bit. msgspec (0.22) refuses `le` bounds beyond int64 and decodes
# JSON integers of any size, so the upper bound is checked in __post_init__.
AlarmRef = Annotated[int, Meta(ge=0, description="unsigned 64-bit alarm id")]
_MAX_REF: Final = 2**64 - 1
Count = Annotated[int, Meta(ge=0)]
Seconds = Annotated[float, Meta(ge=0.0)]
Scalar = Union[float, int, str, None]


class MessageError(ValueError):
    """A body from the bus that this build cannot accept; ``str()`` says why."""


def _check_ref(name: str, value: int | None) -> None:
    # __post_init__ also runs on decode, where msgspec reports a ValueError
    # raised here as a ValidationError (without a path, hence the field name).
    if value is not None and value > _MAX_REF:
        raise ValueError(f"`{name}` must be an unsigned 64-bit integer, got {value}")


# --- items nested in messages -------------------------------------------------
# gc=False: these hold only scalars, so they can never be part of a reference
# cycle; untracking them spares the garbage collector the 50+ objects a perf
# message decodes into.


class Metric(Struct, kw_only=True, frozen=True, gc=False):
    """One polled value of a ``perf`` message."""

    name: NonEmpty
    #: Instance index of a table column ("" for scalars), e.g. "3" or "1.4".
    index: str = ""
    value: Scalar
    kind: Literal["gauge", "counter", "text"]
    unit: str | None = None
    oid: str


class SnapshotAlarm(Struct, kw_only=True, frozen=True, gc=False):
    """One row of a device's active-alarm table, as polled."""

    key: NonEmpty
    name: str
    severity: Severity
    message: str
    since: Timestamp | None = None


class Varbind(Struct, kw_only=True, frozen=True, gc=False):
    """One variable binding of a trap or inform (never carries secrets)."""

    oid: NonEmpty
    name: str | None = None
    #: SNMP type name as the receiver reports it, e.g. "OctetString".
    type: NonEmpty
    value: Scalar


class ThresholdValue(Struct, kw_only=True, frozen=True, gc=False):
    """A metric value that a threshold rule evaluated."""

    metric: NonEmpty
    index: str = ""
    value: Scalar


class Ownership(Struct, kw_only=True, frozen=True, gc=False):
    """The partitions of one role a node owns (``[bus] partitions``, several nodes)."""

    partitions: Annotated[int, Meta(ge=1)]
    owned: list[Annotated[int, Meta(ge=0)]]
    #: Nodes of that role the broker counted last (consumers of a token queue).
    members: Count = 0


# --- messages -----------------------------------------------------------------


class MessageBase(Struct, tag_field="type", kw_only=True, frozen=True):
    """Fields common to every message; the ``type`` tag is added by msgspec."""

    v: Literal[1] = SCHEMA_VERSION
    ts: Timestamp = field(default_factory=time.time)
    source: Source

    @property
    def msg_type(self) -> str:
        """The ``type`` tag of this message, e.g. ``"perf"``."""
        return self.__struct_config__.tag  # type: ignore[return-value]


class Perf(MessageBase, tag="perf", kw_only=True):
    """The poller's values for one device poll."""

    host: HostName
    address: str
    device_type: str
    metrics: list[Metric]


class AlarmSnapshot(MessageBase, tag="alarm_snapshot", kw_only=True):
    """A device's whole active-alarm table, as polled (an empty list is meaningful)."""

    host: HostName
    alarms: list[SnapshotAlarm]


class Event(MessageBase, tag="event", kw_only=True):
    """A trap or inform, decoded by the trap receiver."""

    host: HostName
    address: str
    snmp_version: Literal["v1", "v2c", "v3"]
    trap_oid: NonEmpty
    name: str
    severity: Severity
    varbinds: list[Varbind]
    #: True when the sender is not a configured device (host then names it by address).
    unknown_sender: bool = False
    #: The definition's message, with varbind values filled in.
    message: str = ""
    #: What the trap means for an alarm: raise it, clear it, or nothing.
    action: Literal["raise", "clear", "none"] = "none"
    #: The alarm raised or cleared (for a clear: the alarm it clears).
    alarm: str | None = None
    #: The values of the identifying varbinds, joined: with host and alarm,
    #: the correlator's reduction key.
    key: str = ""


class Threshold(MessageBase, tag="threshold", kw_only=True):
    """A threshold rule that started or stopped being breached for a host."""

    host: HostName
    rule: NonEmpty
    state: Literal["breached", "recovered"]
    values: list[ThresholdValue]
    #: The rule's severity and text, for the alarm it raises (optional: a
    #: producer that sends neither gets a ``warning`` named after the rule).
    severity: Severity | None = None
    message: str = ""


class Alarm(MessageBase, tag="alarm", kw_only=True):
    """The correlator's view of one alarm, sent on each change."""

    host: HostName
    #: Stable per host + alarm identity.
    ref: AlarmRef
    name: str
    severity: Severity
    state: Literal["raised", "updated", "cleared"]
    message: str
    first_seen: Timestamp
    last_seen: Timestamp
    cleared_at: Timestamp | None = None
    count: Annotated[int, Meta(ge=1)]
    origin: Literal["trap", "poll", "threshold"]
    acked_by: str | None = None
    flapping: bool = False
    #: The parent alarm whose failure masks this one.
    cause_ref: AlarmRef | None = None

    def __post_init__(self) -> None:
        _check_ref("ref", self.ref)
        _check_ref("cause_ref", self.cause_ref)


class AlarmCommand(MessageBase, tag="alarm_command", kw_only=True):
    """An operator's action on an alarm."""

    ref: AlarmRef
    action: Literal["ack", "unack", "clear", "note"]
    user: NonEmpty
    note: str | None = None
    host: HostName | None = None

    def __post_init__(self) -> None:
        _check_ref("ref", self.ref)
        if self.action == "note" and not self.note:
            raise ValueError("action 'note' needs a non-empty `note`")


class Notification(MessageBase, tag="notification", kw_only=True):
    """Audit record of one notification attempt by the alerter."""

    ref: AlarmRef | None = None
    rule: str | None = None
    channel: Literal["email", "webhook", "command"]
    recipient: NonEmpty
    state: Literal["sent", "failed", "suppressed"]
    attempts: Count
    reason: str | None = None
    host: HostName | None = None

    def __post_init__(self) -> None:
        _check_ref("ref", self.ref)


class Status(MessageBase, tag="status", kw_only=True):
    """A connector's heartbeat."""

    connector: NonEmpty
    node: HostName
    pid: Annotated[int, Meta(ge=0)]
    version: str
    state: Literal["ok", "degraded", "stopping"]
    uptime: Seconds
    counters: dict[str, float]
    #: ``host:port`` of the broker the connector's process is connected to
    #: (absent: the embedded bus, disconnected, or an older sender).
    broker: str | None = None
    #: The broker's cluster name (its ``cluster_name`` server property).
    broker_cluster: str | None = None
    #: Role -> the partitions its node owns (``[bus] partitions``; absent: one node owns all).
    ownership: dict[str, Ownership] | None = None


Message = Union[Perf, AlarmSnapshot, Event, Threshold, Alarm, AlarmCommand, Notification, Status]

#: Message class by type name, in the order of docs/design.md.
MESSAGE_CLASSES: Final[dict[str, type[MessageBase]]] = {
    cls.__struct_config__.tag: cls  # type: ignore[misc]
    for cls in (Perf, AlarmSnapshot, Event, Threshold, Alarm, AlarmCommand, Notification, Status)
}
MESSAGE_TYPES: Final[tuple[str, ...]] = tuple(MESSAGE_CLASSES)

# --- codec ----------------------------------------------------------------------

# Encoders and decoders are built once: building one compiles the type's schema.
_ENCODER: Final = msgspec.json.Encoder()
_DECODERS: Final[dict[str, msgspec.json.Decoder[Any]]] = {
    name: msgspec.json.Decoder(cls) for name, cls in MESSAGE_CLASSES.items()
}


class _Envelope(Struct):
    """Just what decode() must know before choosing a schema; the rest is skipped."""

    type: Any = UNSET
    v: Any = UNSET
    ts: Any = UNSET


_ENVELOPE_DECODER: Final = msgspec.json.Decoder(_Envelope)

# encode() always writes `{"type":"...","v":N,"ts":` first. Reading type and v
# from that prefix spares the envelope pass (a full scan of the body, about a
# quarter of the decode time of a 50-metric perf) for every body our own
# connectors send; anything else (another writer, pretty-printed JSON) takes
# the envelope, with the same outcome.
_OWN_PREFIX: Final = re.compile(rb'\{"type":"([a-z_]{1,32})","v":(-?[0-9]{1,20}),"ts":')

_JSON_TYPE_NAMES: Final[dict[type, str]] = {
    bool: "boolean", int: "number", float: "number", str: "string",
    list: "array", dict: "object", type(None): "null",
}


def encode(msg: MessageBase) -> bytes:
    """Encode a message as compact UTF-8 JSON (``type`` first). Does not validate."""
    return _ENCODER.encode(msg)


def decode(
    body: bytes | bytearray | memoryview | str, expected_type: str | None = None
) -> Message:
    """
    Decode and validate one body taken from the bus.

    ``expected_type`` (a name of MESSAGE_TYPES) makes a message of another type
    an error, for consumers bound to one exchange. Raises MessageError with a
    reason meant for the dead-letter queue and the log.
    """
    if expected_type is not None and expected_type not in _DECODERS:
        # A bug of the caller, not of the message: must not dead-letter it.
        raise ValueError(f"unknown expected_type {expected_type!r}")

    if not body:
        raise MessageError("empty message body")
    own = None if isinstance(body, str) else _OWN_PREFIX.match(body)
    if own is not None and own[2] == b"1":
        msg_type = own[1].decode("ascii")
        decoder = _DECODERS.get(msg_type)
        if decoder is None:
            raise MessageError(_unknown_type(msg_type))
    else:
        msg_type, decoder = _check_envelope(body)
    if expected_type is not None and msg_type != expected_type:
        raise MessageError(f"expected a {expected_type!r} message, got {msg_type!r}")

    try:
        return decoder.decode(body)
    except msgspec.ValidationError as exc:  # first: it subclasses DecodeError
        raise MessageError(f"invalid {msg_type!r} message: {exc}") from None
    except msgspec.DecodeError as exc:  # e.g. a good prefix, then garbage
        raise MessageError(f"invalid JSON: {exc}") from None


def _check_envelope(
    body: bytes | bytearray | memoryview | str,
) -> tuple[str, msgspec.json.Decoder[Any]]:
    """Read type, v and ts alone, and say clearly what is wrong with them."""
    # A pass over a three-field envelope before the schema: it gives clear
    # reasons for the faults that a schema error would hide (a newer version,
    # a missing field that the constructors default).
    try:
        env = _ENVELOPE_DECODER.decode(body)
    except msgspec.ValidationError as exc:  # first: it subclasses DecodeError
        raise MessageError(_envelope_fault(body, exc)) from None
    except msgspec.DecodeError as exc:
        raise MessageError(f"invalid JSON: {exc}") from None

    msg_type = env.type
    if msg_type is UNSET:
        raise MessageError("message has no `type` field")
    if not isinstance(msg_type, str):
        raise MessageError(f"message `type` must be a string, got {_json_type(msg_type)}")
    decoder = _DECODERS.get(msg_type)
    if decoder is None:
        raise MessageError(_unknown_type(msg_type))
    version = env.v
    if version is UNSET:
        raise MessageError(f"message of type {msg_type!r} has no `v` (version) field")
    # type() and not isinstance(): JSON true would pass as 1.
    if type(version) is not int or version != SCHEMA_VERSION:
        raise MessageError(
            f"unsupported message version v={_json_repr(version)} for type "
            f"{msg_type!r} (this build reads v={SCHEMA_VERSION})"
        )
    if env.ts is UNSET:
        raise MessageError(f"message of type {msg_type!r} has no `ts` field")
    return msg_type, decoder


def _unknown_type(msg_type: str) -> str:
    return f"unknown message type {msg_type!r} (known: {', '.join(MESSAGE_TYPES)})"


def routing_key(msg: MessageBase, partitions: int = 0) -> str:
    """
    The topic routing key ``<type>.<host>`` of a message.

    ``status`` is routed by its ``node``; ``alarm_command`` and ``notification``
    without a host use ``<type>._``. Host names are FQDNs, so the key has more
    than two dot-separated words: bind with ``perf.#`` (all hosts) or
    ``perf.router1.example.net`` (one host), not with ``perf.*``.

    With ``partitions`` (``[bus] partitions``, several nodes), a message with
    a host carries its host's partition as second word,
    ``<type>.<partition>.<host>`` (``perf.17.router1.example.net``), so that
    each partition's queue binds ``perf.17.#``.
    """
    if isinstance(msg, Status):
        word = msg.node
        partitions = 0
    else:
        # `is None`, not `or`: an (invalid) empty host must not pass as "_".
        word = msg.host  # type: ignore[attr-defined]
        if word is None:
            word, partitions = "_", 0
    return host_routing_key(msg.msg_type, word, partitions)


def host_routing_key(msg_type: str, host: str, partitions: int = 0) -> str:
    """The routing key of a ``msg_type`` message about ``host`` (see :func:`routing_key`)."""
    if partitions:
        key = f"{msg_type}.{partition_of(host, partitions)}.{host}"
    else:
        key = f"{msg_type}.{host}"
    if len(key.encode("utf-8")) > _MAX_ROUTING_KEY:
        raise MessageError(f"routing key longer than {_MAX_ROUTING_KEY} bytes: {key[:60]!r}...")
    return key


def exchange_name(prefix: str, msg_type: str) -> str:
    """The topic exchange of a message type: ``"<prefix>.<type>"``, e.g. ``centaure.perf``."""
    if msg_type not in MESSAGE_CLASSES and msg_type != DEAD_LETTER:
        raise ValueError(f"unknown message type {msg_type!r}")
    if not prefix:
        raise ValueError("empty exchange prefix")
    return f"{prefix}.{msg_type}"


def _envelope_fault(body: bytes | bytearray | memoryview | str, exc: msgspec.ValidationError) -> str:
    """Why well-formed JSON failed the envelope: not an object, or a number out of range."""
    # Error path only, so a second, schema-less parse is affordable; it names
    # what the body is without relying on the wording of msgspec's messages.
    try:
        value = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return f"invalid message: {exc}"
    if not isinstance(value, dict):
        return f"message body is not a JSON object (got {_json_type(value)})"
    return f"invalid message: {exc}"


def _json_type(value: object) -> str:
    return _JSON_TYPE_NAMES.get(type(value), type(value).__name__)


def _json_repr(value: object) -> str:
    """A value as it looked in the JSON body, for error messages."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return msgspec.json.encode(value).decode("utf-8", "replace")
