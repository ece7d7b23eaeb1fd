"""Narrow samples: a series table, samples as (series_id, ts, value), texts apart, rollups by series.

Revision ID: 0005
Revises: 0004

A series is one (device, metric, index): ``series`` gets one row for each
found in samples or rollups (ids given in key order, so that the rows are
copied in the order of their new primary key). ``samples`` becomes
(series_id, ts, value NOT NULL) keyed by (series_id, ts) with no other
index; it and the rollups are created ``PAGE_COMPRESSED=1`` on MariaDB (InnoDB
page compression);
rows without a number (texts, polls that gave no value) go to
``samples_text``. ``rollups_5m`` and ``rollups_1h`` are keyed by
(series_id, ts).

Every row is kept: each table is renamed out of the way, its successor
created under the old names (same time partitions, same bounds, same names,
on MariaDB/MySQL and PostgreSQL), the rows copied one partition at a time
with ``INSERT ... SELECT`` joined to ``series``, then the old table dropped.
PostgreSQL does it all in the upgrade's transaction; on MariaDB/MySQL each
DDL statement commits by itself. The downgrade does the reverse, texts and
numbers back in one table.

Frozen, as the revisions before it: every statement is spelled out here.
Identifiers are the validated prefix, partition names read from the
database's catalog (checked) and names made here, quoted by the dialect;
partition bounds are integers (checked) or copied from PostgreSQL's catalog
(checked against a pattern).
"""

from __future__ import annotations

import re

import sqlalchemy as sa
from alembic import op

from centaure_shared.sql import key_string, table_prefix

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_RESOLUTIONS = ("5m", "1h")
_NAME_RE = re.compile(r"^[a-z0-9_]{1,64}$")
_PG_BOUND_RE = re.compile(
    r"^(DEFAULT|FOR VALUES FROM \('?(MINVALUE|-?[0-9]+)'?\) TO \('?(MAXVALUE|-?[0-9]+)'?\))$")
# MariaDB only (MySQL has no such option): pages are compressed as they are
# written to disk, not on every change in the buffer pool as ROW_FORMAT=COMPRESSED does.
_COMPRESSED = {"mysql_page_compressed": "1"}


def _q(conn: sa.Connection, name: str) -> str:
    if not _NAME_RE.match(name):
        raise ValueError(f"unexpected name {name!r}")
    return conn.dialect.identifier_preparer.quote(name)


def _mysql(conn: sa.Connection) -> bool:
    return conn.dialect.name in ("mysql", "mariadb")


# --- partitions, read and made --------------------------------------------------------


def _partitions(conn: sa.Connection, table: str) -> list[tuple[str, str]] | None:
    """(name, bound) of each partition of ``table`` in order; None if it has none.

    MariaDB/MySQL: the bound is the upper one, an integer or ``MAXVALUE``;
    PostgreSQL: the partition's bound clause, as the catalog gives it.
    """
    if _mysql(conn):
        rows = conn.execute(sa.text(
            "SELECT partition_name, partition_description FROM information_schema.partitions "
            "WHERE table_schema = DATABASE() AND table_name = :t AND partition_name IS NOT NULL "
            "ORDER BY partition_ordinal_position"), {"t": table}).all()
        out = []
        for name, desc in rows:
            desc = str(desc).upper()
            if desc != "MAXVALUE":
                desc = str(int(desc))
            out.append((name, desc))
        return out or None
    if conn.dialect.name == "postgresql":
        rows = conn.execute(sa.text(
            "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
            "JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = to_regclass(quote_ident(:t)) ORDER BY c.relname"),
            {"t": table}).all()
        partitioned = conn.execute(sa.text(
            "SELECT COUNT(*) FROM pg_partitioned_table "
            "WHERE partrelid = to_regclass(quote_ident(:t))"), {"t": table}).scalar_one()
        if not partitioned:
            return None
        for name, bound in rows:
            if not _PG_BOUND_RE.match(bound.strip()) or not name.startswith(table + "_p"):
                raise ValueError(f"partition {name} of {table}: unexpected bound {bound!r}")
        return [(name, bound.strip()) for name, bound in rows]
    return None


def _partition(conn: sa.Connection, table: str, parts: list[tuple[str, str]] | None,
               old: str) -> None:
    """Give the new, empty ``table`` the partitions ``parts`` of the table now named ``old``."""
    if not parts:
        return
    t = _q(conn, table)
    if _mysql(conn):
        defs = ", ".join(
            f"PARTITION {_q(conn, name)} VALUES LESS THAN "
            f"({'MAXVALUE' if bound == 'MAXVALUE' else int(bound)})" for name, bound in parts)
        conn.exec_driver_sql(f"ALTER TABLE {t} PARTITION BY RANGE (ts) ({defs})")
        return
    for name, bound in parts:
        conn.exec_driver_sql(f"CREATE TABLE {_q(conn, name)} PARTITION OF {t} {bound}")


def _set_aside(conn: sa.Connection, table: str, old: str,
               parts: list[tuple[str, str]] | None) -> None:
    """Rename ``table`` to ``old``; on PostgreSQL its partitions and every index too (their
    names are global in the schema: the new table takes them)."""
    if conn.dialect.name == "postgresql":
        children = [name for name, _ in parts or []]
        for rel in [table] + children:
            idx = conn.execute(sa.text(
                "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                "WHERE i.indrelid = to_regclass(quote_ident(:t)) ORDER BY c.relname"),
                {"t": rel}).scalars().all()
            for k, name in enumerate(idx):
                conn.exec_driver_sql(f"ALTER INDEX {_q(conn, name)} RENAME TO "
                                     f"{_q(conn, f'{name[:50]}_old{k}')}")
        for name in children:
            conn.exec_driver_sql(f"ALTER TABLE {_q(conn, name)} RENAME TO "
                                 f"{_q(conn, old + name[len(table):])}")
    if _mysql(conn):
        conn.exec_driver_sql(f"RENAME TABLE {_q(conn, table)} TO {_q(conn, old)}")
    else:
        conn.exec_driver_sql(f"ALTER TABLE {_q(conn, table)} RENAME TO {_q(conn, old)}")


def _sources(conn: sa.Connection, table: str, old: str,
             parts: list[tuple[str, str]] | None) -> list[str]:
    """FROM clauses reading ``old`` one partition at a time (the whole table without)."""
    if not parts:
        return [_q(conn, old)]
    if _mysql(conn):
        return [f"{_q(conn, old)} PARTITION ({_q(conn, name)})" for name, _ in parts]
    return [_q(conn, old + name[len(table):]) for name, _ in parts]


def _insert_ignore(conn: sa.Connection, table: str, cols: str, select: str) -> None:
    """INSERT ... SELECT skipping rows whose key exists."""
    if _mysql(conn):
        conn.exec_driver_sql(f"INSERT IGNORE INTO {_q(conn, table)} ({cols}) {select}")
    elif conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"INSERT INTO {_q(conn, table)} ({cols}) {select} "
                             "ON CONFLICT DO NOTHING")
    else:
        conn.exec_driver_sql(f"INSERT OR IGNORE INTO {_q(conn, table)} ({cols}) {select}")


def _drop_index(conn: sa.Connection, table: str, name: str) -> None:
    if _mysql(conn):
        conn.exec_driver_sql(f"DROP INDEX {_q(conn, name)} ON {_q(conn, table)}")
    else:
        conn.exec_driver_sql(f"DROP INDEX {_q(conn, name)}")


# --- the tables, both layouts ----------------------------------------------------------


def _samples_narrow(name: str, p: str, partitioned: bool) -> None:
    kw = {"postgresql_partition_by": "RANGE (ts)"} if partitioned else {}
    if getattr(op.get_bind().dialect, "is_mariadb", False):
        kw.update(_COMPRESSED)
    op.create_table(
        name,
        sa.Column("series_id", sa.Integer, nullable=False),
        sa.Column("ts", sa.BigInteger, nullable=False, comment="UNIX milliseconds"),
        sa.Column("value", sa.Double, nullable=False),
        sa.PrimaryKeyConstraint("series_id", "ts", name=f"{p}pk_samples"),
        sqlite_with_rowid=False, **kw,
    )


def _samples_wide(name: str, p: str, partitioned: bool) -> None:
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


def _rollup_values() -> list[sa.Column]:
    return [
        sa.Column("ts", sa.BigInteger, nullable=False,
                  comment="interval start, UNIX milliseconds"),
        sa.Column("min_value", sa.Double, nullable=False),
        sa.Column("max_value", sa.Double, nullable=False),
        sa.Column("avg_value", sa.Double, nullable=False),
        sa.Column("value_count", sa.Integer, nullable=False),
        sa.Column("last_value", sa.Double, nullable=False),
        sa.Column("last_ts", sa.BigInteger, nullable=False, comment="UNIX milliseconds"),
    ]


_ROLLUP_VALUES = "ts, min_value, max_value, avg_value, value_count, last_value, last_ts"


def _rollups_narrow(name: str, p: str, res: str) -> None:
    kw = _COMPRESSED if getattr(op.get_bind().dialect, "is_mariadb", False) else {}
    op.create_table(
        name,
        sa.Column("series_id", sa.Integer, nullable=False),
        *_rollup_values(),
        sa.PrimaryKeyConstraint("series_id", "ts", name=f"{p}pk_rollups_{res}"),
        **kw,
    )


def _rollups_wide(name: str, p: str, res: str) -> None:
    op.create_table(
        name,
        sa.Column("device_id", sa.Integer, nullable=False),
        sa.Column("metric_id", sa.Integer, nullable=False),
        sa.Column("idx", key_string(128), nullable=False),
        *_rollup_values(),
        sa.PrimaryKeyConstraint("device_id", "metric_id", "idx", "ts",
                                name=f"{p}pk_rollups_{res}"),
    )


# --- upgrade ---------------------------------------------------------------------------


def upgrade() -> None:
    conn = op.get_bind()
    p = table_prefix()
    samples, series = f"{p}samples", f"{p}series"
    op.create_table(
        series,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("device_id", sa.Integer, nullable=False),
        sa.Column("metric_id", sa.Integer, nullable=False),
        sa.Column("idx", key_string(128), nullable=False),
        sa.UniqueConstraint("device_id", "metric_id", "idx", name=f"{p}uq_series_key"),
    )
    keys = " UNION ".join(f"SELECT DISTINCT device_id, metric_id, idx FROM {_q(conn, t)}"
                          for t in (samples, f"{p}rollups_5m", f"{p}rollups_1h"))
    conn.exec_driver_sql(f"INSERT INTO {_q(conn, series)} (device_id, metric_id, idx) "
                         f"SELECT device_id, metric_id, idx FROM ({keys}) k "
                         "ORDER BY device_id, metric_id, idx")
    join = (f"JOIN {_q(conn, series)} se ON se.device_id = o.device_id "
            "AND se.metric_id = o.metric_id AND se.idx = o.idx")

    parts = _partitions(conn, samples)
    _drop_index(conn, samples, f"{p}ix_samples_device_ts")
    old = f"{p}samples_old"
    _set_aside(conn, samples, old, parts)
    _samples_narrow(samples, p, parts is not None)
    _partition(conn, samples, parts, old)
    text = f"{p}samples_text"
    op.create_table(
        text,
        sa.Column("series_id", sa.Integer, nullable=False),
        sa.Column("ts", sa.BigInteger, nullable=False, comment="UNIX milliseconds"),
        sa.Column("value", sa.String(255), nullable=True),
        sa.PrimaryKeyConstraint("series_id", "ts", name=f"{p}pk_samples_text"),
    )
    for source in _sources(conn, samples, old, parts):
        conn.exec_driver_sql(
            f"INSERT INTO {_q(conn, samples)} (series_id, ts, value) "
            f"SELECT se.id, o.ts, o.value_num FROM {source} o {join} "
            "WHERE o.value_num IS NOT NULL")
        conn.exec_driver_sql(
            f"INSERT INTO {_q(conn, text)} (series_id, ts, value) "
            f"SELECT se.id, o.ts, o.value_text FROM {source} o {join} "
            "WHERE o.value_num IS NULL")
    conn.exec_driver_sql(f"DROP TABLE {_q(conn, old)}")

    for res in _RESOLUTIONS:
        table, old = f"{p}rollups_{res}", f"{p}rollups_{res}_old"
        _drop_index(conn, table, f"{p}ix_rollups_{res}_device_ts")
        _set_aside(conn, table, old, None)
        _rollups_narrow(table, p, res)
        conn.exec_driver_sql(
            f"INSERT INTO {_q(conn, table)} (series_id, {_ROLLUP_VALUES}) "
            f"SELECT se.id, {', '.join('o.' + c for c in _ROLLUP_VALUES.split(', '))} "
            f"FROM {_q(conn, old)} o {join}")
        conn.exec_driver_sql(f"DROP TABLE {_q(conn, old)}")


# --- downgrade -------------------------------------------------------------------------


def downgrade() -> None:
    conn = op.get_bind()
    p = table_prefix()
    samples, series, text = f"{p}samples", f"{p}series", f"{p}samples_text"
    key = "se.device_id, se.metric_id, se.idx"
    join = f"JOIN {_q(conn, series)} se ON se.id = o.series_id"

    for res in _RESOLUTIONS:
        table, old = f"{p}rollups_{res}", f"{p}rollups_{res}_old"
        _set_aside(conn, table, old, None)
        _rollups_wide(table, p, res)
        conn.exec_driver_sql(
            f"INSERT INTO {_q(conn, table)} (device_id, metric_id, idx, {_ROLLUP_VALUES}) "
            f"SELECT {key}, {', '.join('o.' + c for c in _ROLLUP_VALUES.split(', '))} "
            f"FROM {_q(conn, old)} o {join}")
        conn.exec_driver_sql(f"DROP TABLE {_q(conn, old)}")
        op.create_index(f"{p}ix_rollups_{res}_device_ts", table, ["device_id", "ts"])

    parts = _partitions(conn, samples)
    old = f"{p}samples_old"
    _set_aside(conn, samples, old, parts)
    _samples_wide(samples, p, parts is not None)
    _partition(conn, samples, parts, old)
    cols = "device_id, metric_id, idx, ts, value_num, value_text"
    for source in _sources(conn, samples, old, parts):
        conn.exec_driver_sql(
            f"INSERT INTO {_q(conn, samples)} ({cols}) "
            f"SELECT {key}, o.ts, o.value, NULL FROM {source} o {join}")
    # A number and a text of one series at one time (two messages of one poll time)
    # were two rows; the old key holds one: the number stays.
    _insert_ignore(conn, samples, cols,
                   f"SELECT {key}, o.ts, NULL, o.value FROM {_q(conn, text)} o {join}")
    conn.exec_driver_sql(f"DROP TABLE {_q(conn, old)}")
    conn.exec_driver_sql(f"DROP TABLE {_q(conn, text)}")
    op.create_index(f"{p}ix_samples_device_ts", samples, ["device_id", "ts"])
    conn.exec_driver_sql(f"DROP TABLE {_q(conn, series)}")
