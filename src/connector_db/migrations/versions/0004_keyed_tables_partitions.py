"""Alarm history, thresholds and notifications in daily time partitions.

Revision ID: 0004
Revises: 0003

On MariaDB/MySQL and PostgreSQL each of the three tables is range-partitioned
on ``ts`` (UNIX milliseconds), one partition per UTC day, as samples are
(revision 0002), so that ``centaure db maintain`` drops their old days as
whole partitions. Both databases want the partition column in every unique
key of a partitioned table: the primary key becomes ``(id, ts)`` and the
unique ``message_id`` becomes ``(message_id, ts)`` (a re-delivered message
has the same body, hence the same ``ts``: it still inserts nothing). SQLite
keeps one table and its ``id`` key (its rowid), and takes the same
``(message_id, ts)`` unique key (the table is rebuilt: SQLite cannot change
a constraint in place).

Events stay one table, unique by ``message_id`` alone: two trap receivers
given the same trap publish it under the same id but each with its own
receipt time, and only a key without ``ts`` stores it once.

Every row is kept, with its ``id``, and ids go on from where they were.
MariaDB/MySQL changes the keys and partitions each table in one ``ALTER
TABLE`` (which copies it; the downgrade too). PostgreSQL renames each table aside, creates the
partitioned one under the same names, copies the rows, hands the ``id``
sequence over and drops the old one, in the upgrade's transaction.
Partitions are a UTC day each for the last 31 days and up to three days
ahead, 30 days each before that (at most 24 of them, the first taking
everything older: few partitions to make; their rows go a month at a time
once past their retention), plus a catch-all
(MariaDB ``pfuture VALUES LESS THAN MAXVALUE``, PostgreSQL
``<table>_pdefault``); a partition is named after the UTC day it starts
(``p20261206_0000`` on MariaDB, ``<table>_p20261206_0000`` on PostgreSQL).
The downgrade undoes it all, keeping every row (two rows sharing a
``message_id`` at different times, which only this revision allows, would
stop it).

Frozen, as the revisions before it: every statement is spelled out here.
Identifiers are the validated prefix and names made here from numbers,
quoted by the dialect.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import datetime, timezone

import sqlalchemy as sa
from alembic import op

from centaure_shared.sql import UInt64, key_string, table_prefix

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_DAY_MS = 86_400_000
_AHEAD_MS = 3 * _DAY_MS
_DAILY_DAYS = 31
_OLD_SPAN_MS = 30 * _DAY_MS
_MAX_OLD_PARTITIONS = 24
_SEQUENCE_RE = re.compile(r"^(?:[a-z_][a-z0-9_]*\.)?[a-z_][a-z0-9_]*$")


def _alarm_columns() -> list[sa.Column]:
    return [
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("first_seen", sa.BigInteger, nullable=False),
        sa.Column("last_seen", sa.BigInteger, nullable=False),
        sa.Column("cleared_at", sa.BigInteger, nullable=True),
        sa.Column("count", sa.Integer, nullable=False),
        sa.Column("origin", sa.String(16), nullable=False),
        sa.Column("acked_by", sa.String(255), nullable=True),
        sa.Column("flapping", sa.Boolean, nullable=False),
        sa.Column("cause_ref", UInt64(), nullable=True),
        sa.Column("ts", sa.BigInteger, nullable=False),
    ]


def _alarm_history() -> list[sa.Column]:
    return [
        sa.Column("message_id", key_string(255), nullable=False),
        sa.Column("ref", UInt64(), nullable=False),
        *_alarm_columns(),
    ]


def _thresholds() -> list[sa.Column]:
    return [
        sa.Column("message_id", key_string(255), nullable=False),
        sa.Column("ts", sa.BigInteger, nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("rule", sa.String(255), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("values", sa.Text, nullable=False, comment="JSON"),
    ]


def _notifications() -> list[sa.Column]:
    return [
        sa.Column("message_id", key_string(255), nullable=False),
        sa.Column("ts", sa.BigInteger, nullable=False),
        sa.Column("ref", UInt64(), nullable=True),
        sa.Column("rule", sa.String(255), nullable=True),
        sa.Column("host", sa.String(255), nullable=True),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("recipient", sa.String(255), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("reason", sa.Text, nullable=True),
    ]


#: name: (columns after ``id``, indexes as (name suffix, columns)).
_TABLES: dict[str, tuple[Callable[[], list[sa.Column]], list[tuple[str, list[str]]]]] = {
    "alarm_history": (_alarm_history, [("ix_alarm_history_ref_ts", ["ref", "ts"]),
                                       ("ix_alarm_history_host_ts", ["host", "ts"])]),
    "thresholds": (_thresholds, [("ix_thresholds_host_ts", ["host", "ts"])]),
    "notifications": (_notifications, [("ix_notifications_ts", ["ts"])]),
}


def _q(conn: sa.Connection, name: str) -> str:
    return conn.dialect.identifier_preparer.quote(name)


def _mysql(conn: sa.Connection) -> bool:
    return conn.dialect.name in ("mysql", "mariadb")


def _part_name(table: str, lower_ms: int, mysql: bool) -> str:
    stamp = datetime.fromtimestamp(lower_ms / 1000, timezone.utc).strftime("%Y%m%d_%H%M")
    return f"p{stamp}" if mysql else f"{table}_p{stamp}"


def _ranges(conn: sa.Connection, table: str, now_ms: int) -> list[tuple[int, int]]:
    """The partitions of ``table``'s rows, oldest first, to beyond now + 3 days.

    A day each for the last 31 days; older rows in 30-day partitions (at
    most 24, the first taking everything older): few partitions to make
    (PostgreSQL holds a lock per partition and index until the upgrade
    commits), and those rows go a month at a time once past their retention.
    """
    oldest = conn.exec_driver_sql(f"SELECT MIN(ts) FROM {_q(conn, table)}").scalar()
    start = min(int(oldest), now_ms) if oldest is not None else now_ms
    start = (start // _DAY_MS) * _DAY_MS
    daily = (now_ms // _DAY_MS - _DAILY_DAYS) * _DAY_MS
    ranges = []
    if start < daily:
        chunks = min(-(-(daily - start) // _OLD_SPAN_MS), _MAX_OLD_PARTITIONS)
        for k in range(chunks, 0, -1):
            ranges.append((daily - k * _OLD_SPAN_MS, daily - (k - 1) * _OLD_SPAN_MS))
        start = daily
    lower, until = start, now_ms + _AHEAD_MS
    while True:
        upper = lower + _DAY_MS
        ranges.append((lower, upper))
        if upper > until:
            return ranges
        lower = upper


def _keys(conn: sa.Connection, name: str, partitioned: bool) -> str:
    """MariaDB/MySQL: the ALTER specifications that swap the keys of table ``name``."""
    p = table_prefix()
    new, old = f"{p}uq_{name}_message_id_ts", f"{p}uq_{name}_message_id"
    if partitioned:
        drop, add, cols = old, new, "message_id, ts"
    else:
        drop, add, cols = new, old, "message_id"
    return (f"DROP PRIMARY KEY, ADD PRIMARY KEY (id{', ts' if partitioned else ''}), "
            f"DROP INDEX {_q(conn, drop)}, ADD CONSTRAINT {_q(conn, add)} UNIQUE ({cols})")


def _mysql_upgrade(conn: sa.Connection, table: str, name: str, now_ms: int) -> None:
    defs = ", ".join(f"PARTITION {_q(conn, _part_name(table, lo, True))} "
                     f"VALUES LESS THAN ({int(hi)})" for lo, hi in _ranges(conn, table, now_ms))
    # One statement, one copy of the table: keys swapped and rows partitioned together.
    conn.exec_driver_sql(f"ALTER TABLE {_q(conn, table)} {_keys(conn, name, True)} "
                         f"PARTITION BY RANGE (ts) "
                         f"({defs}, PARTITION pfuture VALUES LESS THAN MAXVALUE)")


def _mysql_downgrade(conn: sa.Connection, table: str, name: str) -> None:
    conn.exec_driver_sql(f"ALTER TABLE {_q(conn, table)} {_keys(conn, name, False)} "
                         "REMOVE PARTITIONING")


def _rebuild(conn: sa.Connection, table: str, name: str, partitioned: bool,
             now_ms: int) -> None:
    """PostgreSQL and SQLite: ``table`` made again with the keys of ``partitioned``
    (and its partitions on PostgreSQL), its rows and ids copied over."""
    p = table_prefix()
    pg = conn.dialect.name == "postgresql"
    columns, indexes = _TABLES[name]
    t = _q(conn, table)
    ranges = _ranges(conn, table, now_ms) if pg and partitioned else []
    sequence = None
    if pg:
        sequence = conn.execute(sa.text("SELECT pg_get_serial_sequence(:t, 'id')"),
                                {"t": table}).scalar()
        if sequence is None or not _SEQUENCE_RE.match(sequence):
            raise ValueError(f"{table}.id: unexpected sequence {sequence!r}")
    old = f"{table}_old"
    # Index names are global in the schema: the old table's are moved out of the way.
    if pg:
        # Every index, the keys' too (renaming the index renames its constraint).
        for ix in conn.execute(sa.text(
                "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                "WHERE i.indrelid = to_regclass(quote_ident(:t))"), {"t": table}).scalars().all():
            conn.exec_driver_sql(f"ALTER INDEX {_q(conn, ix)} RENAME TO "
                                 f"{_q(conn, ix[:55] + '_old')}")
    else:
        for ix in sa.inspect(conn).get_indexes(table):
            conn.exec_driver_sql(f"DROP INDEX {_q(conn, ix['name'])}")
    conn.exec_driver_sql(f"ALTER TABLE {t} RENAME TO {_q(conn, old)}")
    if pg:
        id_col = sa.Column("id", sa.BigInteger, nullable=False, autoincrement=False,
                           server_default=sa.text(f"nextval('{sequence}'::regclass)"))
    else:
        id_col = sa.Column("id", sa.Integer, nullable=False)
    key = ["id", "ts"] if pg and partitioned else ["id"]
    if partitioned:
        unique, unique_cols = f"{p}uq_{name}_message_id_ts", ["message_id", "ts"]
    else:
        unique, unique_cols = f"{p}uq_{name}_message_id", ["message_id"]
    cols = columns()
    if pg:
        # Keys and indexes are built once the rows are in (a sort each, not an insert per row).
        kw = {"postgresql_partition_by": "RANGE (ts)"} if ranges else {}
        op.create_table(table, id_col, *cols, **kw)
    else:
        op.create_table(table, id_col, *cols, sa.PrimaryKeyConstraint(*key),
                        sa.UniqueConstraint(*unique_cols, name=unique))
        for ix_name, ix_cols in indexes:
            op.create_index(f"{p}{ix_name}", table, ix_cols)
    for i, (lo, hi) in enumerate(ranges):
        # The first partition also takes every older row.
        low = "MINVALUE" if i == 0 else str(int(lo))
        conn.exec_driver_sql(
            f"CREATE TABLE {_q(conn, _part_name(table, lo, False))} PARTITION OF {t} "
            f"FOR VALUES FROM ({low}) TO ({int(hi)})")
    if ranges:
        conn.exec_driver_sql(f"CREATE TABLE {_q(conn, table + '_pdefault')} PARTITION OF {t} "
                             "DEFAULT")
    names = ", ".join(_q(conn, c) for c in ["id"] + [c.name for c in cols])
    conn.exec_driver_sql(f"INSERT INTO {t} ({names}) SELECT {names} FROM {_q(conn, old)}")
    if pg:
        conn.exec_driver_sql(f"ALTER TABLE {t} ADD PRIMARY KEY ({', '.join(key)})")
        conn.exec_driver_sql(f"ALTER TABLE {t} ADD CONSTRAINT {_q(conn, unique)} UNIQUE "
                             f"({', '.join(unique_cols)})")
        for ix_name, ix_cols in indexes:
            op.create_index(f"{p}{ix_name}", table, ix_cols)
        # The sequence goes on from the copied ids, and lives as long as the new table.
        conn.exec_driver_sql(f"ALTER SEQUENCE {sequence} OWNED BY {t}.id")
    conn.exec_driver_sql(f"DROP TABLE {_q(conn, old)}")


def _migrate(partitioned: bool) -> None:
    conn = op.get_bind()
    now_ms = int(time.time() * 1000)
    for name in _TABLES:
        table = f"{table_prefix()}{name}"
        if _mysql(conn):
            if partitioned:
                _mysql_upgrade(conn, table, name, now_ms)
            else:
                _mysql_downgrade(conn, table, name)
        else:
            _rebuild(conn, table, name, partitioned, now_ms)


def upgrade() -> None:
    _migrate(partitioned=True)


def downgrade() -> None:
    _migrate(partitioned=False)
