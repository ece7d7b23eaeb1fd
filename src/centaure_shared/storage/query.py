"""Reading back what the SQL writer stored: samples, devices, events, alarms.

The Python API behind ``centaure query``, the demo's live view and the
alerter's backfill. Pure SQLAlchemy Core over the normalized layout of
:mod:`centaure_shared.storage.schema` (and, for samples, over the per_device layout's
tables, whose names are filled in from the template and checked); every
value is a bound parameter.

**Blocking**: each function opens a connection from ``engine`` and runs its
SQL on the calling thread. Twisted code must never call them on the reactor
thread: use ``twisted.internet.threads.deferToThread`` (or a thread pool of
its own), e.g. ``await threads.deferToThread(latest_samples, engine, schema)``.

Times are UNIX seconds (floats) in and out; the tables keep milliseconds, so
a time is rounded to the millisecond before it is compared. Time ranges are
inclusive at both ends. Rows are frozen dataclasses.

Problems the caller can fix (a host or metric that is not in the database, a
bad argument, tables that were never created) raise :class:`QueryError`, a
``ValueError`` whose ``str()`` is one line for an operator. A database that
cannot be reached raises SQLAlchemy's own errors.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from typing import Any, TypeVar

import sqlalchemy as sa

from connector.settings import mask_url

from centaure_shared.storage.schema import Schema

__all__ = [
    "QueryError",
    "SampleRow",
    "DeviceRow",
    "EventRow",
    "AlarmRow",
    "NotificationRow",
    "RollupRow",
    "RESOLUTIONS",
    "notifications",
    "rollups",
    "pick_resolution",
    "samples",
    "latest_samples",
    "devices",
    "events",
    "alarms",
    "check_limit",
    "check_order",
    "names_text",
    "suggest",
    "time_range",
    "iso_time",
]

T = TypeVar("T")

# How many names an error message lists, at most.
_KNOWN_MAX = 10


class QueryError(ValueError):
    """A query that cannot be answered as asked; ``str()`` says why, in one line."""


@dataclasses.dataclass(frozen=True)
class SampleRow:
    """One stored sample: ``value`` is a float, a text, or None (no value polled)."""

    host: str
    metric: str
    kind: str
    unit: str | None
    index: str
    ts: float
    value: float | str | None


@dataclasses.dataclass(frozen=True)
class DeviceRow:
    """A device that has samples; ``last_ts`` is its newest sample's time (None: none kept)."""

    name: str
    address: str | None
    device_type: str | None
    last_ts: float | None


@dataclasses.dataclass(frozen=True)
class EventRow:
    """A stored trap or inform; ``varbinds`` are dicts (oid, name, type, value)."""

    ts: float
    host: str
    address: str
    name: str
    severity: str
    action: str
    message: str
    trap_oid: str
    # Dicts are not hashable: leave them out of the row's hash (not of ==).
    varbinds: tuple[dict[str, Any], ...] = dataclasses.field(hash=False)
    snmp_version: str = ""
    alarm: str | None = None
    key: str = ""
    unknown_sender: bool = False


@dataclasses.dataclass(frozen=True)
class NotificationRow:
    """One notification attempt of the alerter (the delivery ledger)."""

    ts: float
    host: str | None
    ref: int | None
    rule: str | None
    channel: str
    recipient: str
    state: str
    attempts: int
    reason: str | None


@dataclasses.dataclass(frozen=True)
class AlarmRow:
    """The current state of one alarm (times in UNIX seconds)."""

    ref: int
    host: str
    name: str
    severity: str
    state: str
    message: str
    first_seen: float
    last_seen: float
    cleared_at: float | None
    count: int
    origin: str
    acked_by: str | None
    flapping: bool
    cause_ref: int | None = None


@dataclasses.dataclass(frozen=True)
class RollupRow:
    """One 5-minute or hourly summary of a series: ``ts`` is the interval's start.

    A counter's figures are those of its rates per second.
    """

    host: str
    metric: str
    kind: str
    unit: str | None
    index: str
    ts: float
    min: float
    max: float
    avg: float
    count: int
    last: float
    resolution: str


#: Rollup resolutions and their intervals (seconds).
RESOLUTIONS = {"5m": 300.0, "1h": 3600.0}
# auto: raw rows up to this range, 5-minute rows up to the next, hourly beyond.
_AUTO_RAW_MAX = 6 * 3600.0
_AUTO_5M_MAX = 7 * 86400.0


def pick_resolution(start: float | None, end: float | None, now: float) -> str:
    """``raw``, ``5m`` or ``1h`` for a time range: raw up to 6 hours (or no start),
    5-minute rollups up to 7 days, hourly beyond (720 points for 30 days)."""
    if start is None:
        return "raw"
    span = (now if end is None else end) - start
    if span <= _AUTO_RAW_MAX:
        return "raw"
    return "5m" if span <= _AUTO_5M_MAX else "1h"


# --- public queries -------------------------------------------------------------------


def rollups(engine: sa.Engine, schema: Schema, host: str, metric: str | None = None,
            index: str | None = None, start: float | None = None, end: float | None = None,
            limit: int = 100, order: str = "desc", resolution: str = "1h") -> list[RollupRow]:
    """The ``resolution`` (``5m`` or ``1h``) rollups of ``host``, as :func:`samples` reads
    raw rows (same arguments and errors); an interval is in range when its start is."""
    check_limit(limit)
    check_order(order)
    if resolution not in RESOLUTIONS:
        raise QueryError(f"resolution {resolution!r}: expected one of {', '.join(RESOLUTIONS)}")
    start_ms, end_ms = time_range(start, end)
    r = schema.rollups_5m if resolution == "5m" else schema.rollups_1h
    m, se = schema.metrics, schema.series
    index = None if index is None else str(index)

    def run(conn: sa.Connection) -> list[RollupRow]:
        device_id = _device_id(conn, schema, host)
        stmt = (sa.select(m.c.name, m.c.kind, m.c.unit, se.c.idx, r.c.ts, r.c.min_value,
                          r.c.max_value, r.c.avg_value, r.c.value_count, r.c.last_value)
                .join_from(r, se, se.c.id == r.c.series_id)
                .join(m, m.c.id == se.c.metric_id)
                .where(se.c.device_id == device_id))
        if metric is not None:
            ids = list(conn.execute(sa.select(m.c.id).where(m.c.name == metric)).scalars())
            if not ids:
                _unknown_metric(conn, schema, host, device_id, metric)
            stmt = stmt.where(se.c.metric_id.in_(ids))
        if index is not None:
            stmt = stmt.where(se.c.idx == index)
        stmt = _where_range(stmt, r.c.ts, start_ms, end_ms)
        ts_order = r.c.ts.desc() if order == "desc" else r.c.ts.asc()
        stmt = stmt.order_by(ts_order, m.c.name, m.c.kind, se.c.idx).limit(limit)
        return [RollupRow(host, name, kind, unit, idx, ts / 1000.0, mn, mx, av, n, last,
                          resolution)
                for name, kind, unit, idx, ts, mn, mx, av, n, last in conn.execute(stmt)]

    return _read(engine, schema, (schema.devices, r, m, se), run)



def samples(engine: sa.Engine, schema: Schema, host: str, metric: str | None = None,
            index: str | None = None, start: float | None = None, end: float | None = None,
            limit: int = 100, order: str = "desc",
            metrics: Iterable[str] | None = None) -> list[SampleRow]:
    """Samples of ``host`` (optionally one metric, one index, a time range).

    ``order="desc"`` gives the newest first, and ``limit`` keeps the first
    rows in that order (so ``asc`` with a limit gives the oldest ones).
    QueryError for an unknown host, or a metric this host never had.
    ``metrics`` instead of ``metric``: the samples of any of these names, in
    one query; a name never stored simply gives no rows (a replay asks for
    every metric its rules watch, whichever ones this host has).
    """
    check_limit(limit)
    check_order(order)
    if metric is not None and metrics is not None:
        raise QueryError("give metric or metrics, not both")
    start_ms, end_ms = time_range(start, end)
    m, se = schema.metrics, schema.series
    index = None if index is None else str(index)
    names = None if metrics is None else sorted(set(metrics))

    def run(conn: sa.Connection) -> list[SampleRow]:
        device_id = _device_id(conn, schema, host)
        metric_ids: list[int] | None = None
        if metric is not None:
            # One name may exist under several kinds (the unique key is name + kind).
            metric_ids = list(conn.execute(
                sa.select(m.c.id).where(m.c.name == metric)).scalars())
            if not metric_ids:
                _unknown_metric(conn, schema, host, device_id, metric)
        elif names == []:
            return []
        # The series asked for, found on the unique key (device_id, metric_id, idx).
        wanted = sa.select(se.c.id).where(se.c.device_id == device_id)
        if metric_ids is not None:
            wanted = wanted.where(se.c.metric_id.in_(metric_ids))
        elif names is not None:
            wanted = wanted.where(se.c.metric_id.in_(sa.select(m.c.id).where(m.c.name.in_(names))))
        any_index = wanted
        if index is not None:
            wanted = wanted.where(se.c.idx == index)
        both = _both(schema, lambda t: _where_range(
            sa.select(t.c.series_id, t.c.ts, *_values(schema, t))
            .where(t.c.series_id.in_(wanted)), t.c.ts, start_ms, end_ms)).subquery("u")
        stmt = (sa.select(m.c.name, m.c.kind, m.c.unit, se.c.idx, both.c.ts, both.c.num,
                          both.c.text)
                .join_from(both, se, se.c.id == both.c.series_id)
                .join(m, m.c.id == se.c.metric_id))
        ts_order = both.c.ts.desc() if order == "desc" else both.c.ts.asc()
        stmt = stmt.order_by(ts_order, m.c.name, m.c.kind, se.c.idx).limit(limit)
        rows = [SampleRow(host, name, kind, unit, idx, ts / 1000.0, _value(num, text))
                for name, kind, unit, idx, ts, num, text in conn.execute(stmt)]
        if not rows and metric is not None:
            # Nothing in range: tell a metric the host never had from a quiet one.
            # A primary-key seek per series of the metric.
            had = any(conn.execute(sa.select(t.c.ts).where(t.c.series_id.in_(any_index))
                                   .limit(1)).first()
                      for t in (schema.samples, schema.samples_text))
            if not had:
                _unknown_metric(conn, schema, host, device_id, metric)
        return rows

    return _read(engine, schema, (schema.devices, schema.samples, schema.samples_text, m, se),
                 run)


def _values(schema: Schema, t: sa.Table) -> tuple[sa.ColumnElement, sa.ColumnElement]:
    """(num, text) of a row of samples (a number) or of samples_text (a text or NULL)."""
    if t is schema.samples:
        return t.c.value.label("num"), sa.cast(sa.null(), schema.samples_text.c.value.type
                                               ).label("text")
    return sa.cast(sa.null(), schema.samples.c.value.type).label("num"), t.c.value.label("text")


def _both(schema: Schema, select: Callable[[sa.Table], sa.Select]) -> sa.CompoundSelect:
    """``select`` of samples UNION ALL the same of samples_text."""
    return sa.union_all(select(schema.samples), select(schema.samples_text))


def latest_samples(engine: sa.Engine, schema: Schema, host: str | None = None,
                   metrics: Iterable[str] | str | None = None,
                   limit: int = 1000) -> list[SampleRow]:
    """The newest sample of each (host, metric, index), for a live view.

    ``host`` None: every device (an unknown host is a QueryError).
    ``metrics``: names to keep (None: all); a name never stored simply gives
    no rows, so a view may ask for metrics not polled yet. Rows are sorted by
    host, metric, index; ``limit`` caps them.

    Per series, the newest number and the newest text are each one backward
    seek on a primary key ``(series_id, ts)`` (a correlated ``ORDER BY ts
    DESC LIMIT 1``), never a scan of the samples; the newer of the two wins.
    """
    check_limit(limit)
    if isinstance(metrics, str):
        metrics = [metrics]
    names = None if metrics is None else sorted(set(metrics))
    if names == []:
        return []
    d, m, se = schema.devices, schema.metrics, schema.series

    def newest(t: sa.Table, col: sa.Column) -> sa.ScalarSelect:
        return (sa.select(col).where(t.c.series_id == se.c.id).order_by(t.c.ts.desc())
                .limit(1).scalar_subquery())

    def run(conn: sa.Connection) -> list[SampleRow]:
        n, x = schema.samples, schema.samples_text
        per_series = sa.select(d.c.name.label("host"), m.c.name, m.c.kind, m.c.unit, se.c.idx,
                               newest(n, n.c.ts).label("num_ts"),
                               newest(n, n.c.value).label("num"),
                               newest(x, x.c.ts).label("text_ts"),
                               newest(x, x.c.value).label("text"))
        per_series = (per_series.join_from(se, d, d.c.id == se.c.device_id)
                      .join(m, m.c.id == se.c.metric_id))
        if host is not None:
            per_series = per_series.where(se.c.device_id == _device_id(conn, schema, host))
        if names is not None:
            per_series = per_series.where(m.c.name.in_(names))
        v = per_series.subquery("v")
        stmt = (sa.select(v).where(sa.or_(v.c.num_ts.is_not(None), v.c.text_ts.is_not(None)))
                .order_by(v.c.host, v.c.name, v.c.kind, v.c.idx).limit(limit))
        out = []
        for h, name, kind, unit, idx, num_ts, num, text_ts, text in conn.execute(stmt):
            if text_ts is None or (num_ts is not None and num_ts >= text_ts):
                out.append(SampleRow(h, name, kind, unit, idx, num_ts / 1000.0, num))
            else:
                out.append(SampleRow(h, name, kind, unit, idx, text_ts / 1000.0, text))
        return out

    return _read(engine, schema, (d, schema.samples, schema.samples_text, m, se), run)


def devices(engine: sa.Engine, schema: Schema) -> list[DeviceRow]:
    """Every device that was polled, by name, with the time of its newest sample.

    No sample count: counting is a scan of the samples; the newest time is one
    backward primary-key seek per series (numbers and texts).
    """
    d, se = schema.devices, schema.series

    def newest(t: sa.Table) -> sa.ScalarSelect:
        return (sa.select(t.c.ts).where(t.c.series_id == se.c.id).order_by(t.c.ts.desc())
                .limit(1).scalar_subquery())

    def run(conn: sa.Connection) -> list[DeviceRow]:
        per_series = sa.select(se.c.device_id, newest(schema.samples).label("a"),
                               newest(schema.samples_text).label("b")).subquery("per_series")
        per_device = (sa.select(per_series.c.device_id, sa.func.max(per_series.c.a).label("a"),
                                sa.func.max(per_series.c.b).label("b"))
                      .group_by(per_series.c.device_id).subquery("per_device"))
        stmt = (sa.select(d.c.name, d.c.address, d.c.device_type, per_device.c.a,
                          per_device.c.b)
                .outerjoin_from(d, per_device, per_device.c.device_id == d.c.id)
                .order_by(d.c.name))
        out = []
        for name, address, device_type, a, b in conn.execute(stmt):
            ts = max((x for x in (a, b) if x is not None), default=None)
            out.append(DeviceRow(name, address, device_type, None if ts is None else ts / 1000.0))
        return out

    return _read(engine, schema, (d, se, schema.samples, schema.samples_text), run)


def metric_names(engine: sa.Engine, schema: Schema) -> list[str]:
    """Every metric name ever stored (any device, any kind), sorted.

    Read from the metric dictionary table, not the samples: one small scan.
    """
    m = schema.metrics

    def run(conn: sa.Connection) -> list[str]:
        return sorted(set(conn.execute(sa.select(m.c.name)).scalars()))

    return _read(engine, schema, (m,), run)


def events(engine: sa.Engine, schema: Schema, host: str | None = None,
           start: float | None = None, end: float | None = None, limit: int = 100,
           order: str = "desc") -> list[EventRow]:
    """Stored traps and informs (optionally of one host, in a time range).

    ``host`` is the event's host (a device name, or the address of an unknown
    sender); a name found nowhere in the database is a QueryError.
    """
    check_limit(limit)
    check_order(order)
    start_ms, end_ms = time_range(start, end)
    e = schema.events

    def run(conn: sa.Connection) -> list[EventRow]:
        stmt = sa.select(e)
        if host is not None:
            stmt = stmt.where(e.c.host == host)
        stmt = _where_range(stmt, e.c.ts, start_ms, end_ms)
        if order == "desc":
            stmt = stmt.order_by(e.c.ts.desc(), e.c.id.desc())
        else:
            stmt = stmt.order_by(e.c.ts.asc(), e.c.id.asc())
        # Mappings, not rows: a Row is a tuple, whose count/index would shadow columns.
        rows = [EventRow(ts=r["ts"] / 1000.0, host=r["host"], address=r["address"],
                         name=r["name"], severity=r["severity"], action=r["action"],
                         message=r["message"], trap_oid=r["trap_oid"],
                         varbinds=_varbinds(r["varbinds"]), snmp_version=r["snmp_version"],
                         alarm=r["alarm"], key=r["key"],
                         unknown_sender=bool(r["unknown_sender"]))
                for r in conn.execute(stmt.limit(limit)).mappings()]
        if not rows and host is not None:
            _check_host_known(conn, schema, host)
        return rows

    return _read(engine, schema, (e,), run)


def notifications(engine: sa.Engine, schema: Schema, host: str | None = None,
                  start: float | None = None, end: float | None = None, limit: int = 100,
                  order: str = "desc") -> list[NotificationRow]:
    """The alerter's notification attempts (sent, failed, suppressed), optionally of one host."""
    check_limit(limit)
    check_order(order)
    start_ms, end_ms = time_range(start, end)
    n = schema.notifications

    def run(conn: sa.Connection) -> list[NotificationRow]:
        stmt = sa.select(n)
        if host is not None:
            stmt = stmt.where(n.c.host == host)
        stmt = _where_range(stmt, n.c.ts, start_ms, end_ms)
        direction = (sa.desc, sa.asc)[order == "asc"]
        stmt = stmt.order_by(direction(n.c.ts), direction(n.c.id))
        return [NotificationRow(ts=r["ts"] / 1000.0, host=r["host"], ref=r["ref"],
                                rule=r["rule"], channel=r["channel"], recipient=r["recipient"],
                                state=r["state"], attempts=r["attempts"], reason=r["reason"])
                for r in conn.execute(stmt.limit(limit)).mappings()]

    return _read(engine, schema, (n,), run)


def alarms(engine: sa.Engine, schema: Schema, host: str | None = None, active: bool = False,
           limit: int = 100) -> list[AlarmRow]:
    """The current state of alarms, the most recently seen first.

    ``active`` keeps those not cleared (raised or updated). A ``host`` found
    nowhere in the database is a QueryError.
    """
    check_limit(limit)
    a = schema.alarms

    def run(conn: sa.Connection) -> list[AlarmRow]:
        stmt = sa.select(a)
        if host is not None:
            stmt = stmt.where(a.c.host == host)
        if active:
            stmt = stmt.where(a.c.state != "cleared")
        stmt = stmt.order_by(a.c.last_seen.desc(), a.c.ref.asc()).limit(limit)
        rows = [AlarmRow(ref=r["ref"], host=r["host"], name=r["name"],
                         severity=r["severity"], state=r["state"], message=r["message"],
                         first_seen=r["first_seen"] / 1000.0,
                         last_seen=r["last_seen"] / 1000.0,
                         cleared_at=None if r["cleared_at"] is None
                         else r["cleared_at"] / 1000.0,
                         count=r["count"], origin=r["origin"], acked_by=r["acked_by"],
                         flapping=bool(r["flapping"]), cause_ref=r["cause_ref"])
                for r in conn.execute(stmt).mappings()]
        if not rows and host is not None:
            _check_host_known(conn, schema, host)
        return rows

    return _read(engine, schema, (a,), run)


# --- helpers ---------------------------------------------------------------------------


def iso_time(seconds: float) -> str:
    """``seconds`` as ISO 8601 UTC with milliseconds: ``2026-11-23T10:00:00.125Z``."""
    # Through whole milliseconds: what the tables hold, with no float noise.
    ms = int(round(seconds * 1000.0))
    whole = datetime.fromtimestamp(ms // 1000, tz=timezone.utc)
    return f"{whole:%Y-%m-%dT%H:%M:%S}.{ms % 1000:03d}Z"


def _value(num: float | None, text: str | None) -> float | str | None:
    return num if num is not None else text


def _varbinds(text: str) -> tuple[dict[str, Any], ...]:
    decoded = json.loads(text) if text else []
    return tuple(decoded)


def check_limit(limit: int) -> None:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise QueryError(f"limit must be a whole number of at least 1, not {limit!r}")


def check_order(order: str) -> None:
    if order not in ("asc", "desc"):
        raise QueryError(f"order must be 'asc' (oldest first) or 'desc' (newest first), "
                         f"not {order!r}")


def time_range(start: float | None, end: float | None) -> tuple[int | None, int | None]:
    """The range in milliseconds, checked: finite, start not after end."""
    out = []
    for what, value in (("start", start), ("end", end)):
        if value is None:
            out.append(None)
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value):
            raise QueryError(f"{what} must be a finite number of UNIX seconds, not {value!r}")
        # Rounded as the store rounds a message's ts: an exact bound matches.
        out.append(int(round(value * 1000.0)))
    if out[0] is not None and out[1] is not None and out[0] > out[1]:
        raise QueryError(f"the start of the time range ({iso_time(start)}) is after its end "
                         f"({iso_time(end)})")
    return out[0], out[1]


def _where_range(stmt: sa.Select, col: sa.ColumnElement, start_ms: int | None,
                 end_ms: int | None) -> sa.Select:
    if start_ms is not None:
        stmt = stmt.where(col >= start_ms)
    if end_ms is not None:
        stmt = stmt.where(col <= end_ms)
    return stmt


def names_text(names: list[str], what: str) -> str:
    """Up to _KNOWN_MAX names, and how many there are when that is not all."""
    shown = ", ".join(names[:_KNOWN_MAX])
    if len(names) > _KNOWN_MAX:
        shown += f", ... ({len(names)} {what} in all)"
    return shown


def suggest(wanted: str, names: list[str]) -> str:
    close = difflib.get_close_matches(wanted, names, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _unknown_host(host: str, names: list[str]) -> QueryError:
    names = sorted(set(names))
    if not names:
        return QueryError(f"no device named {host!r} in the database; it has no devices yet")
    return QueryError(f"no device named {host!r} in the database{suggest(host, names)}; "
                      f"known: {names_text(names, 'devices')}")


def _device_id(conn: sa.Connection, schema: Schema, host: str) -> int:
    d = schema.devices
    found = conn.execute(sa.select(d.c.id).where(d.c.name == host)).scalar()
    if found is None:
        raise _unknown_host(host, list(conn.execute(sa.select(d.c.name)).scalars()))
    return found


def _check_host_known(conn: sa.Connection, schema: Schema, host: str) -> None:
    """QueryError unless ``host`` is a device, or has events or alarms.

    Only called for an empty result: three index seeks, then (only for a
    name found nowhere) the names to suggest.
    """
    d, e, a = schema.devices, schema.events, schema.alarms
    for col in (d.c.name, e.c.host, a.c.host):
        if conn.execute(sa.select(sa.literal(1)).where(col == host).limit(1)).first():
            return
    names: list[str] = []
    for col in (d.c.name, e.c.host, a.c.host):
        names.extend(conn.execute(sa.select(col).distinct()).scalars())
    raise _unknown_host(host, names)


def _unknown_metric(conn: sa.Connection, schema: Schema, host: str, device_id: int,
                    metric: str) -> None:
    """Raise the QueryError for a metric ``host`` never had, with close names."""
    se, m = schema.series, schema.metrics
    # The host's series (the unique key's first column), not a scan of its samples.
    has = sa.exists().where(se.c.device_id == device_id, se.c.metric_id == m.c.id)
    names = sorted(set(conn.execute(sa.select(m.c.name).where(has)).scalars()))
    if not names:
        raise QueryError(f"device {host!r} has no metric {metric!r}: it has no samples")
    raise QueryError(f"device {host!r} has no metric {metric!r}{suggest(metric, names)}; "
                     f"its metrics: {names_text(names, 'metrics')}")




def _read(engine: sa.Engine, schema: Schema, tables: Iterable[sa.Table],
          run: Callable[[sa.Connection], T]) -> T:
    """``run`` on a connection; a failure due to missing tables becomes a QueryError."""
    try:
        with engine.connect() as conn:
            return run(conn)
    except sa.exc.DBAPIError:
        # Checked only after a failure: no extra round trip on the happy path.
        if _tables_missing(engine, tables):
            raise QueryError(
                f"no Centaure tables with prefix {schema.prefix!r} in "
                f"{mask_url(engine.url.render_as_string(hide_password=True))}: run "
                "'centaure db upgrade -c settings.ini' or start centaure-db") from None
        raise


def _tables_missing(engine: sa.Engine, tables: Iterable[sa.Table]) -> bool:
    try:
        # A fresh connection: PostgreSQL refuses anything more in a failed transaction.
        with engine.connect() as conn:
            inspector = sa.inspect(conn)
            return not all(inspector.has_table(t.name) for t in tables)
    except sa.exc.SQLAlchemyError:
        return False  # cannot tell (the server is gone): the original error stands
