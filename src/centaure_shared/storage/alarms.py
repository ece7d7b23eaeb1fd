"""The correlator's own tables (SQLAlchemy Core), in the ``[database]`` of the site.

Owned and written by the correlator (``connector_alarms``); defined here, below
the connectors, so that readers such as the web console can read them without
importing another connector.

:func:`make_schema` builds a fresh ``MetaData`` whose names (tables, indexes,
constraints) all carry the ``[correlator] table_prefix`` (``corr_`` by
default), so the correlator's state sits beside the SQL writer's tables:

* ``<p>alarms``: one row per :class:`~connector_alarms.model.AlarmRecord`,
  keyed by ``ref``; indexed by ``host`` (a host's state is loaded, and later
  moved between correlators, as a whole) and by ``(active, host)``;
* ``<p>hosts``: one row per :class:`~connector_alarms.model.HostState`:
  ``snapshot_ts``;
* ``<p>seen_ids``: the window of message ids a host already applied, in
  numbered chunks (a JSON list each) keyed by ``(host, chunk)``: a save adds
  a chunk and drops the ones no longer needed, never rewriting the window
  (:class:`~connector_alarms.model.SeenIds`);
* ``<p>outbox``: ``alarm`` messages committed with the state change that made
  them and not yet confirmed by the broker, republished at start-up; ``id``
  keeps their order, ``message_id`` is unique (an insert is idempotent).

Choices:

* Timestamps are DOUBLE (binary64 on every dialect: MariaDB ``DOUBLE``,
  PostgreSQL ``double precision``, SQLite ``REAL``) holding UNIX seconds, the
  dataclasses' own floats: a value reads back bit for bit (checked on MariaDB
  10.11 and PostgreSQL 15), so the ordering guards (``changed_ts``,
  ``snapshot_ts``) compare after a restart exactly as before it. Integer
  microseconds would round them.
* Refs are unsigned 64-bit (:class:`centaure_shared.storage.schema.UInt64`: BIGINT
  UNSIGNED on MariaDB, NUMERIC(20) on PostgreSQL, two's complement on SQLite).
* ``notes``, ``history`` and seen-id chunks (``ids``) are JSON text (not a JSON column
  type: portable, and never queried inside). Unbounded text is MEDIUMTEXT on
  MariaDB (16 MiB; its TEXT stops at 64 KiB, less than 1,024 message ids of
  255 characters), the outbox body MEDIUMBLOB.
* ``host`` and ``message_id`` are byte-exact on MariaDB (``key_string``):
  "R1" and "r1" are two hosts, as everywhere else.

Created and upgraded by the Alembic revisions of
:mod:`connector_alarms.migrations` (:func:`connector_alarms.migrate.upgrade`);
a change here needs a new revision there (the tests compare the migrated
database with :func:`make_schema`). :func:`create_all`/:func:`drop_all` are
for tests.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from centaure_shared.sql import HOST_MAX, PREFIX_RE, UInt64, key_string, long_binary, long_text

__all__ = ["AlarmSchema", "make_schema", "create_all", "drop_all", "NAME_MAX",
           "MESSAGE_ID_MAX"]

#: Longest alarm name and message id (characters).
NAME_MAX = 255
MESSAGE_ID_MAX = 255


@dataclass(frozen=True)
class AlarmSchema:
    """The correlator's tables under one prefix; ``metadata`` holds exactly these."""

    prefix: str
    metadata: sa.MetaData
    alarms: sa.Table
    hosts: sa.Table
    outbox: sa.Table
    seen_ids: sa.Table


def make_schema(prefix: str = "corr_") -> AlarmSchema:
    """Build the tables, each named ``<prefix><name>`` (prefix may be empty)."""
    if prefix and not PREFIX_RE.match(prefix):
        raise ValueError(f"invalid table prefix {prefix!r}: must match {PREFIX_RE.pattern}")
    md = sa.MetaData()
    p = prefix

    alarms = sa.Table(
        f"{p}alarms", md,
        sa.Column("ref", UInt64(), primary_key=True, autoincrement=False),
        sa.Column("host", key_string(HOST_MAX), nullable=False),
        sa.Column("name", sa.String(NAME_MAX), nullable=False),
        sa.Column("identity", long_text(), nullable=False),
        sa.Column("origin", sa.String(16), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("base_severity", sa.String(16), nullable=False),
        sa.Column("message", long_text(), nullable=False),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.Column("first_seen", sa.Double, nullable=False, comment="UNIX seconds"),
        sa.Column("last_seen", sa.Double, nullable=False, comment="UNIX seconds"),
        sa.Column("count", sa.BigInteger, nullable=False),
        sa.Column("cleared_at", sa.Double, nullable=True, comment="UNIX seconds"),
        sa.Column("clear_reason", sa.String(16), nullable=True),
        sa.Column("changed_ts", sa.Double, nullable=False, comment="UNIX seconds"),
        sa.Column("acked_by", sa.String(NAME_MAX), nullable=True),
        sa.Column("acked_at", sa.Double, nullable=True, comment="UNIX seconds"),
        sa.Column("notes", long_text(), nullable=False, comment="JSON"),
        sa.Column("flapping", sa.Boolean, nullable=False),
        sa.Column("history", long_text(), nullable=False, comment="JSON"),
        sa.Column("cause_ref", UInt64(), nullable=True),
        sa.Column("published_at", sa.Double, nullable=False, comment="reactor clock, seconds"),
        sa.Column("pending_update", sa.Boolean, nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Index(f"{p}ix_alarms_host", "host"),
        sa.Index(f"{p}ix_alarms_active_host", "active", "host"),
    )
    hosts = sa.Table(
        f"{p}hosts", md,
        sa.Column("host", key_string(HOST_MAX), primary_key=True),
        sa.Column("snapshot_ts", sa.Double, nullable=False, comment="UNIX seconds"),
    )
    seen_ids = sa.Table(
        f"{p}seen_ids", md,
        sa.Column("host", key_string(HOST_MAX), primary_key=True),
        sa.Column("chunk", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("ids", long_text(), nullable=False, comment="JSON"),
    )
    outbox = sa.Table(
        f"{p}outbox", md,
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"),
                  primary_key=True, autoincrement=True),
        sa.Column("message_id", key_string(MESSAGE_ID_MAX), nullable=False),
        sa.Column("body", long_binary(), nullable=False, comment="encoded alarm message"),
        sa.Column("created", sa.Double, nullable=False, comment="UNIX seconds"),
        sa.UniqueConstraint("message_id", name=f"{p}uq_outbox_message_id"),
    )
    return AlarmSchema(prefix, md, alarms, hosts, outbox, seen_ids)


def create_all(engine: sa.Engine, schema: AlarmSchema) -> None:
    """Create the missing tables (idempotent), for tests.

    Production databases are created by the migrations
    (:func:`connector_alarms.migrate.upgrade`), which also record their revision.
    """
    schema.metadata.create_all(engine)


def drop_all(engine: sa.Engine, schema: AlarmSchema) -> None:
    """Drop this layout's tables (tests, tear-down)."""
    schema.metadata.drop_all(engine)
