"""Settings of the SQL writer: the ``[db]`` section.

The database itself is ``[database] url`` (core, shared with other tools);
``[db]`` says how ``centaure-db`` writes to it. Imported by every connector
through :func:`connector.settings.discover_sections`: keep it light (no
SQLAlchemy here).
"""

from __future__ import annotations

import dataclasses
import re
from typing import NamedTuple

from connector.settings import (
    TABLE_PREFIX,
    Choice,
    Duration,
    Int,
    SQL_IDENTIFIER,
    ParseContext,
    Parser,
    StrList,
    register_section,
    setting,
)


__all__ = ["COLUMN_SOURCES", "COLUMN_TYPES", "KEY_SOURCES", "ColumnSpec",
           "DbSettings", "TableStruct", "TableTemplate", "parse_column", "parse_struct",
           "parse_template"]

# --- the per_device layout's table_template and table_struct ------------------------
# Parsed here, with no SQLAlchemy, so that a bad setting stops start-up with one
# clear line; connector_db.per_device maps the checked specs to SQLAlchemy.

_IDENT_TEXT = "letters, digits and '_', a letter or '_' first, at most 64 characters"

#: What a column may hold, from the perf message and its metric.
COLUMN_SOURCES: dict[str, str] = {
    "ts": "the poll's time in whole UNIX seconds",
    "ts_ms": "the poll's time in UNIX milliseconds",
    "index": "the metric's instance index ('' for scalars; 0 in a numeric column)",
    "value": "the value: text in a text column, a number in a numeric one",
    "value_num": "the value if it is a number, else NULL",
    "value_text": "the value if it is text, else NULL",
    "unit": "the metric's unit",
    "kind": "gauge, counter or text",
    "oid": "the metric's OID",
    "host": "the device's host name",
    "address": "the device's address",
    "device": "the device's inventory id (its host name when it has none)",
    "metric": "the metric's name",
}
#: Sources that key a row: tables the store creates get a unique key over them.
KEY_SOURCES = ("ts", "ts_ms", "index")

#: Column types: name -> (family, lowest, highest) for numbers.
COLUMN_TYPES: dict[str, tuple[str, int | None, int | None]] = {
    "smallint": ("int", -(2**15), 2**15 - 1),
    "int": ("int", -(2**31), 2**31 - 1),
    "bigint": ("int", -(2**63), 2**63 - 1),
    "double": ("float", None, None),
    "text": ("text", None, None),
    # varchar(N) is parsed apart: 1 <= N <= VARCHAR_MAX.
}
VARCHAR_MAX = 1024
# A key column of MySQL/MariaDB must fit an InnoDB index (3072 bytes, 4 per character).
_KEY_VARCHAR_MAX = 255
_VARCHAR_RE = re.compile(r"varchar\(([0-9]{1,5})\)")
_TYPES_TEXT = f"int, bigint, smallint, double, varchar(N) with N from 1 to {VARCHAR_MAX}, text"
# Timestamps outgrow some types at once: refuse those at start-up rather than
# dead-lettering every message (ts in int, the legacy layout's type, lasts until 2038).
_TOO_SMALL = {"ts": ("smallint",), "ts_ms": ("smallint", "int")}


class ColumnSpec(NamedTuple):
    """One checked ``name:source:type`` item of ``table_struct``."""

    name: str
    source: str
    #: Canonical, lower case: int, bigint, smallint, double, text or varchar(N).
    type: str

    @property
    def length(self) -> int | None:
        """N of varchar(N); None for other types."""
        m = _VARCHAR_RE.fullmatch(self.type)
        return int(m.group(1)) if m else None

    def __str__(self) -> str:
        return f"{self.name}:{self.source}:{self.type}"


def parse_column(item: str) -> ColumnSpec:
    """Parse one ``name:source:type`` item; ValueError says what is wrong with it."""
    parts = [p.strip() for p in item.split(":")]
    if len(parts) != 3 or not all(parts):
        raise ValueError("is not name:source:type")
    name, source, type_ = parts
    if not SQL_IDENTIFIER.fullmatch(name):
        raise ValueError(f"has column name {name!r}: expected {_IDENT_TEXT}")
    if source not in COLUMN_SOURCES:
        raise ValueError(f"has unknown source {source!r}: expected one of "
                         f"{', '.join(COLUMN_SOURCES)}")
    canonical = type_.lower()  # legacy settings write INT and VARCHAR(63)
    m = _VARCHAR_RE.fullmatch(canonical)
    if m:
        n = int(m.group(1))
        if not 1 <= n <= VARCHAR_MAX:
            raise ValueError(f"has type {type_!r}: varchar length must be from 1 to {VARCHAR_MAX}")
        canonical = f"varchar({n})"
    elif canonical not in COLUMN_TYPES:
        raise ValueError(f"has unknown type {type_!r}: expected one of {_TYPES_TEXT}")
    if canonical in _TOO_SMALL.get(source, ()):
        raise ValueError(f"has type {canonical} too small for source {source}")
    spec = ColumnSpec(name, source, canonical)
    if source in KEY_SOURCES:
        if canonical == "text" or (spec.length or 0) > _KEY_VARCHAR_MAX:
            raise ValueError(f"is part of the unique key (source {source}): its type must be a "
                             f"number or varchar(N) with N at most {_KEY_VARCHAR_MAX}")
    return spec


def parse_struct(items) -> tuple[ColumnSpec, ...]:
    """Check a whole ``table_struct`` (strings or ColumnSpecs); ValueError says why."""
    specs: list[ColumnSpec] = []
    seen: dict[str, str] = {}
    for item in items:
        text = str(item)  # a ColumnSpec is checked again: it may have been built by hand
        try:
            spec = parse_column(text)
        except ValueError as e:
            raise ValueError(f"item {text!r} {e}") from None
        # Column names are case-insensitive on MySQL/MariaDB and SQLite.
        folded = spec.name.lower()
        if folded in seen:
            raise ValueError(f"column {spec.name!r} appears twice")
        seen[folded] = spec.name
        specs.append(spec)
    if not specs:
        raise ValueError("no column given")
    sources = {s.source for s in specs}
    # A row's key: without both, replays or other instances would collide or duplicate.
    if not sources & {"ts", "ts_ms"}:
        raise ValueError("no column of source ts or ts_ms (a row's time is part of its key)")
    if "index" not in sources:
        raise ValueError("no column of source index (the instance is part of a row's key)")
    return tuple(specs)


_PLACEHOLDER_RE = re.compile(r"(\{metric\}|\{device\})")
_LITERAL_RE = re.compile(r"[A-Za-z0-9_]*")


def parse_template(template: str) -> str:
    """Check a ``table_template``; ValueError says what is wrong with it. Returns it unchanged.

    Both placeholders are required: the unique key of a row is (time,
    index), so two metrics or two devices sharing a table would collide.
    """
    parts = _PLACEHOLDER_RE.split(template)
    for literal in parts[::2]:
        if not _LITERAL_RE.fullmatch(literal):
            raise ValueError(f"has {literal!r} outside {{metric}} and {{device}}: "
                             "only letters, digits and '_' may surround them")
    for name in ("{metric}", "{device}"):
        if name not in parts[1::2]:
            raise ValueError(f"has no {name}")
    if parts[0] and not SQL_IDENTIFIER.fullmatch(parts[0][:1]):
        raise ValueError("must start with a letter, '_' or a placeholder")
    fixed = sum(len(p) for p in parts[::2])
    if fixed > 62:  # leaves at least a character for each placeholder
        raise ValueError(f"has {fixed} fixed characters: table names are at most 64")
    return template


class TableStruct(StrList):
    """``table_struct``: ``name:source:type`` items, checked as a whole (ColumnSpecs)."""

    def __init__(self) -> None:
        super().__init__(min_items=1, allowed=(
            "expected name:source:type items separated by commas or newlines, with a column "
            "of source ts or ts_ms and one of source index"))

    def parse(self, raw: str, ctx: ParseContext) -> tuple[ColumnSpec, ...]:
        items = super().parse(raw, ctx)
        try:
            return parse_struct(items)
        except ValueError as e:
            raise self.invalid(str(e)) from None


class TableTemplate(Parser):
    """``table_template``: a table name with ``{metric}`` and ``{device}``."""

    allowed = ("expected a table name with {metric} and {device}, otherwise letters, digits "
               "and '_' (e.g. {metric}_{device})")

    def parse(self, raw: str, ctx: ParseContext) -> str:
        try:
            return parse_template(raw)
        except ValueError as e:
            raise self.invalid(str(e)) from None



@register_section("db")
@dataclasses.dataclass(frozen=True)
class DbSettings:
    """``[db]``: how the SQL writer batches, migrates and lays out its tables."""

    layout: str = setting(
        Choice("normalized", "per_device"), "normalized",
        "Table layout of samples: normalized (devices, metrics, samples) or per_device "
        "(a table per metric per device, the legacy layout).")
    table_prefix: str = setting(TABLE_PREFIX, "", "Prefix of the normalized tables and of their Alembic version table.")
    migrate: str = setting(
        Choice("auto", "check"), "auto",
        "auto: create or upgrade the schema at start-up; check: refuse to start unless "
        "'centaure db upgrade' was run.")
    batch_size: int = setting(Int(1, 1_000_000), "5000", "Rows per transaction, at most.")
    batch_interval: float = setting(
        Duration(0.001, 60), "200ms", "Longest wait for a batch to fill before it is written.")
    retry_initial: float = setting(
        Duration(0.01, 600), "1s", "First wait before retrying a batch while the database is down.")
    retry_max: float = setting(
        Duration(0.01, 3600), "30s", "Longest wait between retries while the database is down.")
    table_template: str = setting(
        TableTemplate(), "{metric}_{device}",
        "per_device: table name template; {metric} is the metric name, {device} the "
        "inventory id of the device (its host name when it has no id). A message whose "
        "table name is not an SQL identifier once filled in is dead-lettered.")
    per_device_tables: tuple = setting(
        StrList(), "",
        "per_device: existing tables the writer may write into besides those it created "
        "(e.g. a legacy installation's); any other existing table is refused.")
    per_device_max_tables: int = setting(
        Int(1, 10_000_000), "10000",
        "per_device: most tables the writer may create (a message needing one more is "
        "dead-lettered).")
    table_struct: tuple = setting(
        TableStruct(), "datetime:ts:int, metric_index:index:smallint, value:value:varchar(63)",
        "per_device: the columns, each name:source:type (the default is the legacy "
        "layout's); a value that fits no column dead-letters its message.")


class PartitionSpan(Duration):
    """``partition_span``: a whole number of hours, from 1h to 31d."""

    def __init__(self) -> None:
        super().__init__(3600, 31 * 86400)
        self.allowed = "expected a whole number of hours from 1h to 31d (e.g. 1d, 6h)"

    def parse(self, raw: str, ctx: ParseContext) -> float:
        value = super().parse(raw, ctx)
        if value % 3600:
            raise self.invalid()
        return value


_KEEP = Duration(3600, 100 * 366 * 86400)


@register_section("retention")
@dataclasses.dataclass(frozen=True)
class RetentionSettings:
    """``[retention]``: how long the SQL writer's rows are kept, applied by ``centaure db maintain``."""

    samples: float = setting(
        _KEEP, "14d",
        "Raw samples older than this go: their time partitions are dropped (MariaDB, "
        "PostgreSQL), or their rows deleted in batches (SQLite, tables not partitioned).")
    events: float = setting(
        _KEEP, "90d", "Stored traps and informs (events) older than this go, as samples do.")
    alarm_history: float = setting(
        _KEEP, "365d", "Alarm state changes (alarm_history) older than this go, as samples do.")
    thresholds: float = setting(
        _KEEP, "90d", "Threshold crossings (thresholds) older than this go, as samples do.")
    notifications: float = setting(
        _KEEP, "365d",
        "Notification attempts (notifications, the delivery ledger) older than this go, as "
        "samples do.")
    rollups_5m: float = setting(
        _KEEP, "90d", "5-minute rollups of samples older than this are deleted.")
    rollups_1h: float = setting(
        _KEEP, "730d", "Hourly rollups of samples older than this are deleted.")
    partition_span: float = setting(
        PartitionSpan(), "1d",
        "Time covered by one new time partition of every partitioned table (MariaDB, "
        "PostgreSQL), aligned on UTC midnight for whole days; a change applies to "
        "partitions created afterwards.")
    partitions_ahead: float = setting(
        Duration(3600, 366 * 86400), "3d",
        "Time partitions exist this far ahead of now (created by 'centaure db maintain' and "
        "by the writer every hour); later rows go to a catch-all partition.")
    delete_batch: int = setting(
        Int(100, 1_000_000), "5000", "Rows deleted per transaction, about (batched deletes).")
    lock_timeout: float = setting(
        Duration(1, 86400), "10m",
        "Longest wait for another 'centaure db maintain' of the same tables (another node) "
        "to finish before giving up with an error.")
