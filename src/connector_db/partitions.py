"""Time partitions of the writer's tables (MariaDB/MySQL and PostgreSQL).

Samples, alarm history, thresholds and notifications are
range-partitioned on ``ts`` (UNIX milliseconds) by the migrations (0002,
0004), which also make the first partitions; the same functions here then
serve every such table. Partition bounds made here are multiples of the span
since the epoch (UTC midnights for whole days), and a partition is named
after its lower bound: ``p20261206_0000`` on MariaDB,
``<table>_p20261206_0000`` on PostgreSQL (partitions are tables there, in
the same namespace as the others).

Never an insert into a missing partition: besides the partitions made ahead
of time (:func:`ensure_ahead`, run by ``centaure db maintain`` and hourly by
the writer), a catch-all partition takes any row beyond them (MariaDB:
``pfuture VALUES LESS THAN MAXVALUE``; PostgreSQL: ``<table>_pdefault``, the
DEFAULT partition, which also takes rows older than the oldest partition
once that has been dropped). When a new partition is cut out of the
catch-all, rows already there for its range move into it: MariaDB's
``REORGANIZE PARTITION`` does it; on PostgreSQL they are moved in the same
transaction. A catch-all only holds rows when the clock jumped or
maintenance did not run, so this is normally instant. (Without it, MariaDB's
``INSERT IGNORE`` would silently skip a row that has no partition.)

Old data goes by dropping whole partitions whose upper bound is at or
before the cutoff (:func:`drop_before`): a file or table dropped, not rows
deleted. On PostgreSQL old rows of the DEFAULT partition are deleted.

Identifiers are the validated table name (prefix matched by ``PREFIX_RE``)
and names made here from numbers, quoted by the dialect; bounds are
integers formatted here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone

import sqlalchemy as sa

__all__ = ["Partition", "is_partitioned", "partitions", "ensure_ahead", "drop_before",
           "partition_name", "DAY_MS"]

DAY_MS = 86_400_000
_TABLE_RE = re.compile(r"^[a-z][a-z0-9_]{0,60}$")
_PG_BOUND_RE = re.compile(
    r"FOR VALUES FROM \('?(MINVALUE|-?[0-9]+)'?\) TO \('?(MAXVALUE|-?[0-9]+)'?\)")


@dataclass(frozen=True)
class Partition:
    """One partition: ``lower`` and ``upper`` in ms (None: unbounded); ``catch_all`` for
    MariaDB's MAXVALUE and PostgreSQL's DEFAULT partition."""

    name: str
    lower: int | None
    upper: int | None
    catch_all: bool = False


def _check(table: str) -> str:
    if not _TABLE_RE.match(table):
        raise ValueError(f"invalid table name {table!r}")
    return table


def _q(conn: sa.Connection, name: str) -> str:
    return conn.dialect.identifier_preparer.quote(name)


def _mysql(conn: sa.Connection) -> bool:
    return conn.dialect.name in ("mysql", "mariadb")


def partition_name(table: str, lower_ms: int, dialect: str) -> str:
    """The name of the partition whose range starts at ``lower_ms``."""
    stamp = datetime.fromtimestamp(lower_ms / 1000, timezone.utc).strftime("%Y%m%d_%H%M")
    return f"p{stamp}" if dialect in ("mysql", "mariadb") else f"{table}_p{stamp}"


def _default_name(table: str) -> str:
    return f"{table}_pdefault"


def is_partitioned(conn: sa.Connection, table: str) -> bool:
    """True when ``table`` is partitioned (MariaDB/MySQL, PostgreSQL); False elsewhere."""
    _check(table)
    if _mysql(conn):
        return conn.execute(sa.text(
            "SELECT COUNT(*) FROM information_schema.partitions WHERE table_schema = DATABASE() "
            "AND table_name = :t AND partition_name IS NOT NULL"), {"t": table}).scalar_one() > 0
    if conn.dialect.name == "postgresql":
        return conn.execute(sa.text(
            "SELECT COUNT(*) FROM pg_partitioned_table "
            "WHERE partrelid = to_regclass(quote_ident(:t))"), {"t": table}).scalar_one() > 0
    return False


def partitions(conn: sa.Connection, table: str) -> list[Partition]:
    """The partitions of ``table``, bounded ones by upper bound, then the catch-all."""
    _check(table)
    found: list[Partition] = []
    if _mysql(conn):
        rows = conn.execute(sa.text(
            "SELECT partition_name, partition_description FROM information_schema.partitions "
            "WHERE table_schema = DATABASE() AND table_name = :t AND partition_name IS NOT NULL "
            "ORDER BY partition_ordinal_position"), {"t": table}).all()
        lower = None
        for name, desc in rows:
            if str(desc).upper() == "MAXVALUE":
                found.append(Partition(name, lower, None, True))
            else:
                upper = int(desc)
                found.append(Partition(name, lower, upper))
                lower = upper
    elif conn.dialect.name == "postgresql":
        rows = conn.execute(sa.text(
            "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
            "JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = to_regclass(quote_ident(:t))"), {"t": table}).all()
        for name, bound in rows:
            if bound.strip().upper() == "DEFAULT":
                found.append(Partition(name, None, None, True))
                continue
            m = _PG_BOUND_RE.search(bound)
            if not m:
                raise ValueError(f"partition {name} of {table}: unexpected bound {bound!r}")
            lo, hi = m.groups()
            found.append(Partition(name, None if lo == "MINVALUE" else int(lo),
                                   None if hi == "MAXVALUE" else int(hi)))
    bounded = sorted((p for p in found if not p.catch_all),
                     key=lambda p: (p.upper is None, p.upper or 0))
    return bounded + [p for p in found if p.catch_all]


def _bounds_after(start: int, until: int, span: int) -> list[int]:
    """Upper bounds after ``start``: multiples of ``span``, up to the first beyond ``until``."""
    bounds = []
    b = (start // span + 1) * span
    while True:
        bounds.append(b)
        if b > until:
            return bounds
        b += span


def ensure_ahead(conn: sa.Connection, table: str, now_ms: int, span_ms: int,
                 ahead_ms: int) -> list[str]:
    """Make partitions of ``table`` cover up to ``now_ms + ahead_ms``; the names created.

    Runs in the caller's transaction on PostgreSQL (DDL is transactional
    there); on MariaDB each ALTER commits on its own. Idempotent.
    """
    _check(table)
    parts = partitions(conn, table)
    bounded = [p for p in parts if p.upper is not None]
    until = now_ms + ahead_ms
    last = bounded[-1].upper if bounded else None
    if last is not None and last > until:
        return []
    # No bounded partition yet: the first is the span holding now.
    start = last if last is not None else (now_ms // span_ms) * span_ms
    ranges, lower = [], start
    for upper in _bounds_after(start, until, span_ms):
        ranges.append((lower, upper))
        lower = upper
    if _mysql(conn):
        return _mysql_add(conn, table, parts, ranges)
    return _pg_add(conn, table, parts, ranges)


def _mysql_add(conn, table, parts, ranges) -> list[str]:
    names = [partition_name(table, lo, "mysql") for lo, _ in ranges]
    defs = ", ".join(f"PARTITION {_q(conn, n)} VALUES LESS THAN ({int(hi)})"
                     for n, (_, hi) in zip(names, ranges))
    future = [p for p in parts if p.catch_all]
    if future:
        f = _q(conn, future[0].name)
        conn.exec_driver_sql(
            f"ALTER TABLE {_q(conn, table)} REORGANIZE PARTITION {f} INTO "
            f"({defs}, PARTITION {f} VALUES LESS THAN MAXVALUE)")
    else:
        conn.exec_driver_sql(f"ALTER TABLE {_q(conn, table)} ADD PARTITION ({defs})")
    return names


def _pg_add(conn, table, parts, ranges) -> list[str]:
    t = _q(conn, table)
    default = next((p for p in parts if p.catch_all), None)
    moved = False
    if default is not None:
        lo, hi = ranges[0][0], ranges[-1][1]
        d = _q(conn, default.name)
        # Rows the DEFAULT partition holds for the new ranges must move out first:
        # PostgreSQL refuses a partition whose rows sit in the default one.
        if conn.exec_driver_sql(
                f"SELECT 1 FROM {d} WHERE ts >= %(lo)s AND ts < %(hi)s LIMIT 1",
                {"lo": lo, "hi": hi}).first() is not None:
            moved = True
            conn.exec_driver_sql(
                "CREATE TEMPORARY TABLE centaure_moving (LIKE " + t + ") ON COMMIT DROP")
            conn.exec_driver_sql(
                f"WITH m AS (DELETE FROM {d} WHERE ts >= %(lo)s AND ts < %(hi)s RETURNING *) "
                "INSERT INTO centaure_moving SELECT * FROM m", {"lo": lo, "hi": hi})
    names = []
    for lo, hi in ranges:
        name = partition_name(table, lo, "postgresql")
        conn.exec_driver_sql(
            f"CREATE TABLE {_q(conn, name)} PARTITION OF {t} "
            f"FOR VALUES FROM ({int(lo)}) TO ({int(hi)})")
        names.append(name)
    if default is None:
        conn.exec_driver_sql(
            f"CREATE TABLE {_q(conn, _default_name(table))} PARTITION OF {t} DEFAULT")
    if moved:
        conn.exec_driver_sql(f"INSERT INTO {t} SELECT * FROM centaure_moving")
        conn.exec_driver_sql("DROP TABLE centaure_moving")
    return names


def drop_before(conn: sa.Connection, table: str, cutoff_ms: int) -> list[str]:
    """Drop the partitions of ``table`` holding only rows older than ``cutoff_ms``; their names.

    On PostgreSQL, rows of the DEFAULT partition older than the cutoff are
    deleted too (rows that arrived older than the oldest partition).
    """
    _check(table)
    parts = partitions(conn, table)
    old = [p for p in parts if p.upper is not None and p.upper <= cutoff_ms]
    if _mysql(conn):
        if old:
            conn.exec_driver_sql(f"ALTER TABLE {_q(conn, table)} DROP PARTITION "
                                 + ", ".join(_q(conn, p.name) for p in old))
    else:
        for p in old:
            conn.exec_driver_sql(f"DROP TABLE {_q(conn, p.name)}")
        default = next((p for p in parts if p.catch_all), None)
        if default is not None:
            conn.exec_driver_sql(f"DELETE FROM {_q(conn, default.name)} WHERE ts < %(c)s",
                                 {"c": cutoff_ms})
    return [p.name for p in old]
