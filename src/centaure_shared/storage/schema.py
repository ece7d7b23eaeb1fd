"""The normalized storage layout of the SQL writer (SQLAlchemy Core).

:func:`make_schema` builds a fresh ``MetaData`` whose table names all carry an
optional prefix (validated, quoted by SQLAlchemy), so several layouts can live
in one database (tests, side-by-side sites).

Choices:

* ``samples.ts`` and every other ``ts``-like column is a BIGINT of
  **milliseconds** since the epoch: exact equality across dialects (a float
  column would make the replayed sample's primary key a matter of rounding),
  and 8 bytes per row. Sub-millisecond parts are dropped (rounded).
* a series is one (device, metric, index) (``series``, ``idx`` ``''`` for
  scalars); ``samples`` holds the numeric values as (series_id, ts, value),
  keyed by ``(series_id, ts)`` with no other index, so that a replayed
  ``perf`` message inserts nothing new and a row is 20 bytes of data; on
  MariaDB it and the rollups are created ``PAGE_COMPRESSED=1`` (InnoDB page
  compression: about 23 bytes a row on disk, key included, 62 in the
  uncompressed pages, against 117 for a row keyed by device, metric and
  index). Text values, and polls that gave no value
  (NULL), are the rare rows of ``samples_text``, keyed the same way.
* ``rollups_5m`` and ``rollups_1h`` summarize the numeric samples of each
  series per 5 minutes and per hour (``ts`` is the start of the interval):
  min, max, avg, count and the last value with its time; a counter's are
  those of its rates (per second) between consecutive samples.
  ``rollup_state`` records up to where each resolution is built.
* Rows coming from keyed messages (events, alarm history, thresholds,
  notifications) carry the AMQP ``message_id``. Alarm history, thresholds
  and notifications are partitioned on ``ts`` by the migrations
  (MariaDB/MySQL, PostgreSQL), which want ``ts`` in every unique key: their
  ``message_id`` is unique with ``ts`` (the message's own time: a
  re-delivered message inserts nothing), their primary key ``(id, ts)``,
  ``(id)`` on SQLite (:class:`_IdTimeKey`). Events are one table, unique by
  ``message_id`` alone: two trap receivers publish the same trap under the
  same id, each with its own receipt time.
* Alarm refs are unsigned 64-bit: :class:`UInt64` stores them as BIGINT
  UNSIGNED on MySQL/MariaDB, NUMERIC(20) on PostgreSQL, and as the
  two's-complement signed 64-bit INTEGER on SQLite (exact, mapped back on
  read; only ordering by ref differs above 2**63 on SQLite).

In production the schema is created and upgraded by the Alembic migrations
of :mod:`connector_db.migrations`, through :func:`connector_db.migrate.upgrade`
(at start-up, ``[db] migrate = auto``) or ``centaure db upgrade``; a change
here needs a new revision there (the migration tests compare the migrated
database with :func:`make_schema`). :func:`create_all` and :func:`drop_all`
are for tests.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles

from centaure_shared.sql import HOST_MAX, PREFIX_RE, UInt64, key_string

__all__ = ["Schema", "make_schema", "create_all", "drop_all",
           "TEXT_VALUE_MAX"]

#: Longest text sample value (characters).
TEXT_VALUE_MAX = 255

_NAME = 255
_MSGID = 255



def _ms() -> sa.BigInteger:
    return sa.BigInteger()


@dataclass(frozen=True)
class Schema:
    """The tables of one layout; ``metadata`` holds exactly these."""

    prefix: str
    metadata: sa.MetaData
    devices: sa.Table
    metrics: sa.Table
    samples: sa.Table
    events: sa.Table
    alarm_history: sa.Table
    alarms: sa.Table
    thresholds: sa.Table
    notifications: sa.Table
    rollups_5m: sa.Table
    rollups_1h: sa.Table
    rollup_state: sa.Table
    series: sa.Table
    samples_text: sa.Table


def make_schema(prefix: str = "") -> Schema:
    """Build the tables, each named ``<prefix><name>`` (prefix may be empty)."""
    if prefix and not PREFIX_RE.match(prefix):
        raise ValueError(f"invalid table prefix {prefix!r}: must match {PREFIX_RE.pattern}")
    md = sa.MetaData()
    tables = [make(md, prefix) for make in (_devices, _metrics, _samples, _events, _alarm_history,
                                            _alarms, _thresholds, _notifications)]
    tables += [_rollups(md, prefix, "5m"), _rollups(md, prefix, "1h"), _rollup_state(md, prefix),
               _series(md, prefix), _samples_text(md, prefix)]
    return Schema(prefix, md, *tables)


def _devices(md: sa.MetaData, p: str) -> sa.Table:
    """Polled and trap-sending devices, one row per host name."""
    return sa.Table(
        f"{p}devices", md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", key_string(HOST_MAX), nullable=False),
        sa.Column("address", sa.String(64), nullable=True),
        sa.Column("device_type", sa.String(_NAME), nullable=True),
        sa.UniqueConstraint("name", name=f"{p}uq_devices_name"),
    )


def _metrics(md: sa.MetaData, p: str) -> sa.Table:
    """Metric names and kinds, so samples store small ids."""
    return sa.Table(
        f"{p}metrics", md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", key_string(_NAME), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("unit", sa.String(32), nullable=True),
        sa.UniqueConstraint("name", "kind", name=f"{p}uq_metrics_name_kind"),
    )


def _series(md: sa.MetaData, p: str) -> sa.Table:
    """One row per (device, metric, index) ever polled, so samples store one small id."""
    return sa.Table(
        f"{p}series", md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("device_id", sa.Integer, nullable=False),
        sa.Column("metric_id", sa.Integer, nullable=False),
        sa.Column("idx", key_string(128), nullable=False, default=""),
        sa.UniqueConstraint("device_id", "metric_id", "idx", name=f"{p}uq_series_key"),
    )


# MariaDB: InnoDB page compression (zlib), done as pages are written to disk.
# ROW_FORMAT=COMPRESSED took less room in information_schema but compresses on
# every change in the buffer pool: it halved the writer's rate. A MariaDB-only
# option: the migrations, which make production tables, add it on MariaDB only.
_COMPRESSED = {"mysql_page_compressed": "1"}


def _samples(md: sa.MetaData, p: str) -> sa.Table:
    """Polled numeric values, one row per series and time."""
    return sa.Table(
        f"{p}samples", md,
        sa.Column("series_id", sa.Integer, nullable=False),
        sa.Column("ts", _ms(), nullable=False, comment="UNIX milliseconds"),
        sa.Column("value", sa.Double, nullable=False),
        sa.PrimaryKeyConstraint("series_id", "ts", name=f"{p}pk_samples"),
        sqlite_with_rowid=False,
        **_COMPRESSED,
    )


def _samples_text(md: sa.MetaData, p: str) -> sa.Table:
    """Polled text values and polls that gave no value (NULL), one row per series and time."""
    return sa.Table(
        f"{p}samples_text", md,
        sa.Column("series_id", sa.Integer, nullable=False),
        sa.Column("ts", _ms(), nullable=False, comment="UNIX milliseconds"),
        sa.Column("value", sa.String(TEXT_VALUE_MAX), nullable=True),
        sa.PrimaryKeyConstraint("series_id", "ts", name=f"{p}pk_samples_text"),
    )


def _rollups(md: sa.MetaData, p: str, resolution: str) -> sa.Table:
    """Numeric samples summarized per ``resolution`` (5m, 1h) per series."""
    name = f"{p}rollups_{resolution}"
    return sa.Table(
        name, md,
        sa.Column("series_id", sa.Integer, nullable=False),
        sa.Column("ts", _ms(), nullable=False, comment="interval start, UNIX milliseconds"),
        sa.Column("min_value", sa.Double, nullable=False),
        sa.Column("max_value", sa.Double, nullable=False),
        sa.Column("avg_value", sa.Double, nullable=False),
        sa.Column("value_count", sa.Integer, nullable=False),
        sa.Column("last_value", sa.Double, nullable=False),
        sa.Column("last_ts", _ms(), nullable=False, comment="UNIX milliseconds"),
        sa.PrimaryKeyConstraint("series_id", "ts", name=f"{p}pk_rollups_{resolution}"),
        **_COMPRESSED,
    )


def _rollup_state(md: sa.MetaData, p: str) -> sa.Table:
    """Per resolution, the time before which every interval is rolled up."""
    return sa.Table(
        f"{p}rollup_state", md,
        sa.Column("resolution", sa.String(8), primary_key=True),
        sa.Column("done_until", _ms(), nullable=False, comment="UNIX milliseconds"),
    )


def _events(md: sa.MetaData, p: str) -> sa.Table:
    """Received traps, one row per ``event`` message."""
    return sa.Table(
        f"{p}events", md,
        _auto_id(),
        sa.Column("message_id", key_string(_MSGID), nullable=False),
        sa.Column("ts", _ms(), nullable=False),
        sa.Column("host", sa.String(HOST_MAX), nullable=False),
        sa.Column("address", sa.String(64), nullable=False),
        sa.Column("snmp_version", sa.String(8), nullable=False),
        sa.Column("trap_oid", sa.String(_NAME), nullable=False),
        sa.Column("name", sa.String(_NAME), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("action", sa.String(8), nullable=False),
        sa.Column("alarm", sa.String(_NAME), nullable=True),
        sa.Column("key", sa.String(_NAME), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("varbinds", sa.Text, nullable=False, comment="JSON"),
        sa.Column("unknown_sender", sa.Boolean, nullable=False),
        # Not partitioned: unique by message_id alone, so that the same trap published
        # by two receivers (the same id, each its own receipt time) is stored once.
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("message_id", name=f"{p}uq_events_message_id"),
        sa.Index(f"{p}ix_events_host_ts", "host", "ts"),
        sa.Index(f"{p}ix_events_ts", "ts"),
    )


def _alarm_columns() -> list[sa.Column]:
    """The columns an alarm's history rows and its current row share (new objects each call)."""
    return [
        sa.Column("host", sa.String(HOST_MAX), nullable=False),
        sa.Column("name", sa.String(_NAME), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("first_seen", _ms(), nullable=False),
        sa.Column("last_seen", _ms(), nullable=False),
        sa.Column("cleared_at", _ms(), nullable=True),
        sa.Column("count", sa.Integer, nullable=False),
        sa.Column("origin", sa.String(16), nullable=False),
        sa.Column("acked_by", sa.String(_NAME), nullable=True),
        sa.Column("flapping", sa.Boolean, nullable=False),
        sa.Column("cause_ref", UInt64(), nullable=True),
        sa.Column("ts", _ms(), nullable=False),
    ]


def _alarm_history(md: sa.MetaData, p: str) -> sa.Table:
    """Every state change of every alarm, one row per ``alarm`` message."""
    return sa.Table(
        f"{p}alarm_history", md,
        _auto_id(),
        sa.Column("message_id", key_string(_MSGID), nullable=False),
        sa.Column("ref", UInt64(), nullable=False),
        *_alarm_columns(),
        *_keyed_by_message(p, "alarm_history"),
        sa.Index(f"{p}ix_alarm_history_ref_ts", "ref", "ts"),
        sa.Index(f"{p}ix_alarm_history_host_ts", "host", "ts"),
    )


def _alarms(md: sa.MetaData, p: str) -> sa.Table:
    """The latest state of each alarm, keyed by its ``ref``."""
    return sa.Table(
        f"{p}alarms", md,
        sa.Column("ref", UInt64(), primary_key=True, autoincrement=False),
        *_alarm_columns(),
        sa.Index(f"{p}ix_alarms_host", "host"),
        sa.Index(f"{p}ix_alarms_state", "state"),
    )


def _thresholds(md: sa.MetaData, p: str) -> sa.Table:
    """Threshold rule crossings, one row per ``threshold`` message."""
    return sa.Table(
        f"{p}thresholds", md,
        _auto_id(),
        sa.Column("message_id", key_string(_MSGID), nullable=False),
        sa.Column("ts", _ms(), nullable=False),
        sa.Column("host", sa.String(HOST_MAX), nullable=False),
        sa.Column("rule", sa.String(_NAME), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("values", sa.Text, nullable=False, comment="JSON"),
        *_keyed_by_message(p, "thresholds"),
        sa.Index(f"{p}ix_thresholds_host_ts", "host", "ts"),
    )


def _notifications(md: sa.MetaData, p: str) -> sa.Table:
    """What the alerter notified, to whom, and how the delivery went."""
    return sa.Table(
        f"{p}notifications", md,
        _auto_id(),
        sa.Column("message_id", key_string(_MSGID), nullable=False),
        sa.Column("ts", _ms(), nullable=False),
        sa.Column("ref", UInt64(), nullable=True),
        sa.Column("rule", sa.String(_NAME), nullable=True),
        sa.Column("host", sa.String(HOST_MAX), nullable=True),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("recipient", sa.String(_NAME), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("reason", sa.Text, nullable=True),
        *_keyed_by_message(p, "notifications"),
        sa.Index(f"{p}ix_notifications_ts", "ts"),
    )


def _auto_id() -> sa.Column:
    # BIGINT for the tables that grow without bound; SQLite autoincrements only INTEGER keys.
    return sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"),
                     autoincrement=True)


class _IdTimeKey(sa.PrimaryKeyConstraint):
    """The primary key of a table partitioned on ``ts``: ``(id, ts)`` in the DDL, ``(id)``
    on SQLite.

    MariaDB/MySQL and PostgreSQL want the partition column in every unique
    key of a partitioned table. SQLite is never partitioned, and
    autoincrements only a lone INTEGER PRIMARY KEY (its rowid). SQLAlchemy
    sees ``(id)`` everywhere, so that it lets the database make the ids
    (AUTO_INCREMENT, a sequence, the rowid); ``id`` stays unique in practice
    (one counter per table).
    """


@compiles(_IdTimeKey)
def _id_time_key(constraint: _IdTimeKey, compiler, **kw) -> str:
    cols = [c.name for c in constraint.columns] + ["ts"]
    return (compiler.define_constraint_preamble(constraint, **kw)
            + f"PRIMARY KEY ({', '.join(compiler.preparer.quote(c) for c in cols)})")


@compiles(_IdTimeKey, "sqlite")
def _id_key_on_sqlite(constraint: _IdTimeKey, compiler, **kw) -> str:
    return compiler.visit_primary_key_constraint(constraint, **kw)


def _keyed_by_message(p: str, table: str) -> list[sa.Constraint]:
    """Keys of the tables of keyed messages (partitioned on ``ts``).

    ``(message_id, ts)`` is unique: a re-delivered or replayed message
    carries the same id and the same body, hence the same ``ts`` (the
    message's own time, never the delivery's), so it inserts nothing.
    """
    return [_IdTimeKey("id"),
            sa.UniqueConstraint("message_id", "ts", name=f"{p}uq_{table}_message_id_ts")]


def create_all(engine: sa.Engine, schema: Schema) -> None:
    """Create the missing tables (idempotent), for tests.

    Production databases are created by the migrations
    (:func:`connector_db.migrate.upgrade`), which also record their revision.
    """
    schema.metadata.create_all(engine)


def drop_all(engine: sa.Engine, schema: Schema) -> None:
    """Drop this layout's tables (tests, tear-down)."""
    schema.metadata.drop_all(engine)
