"""Samples in time partitions on MariaDB/MySQL and PostgreSQL (one per UTC day).

Revision ID: 0002
Revises: 0001

Existing rows are kept: MariaDB/MySQL partitions the table in place (one
``ALTER TABLE``, which copies it); PostgreSQL renames it, creates the
partitioned table under the same names, copies the rows and drops the old
one, in the upgrade's transaction. Partitions are made from the day of the
oldest row (at most 1000 of them, the first taking everything older) to
three days ahead, plus a catch-all (MariaDB ``pfuture VALUES LESS THAN
MAXVALUE``, PostgreSQL ``<table>_pdefault``); ``centaure db maintain`` then
adds and drops them with the ``[retention]`` settings. A partition is named
after the UTC day it starts (``p20261206_0000`` on MariaDB,
``<table>_p20261206_0000`` on PostgreSQL). The primary key already holds
``ts``, as MariaDB requires of every unique key of a partitioned table.
SQLite keeps one table.

Frozen, as the revisions before it: every statement is spelled out here, so
that a later change to the partition helpers of ``connector_db`` never
changes what this revision does. Identifiers are the validated prefix and
names made here from numbers, quoted by the dialect.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone

import sqlalchemy as sa
from alembic import op

from centaure_shared.sql import key_string, table_prefix

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_DAY_MS = 86_400_000
_AHEAD_MS = 3 * _DAY_MS
_MAX_INITIAL_PARTITIONS = 1000
_COLUMNS = "device_id, metric_id, idx, ts, value_num, value_text"


def _create(name: str, partitioned: bool) -> None:
    p = table_prefix()
    kw = {"postgresql_partition_by": "RANGE (ts)"} if partitioned else {}
    op.create_table(
        name,
        sa.Column("device_id", sa.Integer, nullable=False),
        sa.Column("metric_id", sa.Integer, nullable=False),
        sa.Column("idx", key_string(128), nullable=False),
        sa.Column("ts", sa.BigInteger, nullable=False, comment="UNIX milliseconds"),
        sa.Column("value_num", sa.Double, nullable=True),
        sa.Column("value_text", sa.String(255), nullable=True),
        sa.PrimaryKeyConstraint("device_id", "metric_id", "idx", "ts", name=f"{p}pk_samples"),
        **kw,
    )
    op.create_index(f"{p}ix_samples_device_ts", name, ["device_id", "ts"])


def _q(conn: sa.Connection, name: str) -> str:
    return conn.dialect.identifier_preparer.quote(name)


def _mysql(conn: sa.Connection) -> bool:
    return conn.dialect.name in ("mysql", "mariadb")


def _part_name(table: str, lower_ms: int, mysql: bool) -> str:
    stamp = datetime.fromtimestamp(lower_ms / 1000, timezone.utc).strftime("%Y%m%d_%H%M")
    return f"p{stamp}" if mysql else f"{table}_p{stamp}"


def _ranges(conn: sa.Connection, table: str, now_ms: int) -> list[tuple[int, int]]:
    """Whole days from the oldest row's (at most 1000 days back) to beyond now + 3 days."""
    oldest = conn.exec_driver_sql(f"SELECT MIN(ts) FROM {_q(conn, table)}").scalar()
    start = min(int(oldest), now_ms) if oldest is not None else now_ms
    start = max(start, now_ms - (_MAX_INITIAL_PARTITIONS - 1) * _DAY_MS)
    lower = (start // _DAY_MS) * _DAY_MS
    until = now_ms + _AHEAD_MS
    ranges = []
    while True:
        upper = lower + _DAY_MS
        ranges.append((lower, upper))
        if upper > until:
            return ranges
        lower = upper


def _pg_set_aside(conn: sa.Connection, table: str, new_name: str) -> None:
    """Rename ``table`` and its indexes (their names are global in the schema) out of the way."""
    idx = conn.execute(sa.text(
        "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "WHERE i.indrelid = to_regclass(quote_ident(:t))"), {"t": table}).scalars().all()
    conn.exec_driver_sql(f"ALTER TABLE {_q(conn, table)} RENAME TO {_q(conn, new_name)}")
    for name in idx:
        conn.exec_driver_sql(f"ALTER INDEX {_q(conn, name)} RENAME TO "
                             f"{_q(conn, name[:55] + '_old')}")


def _pg_copy(conn: sa.Connection, source: str, target: str) -> None:
    conn.exec_driver_sql(f"INSERT INTO {_q(conn, target)} ({_COLUMNS}) "
                         f"SELECT {_COLUMNS} FROM {_q(conn, source)}")
    conn.exec_driver_sql(f"DROP TABLE {_q(conn, source)}")


def upgrade() -> None:
    conn = op.get_bind()
    table = f"{table_prefix()}samples"
    t = _q(conn, table)
    ranges = _ranges(conn, table, int(time.time() * 1000))
    if _mysql(conn):
        defs = ", ".join(f"PARTITION {_q(conn, _part_name(table, lo, True))} "
                         f"VALUES LESS THAN ({int(hi)})" for lo, hi in ranges)
        conn.exec_driver_sql(f"ALTER TABLE {t} PARTITION BY RANGE (ts) "
                             f"({defs}, PARTITION pfuture VALUES LESS THAN MAXVALUE)")
        return
    if conn.dialect.name != "postgresql":
        return
    old = f"{table}_unpartitioned"
    _pg_set_aside(conn, table, old)
    _create(table, partitioned=True)
    for i, (lo, hi) in enumerate(ranges):
        # The first partition also takes every older row.
        low = "MINVALUE" if i == 0 else str(int(lo))
        conn.exec_driver_sql(
            f"CREATE TABLE {_q(conn, _part_name(table, lo, False))} PARTITION OF {t} "
            f"FOR VALUES FROM ({low}) TO ({int(hi)})")
    conn.exec_driver_sql(f"CREATE TABLE {_q(conn, table + '_pdefault')} PARTITION OF {t} DEFAULT")
    _pg_copy(conn, old, table)


def downgrade() -> None:
    conn = op.get_bind()
    table = f"{table_prefix()}samples"
    if _mysql(conn):
        conn.exec_driver_sql(f"ALTER TABLE {_q(conn, table)} REMOVE PARTITIONING")
        return
    if conn.dialect.name != "postgresql":
        return
    old = f"{table}_partitioned"
    _pg_set_aside(conn, table, old)
    _create(table, partitioned=False)
    _pg_copy(conn, old, table)
