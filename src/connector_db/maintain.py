"""``centaure db maintain``: old rows go, time partitions are made ahead.

One pass, with the ``[retention]`` settings:

1. samples, alarm history, thresholds and notifications, each when
   partitioned (MariaDB/MySQL, PostgreSQL: migrations 0002 and 0004):
   partitions are made up to ``partitions_ahead`` from now, then those whose
   every row is older than the table's setting (``samples``,
   ``alarm_history``, ...) are dropped (whole partitions: no row-by-row delete, no table
   rewrite);
2. samples elsewhere (SQLite, a table made without the migrations), and
   text samples (``samples_text``, never partitioned: few rows): rows older
   than ``samples`` are deleted in transactions of about ``delete_batch``
   rows, series by series (the primary key ``(series_id, ts)`` finds them);
3. rollups (:mod:`connector_db.rollups`): closed 5-minute and hourly
   intervals not built yet are rolled up, before raw rows go; rollups older
   than ``rollups_5m`` and ``rollups_1h`` are deleted in batches;
4. events (never partitioned: unique by ``message_id`` alone), and alarm
   history, thresholds and notifications elsewhere (SQLite, tables made
   without the migrations): rows older than their setting are
   deleted in batches, oldest ids first (each batch is a range of ids).

With ``[db] layout = per_device`` the samples are in the tables of that
layout (those the writer created, in its registry, and ``per_device_tables``):
they cannot be partitioned (they are the user's), so their rows older than
``samples`` are deleted in batches, table by table, on the time column of
``table_struct`` (source ``ts`` or ``ts_ms``); no rollups are built for them.

The writer's ``alarms`` table (the latest state of each alarm) is not
touched.

Idempotent: a second pass right after finds nothing to do. Two passes at
once (two nodes' timers): the pass holds a lock on the database for its
duration (MariaDB/MySQL ``GET_LOCK``, PostgreSQL a session advisory lock,
both named after the table prefix); the second waits up to ``lock_timeout``
for the first to finish, then finds nothing left to do. The SQL writer's
hourly check of partitions takes the same lock without waiting (if a pass
holds it, that pass makes them). SQLite needs no lock: its batches are
serialized by the database, and deleting rows twice is harmless.
"""

from __future__ import annotations

import hashlib
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import sqlalchemy as sa

from centaure_shared.storage.schema import Schema

from . import partitions, rollups

__all__ = ["Retention", "MaintainLockTimeout", "MaintainReport", "PerDeviceTables", "maintain",
           "maintenance_lock",
           "ensure_partitions", "maintain_command", "LOCK_NAMESPACE"]

#: The lock's name is ``<namespace>:<table prefix>``.
LOCK_NAMESPACE = "centaure-maintain"
_DAY = 86400.0
#: The tables of keyed messages, each kept as long as the ``[retention]`` setting of its name.
_KEYED = ("events", "alarm_history", "thresholds", "notifications")


@dataclass(frozen=True)
class Retention:
    """How long rows are kept (seconds) and how partitions and batches are sized."""

    samples: float = 14 * _DAY
    events: float = 90 * _DAY
    alarm_history: float = 365 * _DAY
    thresholds: float = 90 * _DAY
    notifications: float = 365 * _DAY
    rollups_5m: float = 90 * _DAY
    rollups_1h: float = 730 * _DAY
    partition_span: float = _DAY
    partitions_ahead: float = 3 * _DAY
    delete_batch: int = 5000
    lock_timeout: float = 600.0

    @classmethod
    def from_settings(cls, section) -> Retention:
        """From the ``[retention]`` section."""
        return cls(**{f: getattr(section, f) for f in cls.__dataclass_fields__})


@dataclass
class MaintainReport:
    """What one pass did: partitions made and dropped (every table's, and by table),
    rows deleted and rolled up by table."""

    created: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    created_in: dict[str, list[str]] = field(default_factory=dict)
    dropped_from: dict[str, list[str]] = field(default_factory=dict)
    deleted: dict[str, int] = field(default_factory=dict)
    rolled_up: dict[str, int] = field(default_factory=dict)
    waited: float = 0.0


class MaintainLockTimeout(RuntimeError):
    """Another pass held the maintenance lock longer than ``lock_timeout``."""


def _lock_key(name: str) -> int:
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big",
                          signed=True)


@contextmanager
def maintenance_lock(engine: sa.Engine, prefix: str, timeout: float | None) -> Iterator[bool]:
    """Hold the maintenance lock of layout ``prefix``; yields whether it was taken.

    ``timeout`` None: do not wait (yields False when another holds it);
    otherwise wait up to ``timeout`` seconds, then raise
    :class:`MaintainLockTimeout`. The lock lives on a connection of its own
    for the whole ``with`` block. Dialects without locks always yield True.
    """
    name = f"{LOCK_NAMESPACE}:{prefix}"
    dialect = engine.dialect.name
    if dialect not in ("mysql", "mariadb", "postgresql"):
        yield True
        return
    conn = engine.connect()
    taken = False
    try:
        if dialect == "postgresql":
            key = _lock_key(name)
            deadline = time.monotonic() + (timeout or 0)
            while True:
                taken = bool(conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"),
                                          {"k": key}).scalar())
                conn.commit()  # a session lock: kept without an open transaction
                if taken or timeout is None or time.monotonic() >= deadline:
                    break
                time.sleep(0.2)
        else:
            taken = conn.execute(sa.text("SELECT GET_LOCK(:n, :t)"),
                                 {"n": name, "t": 0 if timeout is None else timeout}
                                 ).scalar() == 1
            conn.commit()
        if not taken and timeout is not None:
            raise MaintainLockTimeout(
                f"another 'centaure db maintain' of tables prefixed {prefix!r} has held the lock "
                f"{name!r} for over {timeout:g}s ([retention] lock_timeout); try again later")
        yield taken
    finally:
        try:
            if taken:
                if dialect == "postgresql":
                    conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": _lock_key(name)})
                else:
                    conn.execute(sa.text("SELECT RELEASE_LOCK(:n)"), {"n": name})
                conn.commit()
            conn.close()
        except sa.exc.SQLAlchemyError:
            conn.invalidate()  # closing the session frees its lock


def _ms(seconds: float) -> int:
    return int(round(seconds * 1000))


def _ensure(engine: sa.Engine, table: str, retention: Retention, now: float) -> list[str] | None:
    """Partitions of ``table`` made up to ``partitions_ahead``; None if it is not partitioned."""
    with engine.begin() as conn:
        if not partitions.is_partitioned(conn, table):
            return None
        return partitions.ensure_ahead(conn, table, _ms(now), _ms(retention.partition_span),
                                       _ms(retention.partitions_ahead))


def ensure_partitions(engine: sa.Engine, schema: Schema, retention: Retention,
                      now: float | None = None) -> list[str] | None:
    """The writer's hourly check: partitions made ahead for every partitioned table, as
    ``<partition> of <table>``; None if a maintenance pass runs.

    Does not wait for the lock: a maintenance pass holding it makes them.
    """
    now = time.time() if now is None else now
    with maintenance_lock(engine, schema.prefix, None) as taken:
        if not taken:
            return None
        made = []
        for name in ("samples", *_KEYED):
            table = getattr(schema, name).name
            made += [f"{p} of {table}" for p in _ensure(engine, table, retention, now) or ()]
        return made


@dataclass(frozen=True)
class PerDeviceTables:
    """Where the per_device layout keeps samples: ``tables`` (checked SQL identifiers),
    their time ``column`` and its unit (1: seconds, 1000: milliseconds)."""

    tables: tuple[str, ...]
    column: str
    per_second: int

    @classmethod
    def from_settings(cls, engine: sa.Engine, db) -> PerDeviceTables:
        """The registry's tables and ``per_device_tables`` of ``[db]`` that exist."""
        from connector.settings import SQL_IDENTIFIER

        from .per_device import REGISTRY_SUFFIX

        ts = next(c for c in db.table_struct if c.source in ("ts", "ts_ms"))
        registry = db.table_prefix + REGISTRY_SUFFIX
        with engine.connect() as conn:
            insp = sa.inspect(conn)
            names = list(db.per_device_tables)
            if insp.has_table(registry):
                names += conn.execute(sa.text(
                    f"SELECT table_name FROM {conn.dialect.identifier_preparer.quote(registry)}"
                )).scalars().all()
            found = [n for n in dict.fromkeys(names)
                     if SQL_IDENTIFIER.fullmatch(n) and insp.has_table(n)]
        return cls(tuple(found), ts.name, 1000 if ts.source == "ts_ms" else 1)


def maintain(engine: sa.Engine, schema: Schema, retention: Retention, *,
             now: float | None = None, samples: bool = True,
             per_device: PerDeviceTables | None = None,
             progress: Callable[[str], None] = lambda line: None) -> MaintainReport:
    """One maintenance pass over layout ``schema``; ``progress`` gets a line per step.

    ``samples`` False leaves the normalized samples alone (``[db] layout =
    per_device``, whose tables ``per_device`` names).
    """
    now = time.time() if now is None else now
    report = MaintainReport()
    started = time.monotonic()
    with maintenance_lock(engine, schema.prefix, retention.lock_timeout):
        report.waited = time.monotonic() - started
        if report.waited >= 1:
            progress(f"waited {report.waited:.0f}s for another maintenance pass to finish")
        if samples:
            # Before raw rows go: the intervals they hold are summarized first.
            report.rolled_up = rollups.build(engine, schema, _ms(now), progress=progress)
            _samples(engine, schema, retention, now, report, progress)
            _samples_text(engine, schema, retention, now, report, progress)
            for table, keep in ((schema.rollups_5m, retention.rollups_5m),
                                (schema.rollups_1h, retention.rollups_1h)):
                n = _delete_series(engine, schema, table, _ms(now - keep),
                                   retention.delete_batch, progress)
                report.deleted[table.name] = n
                progress(f"{table.name}: {n} rows older than {_days(keep)} deleted")
        if per_device is not None:
            cutoff = int((now - retention.samples) * per_device.per_second)
            n = 0
            for name in per_device.tables:
                t = sa.table(name, sa.column(per_device.column))
                n += _delete_old(engine, t, t.c[per_device.column], None, cutoff,
                                 retention.delete_batch, progress)
            report.deleted["per_device"] = n
            progress(f"per_device: {n} rows older than {_days(retention.samples)} deleted "
                     f"from {len(per_device.tables)} tables")
        for name in _KEYED:
            table, keep = getattr(schema, name), getattr(retention, name)
            if _partitions(engine, table.name, keep, retention, now, report, progress):
                continue
            n = _delete_by_id(engine, table, _ms(now - keep), retention.delete_batch, progress)
            report.deleted[table.name] = n
            progress(f"{table.name}: {n} rows older than {_days(keep)} deleted")
    return report


def _days(seconds: float) -> str:
    from connector.settings import format_duration

    return format_duration(seconds)


def _partitions(engine, table: str, keep: float, retention, now, report, progress) -> bool:
    """Partitions of ``table`` made ahead, those holding only rows older than ``keep``
    dropped; False (nothing done) when ``table`` is not partitioned."""
    created = _ensure(engine, table, retention, now)
    if created is None:
        return False
    report.created += created
    report.created_in[table] = created
    progress(f"{table}: partitions made ahead: {', '.join(created) if created else 'none needed'}")
    with engine.begin() as conn:
        dropped = partitions.drop_before(conn, table, _ms(now - keep))
    report.dropped += dropped
    report.dropped_from[table] = dropped
    progress(f"{table}: partitions older than {_days(keep)} dropped: "
             f"{', '.join(dropped) if dropped else 'none'}")
    return True


def _samples(engine, schema, retention, now, report, progress) -> None:
    table = schema.samples.name
    cutoff = _ms(now - retention.samples)
    if _partitions(engine, table, retention.samples, retention, now, report, progress):
        return
    n = _delete_series(engine, schema, schema.samples, cutoff, retention.delete_batch, progress)
    report.deleted[table] = n
    progress(f"{table}: {n} rows older than {_days(retention.samples)} deleted")


def _samples_text(engine, schema, retention, now, report, progress) -> None:
    table = schema.samples_text
    n = _delete_series(engine, schema, table, _ms(now - retention.samples),
                       retention.delete_batch, progress)
    report.deleted[table.name] = n
    progress(f"{table.name}: {n} rows older than {_days(retention.samples)} deleted")


def _delete_series(engine, schema, s: sa.Table, cutoff: int, batch: int, progress) -> int:
    """Batched deletes of old rows of samples, text samples or rollups, series by series
    along their primary key (series_id, ts), about ``batch`` rows a transaction."""
    total = 0
    with engine.connect() as conn:
        series = conn.execute(sa.select(schema.series.c.id).order_by(
            schema.series.c.id)).scalars().all()
    # A device's worth of series a statement (as many as a fleet has devices, not one
    # statement per series); few enough that finding a batch's last row sorts few rows.
    for i in range(0, len(series), 64):
        group = list(series[i:i + 64])
        total += _delete_old(engine, s, s.c.ts, s.c.series_id.in_(group), cutoff, batch,
                             progress, total)
    return total


def _delete_old(engine, t, ts, where, cutoff: int, batch: int, progress, before: int = 0) -> int:
    """Delete rows of ``t`` (``where``) with ``ts`` below ``cutoff``, about ``batch`` a time."""
    total, shown = 0, time.monotonic()
    scope = (lambda *c: sa.and_(where, *c)) if where is not None else sa.and_
    while True:
        with engine.begin() as conn:
            # The time of the batch's last row: its rows, and that time's other rows.
            last = conn.execute(sa.select(ts).where(scope(ts < cutoff)).order_by(ts)
                                .offset(batch - 1).limit(1)).scalar()
            cond = scope(ts < cutoff) if last is None else scope(ts <= last)
            total += conn.execute(sa.delete(t).where(cond)).rowcount or 0
        if time.monotonic() - shown >= 5:
            progress(f"{t.name}: {before + total} rows deleted so far")
            shown = time.monotonic()
        if last is None:
            return total


def _delete_by_id(engine, table: sa.Table, cutoff: int, batch: int, progress) -> int:
    """Batched deletes of rows older than ``cutoff``, oldest ids first, a key range each."""
    total, shown = 0, time.monotonic()
    while True:
        with engine.begin() as conn:
            ids = (sa.select(table.c.id).where(table.c.ts < cutoff).order_by(table.c.id)
                   .limit(batch).subquery())
            top = conn.execute(sa.select(sa.func.max(ids.c.id))).scalar()
            if top is None:
                return total
            total += conn.execute(sa.delete(table).where(
                table.c.id <= top, table.c.ts < cutoff)).rowcount or 0
        if time.monotonic() - shown >= 5:
            progress(f"{table.name}: {total} rows deleted so far")
            shown = time.monotonic()


def maintain_command(settings) -> int:
    """``centaure db maintain``: one pass, a line per step; the exit code (1 on any error)."""
    from connector.settings import mask_url
    from connector.sqlmigrate import error_line

    from centaure_shared.storage.schema import make_schema

    from .migrate import MIGRATIONS, SchemaOutOfDate

    url = settings.database.url.reveal()
    shown = mask_url(url)
    db = settings.section("db")
    retention = Retention.from_settings(settings.section("retention"))

    def fail(message: str) -> int:
        print(f"centaure db maintain: {message}", file=sys.stderr)
        return 1

    try:
        engine = sa.create_engine(url)
    except (sa.exc.SQLAlchemyError, ImportError, ValueError) as e:
        return fail(f"cannot use {shown}: {error_line(e, url)}")
    try:
        MIGRATIONS.check(engine, db.table_prefix, settings.source or "settings.ini")
        print(f"maintaining {shown} (prefix {db.table_prefix!r})", flush=True)
        started = time.monotonic()
        per_device = (None if db.layout == "normalized"
                      else PerDeviceTables.from_settings(engine, db))
        maintain(engine, make_schema(db.table_prefix), retention,
                 samples=db.layout == "normalized", per_device=per_device,
                 progress=lambda line: print(line, flush=True))
        print(f"done in {time.monotonic() - started:.1f}s")
        return 0
    except (SchemaOutOfDate, MaintainLockTimeout) as e:
        return fail(str(e))
    except (sa.exc.SQLAlchemyError, ValueError) as e:
        return fail(f"{shown}: {error_line(e, url)}")
    finally:
        engine.dispose()
