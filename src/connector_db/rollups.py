"""Rollups of samples: 5-minute and hourly min, max, avg, count and last per series.

Built from the stored samples by ``centaure db maintain`` (before old raw
partitions are dropped), interval by interval once closed:

* ``5m``: every numeric sample of a series (device, metric, index) whose time falls
  in the 5 minutes; a counter's values are its rates, per second, between
  consecutive samples (the rate belongs to the later sample's interval; the
  samples of :data:`LOOKBACK_MS` before the interval give the first one). A
  counter that went down wrapped: by 2**32 when both values fit 32 bits,
  else by 2**64;
* ``1h``: the twelve 5-minute rows of the hour (min of minima, max of maxima,
  average weighted by counts, the latest last).

An interval is closed :data:`SETTLE_MS` after its end (samples arriving
later than that are not in its rollup). ``rollup_state`` keeps, per
resolution, the time before which intervals are built; each chunk's rows
and its new mark are one transaction, so a pass is idempotent. A first
pass starts at the oldest sample.

The database does the work: one ``INSERT ... SELECT`` per chunk of time and
group of series, with ``GROUP BY`` and the window functions ``LAG`` (a
counter's previous sample) and ``FIRST_VALUE`` (an interval's last value),
which SQLite (3.25+), MariaDB (10.2+) and PostgreSQL share. Rows are found
through the primary key ``(series_id, ts)``, :data:`SERIES_PER_STATEMENT`
consecutive series a statement, listed by id (a range per series on the
key; on partitioned tables, in the chunk's partitions only), its rows
inserted in key order.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import sqlalchemy as sa

from centaure_shared.storage.schema import Schema

from .store import insert_ignore

__all__ = ["RESOLUTIONS", "SETTLE_MS", "LOOKBACK_MS", "SERIES_PER_STATEMENT", "build"]

#: Interval of each resolution, in milliseconds.
RESOLUTIONS = {"5m": 300_000, "1h": 3_600_000}
#: Time after an interval's end before it is rolled up (late samples).
SETTLE_MS = 120_000
#: How far before an interval a counter's previous sample is looked for.
LOOKBACK_MS = 900_000
#: Series summarized by one statement.
SERIES_PER_STATEMENT = 5000
_CHUNK = {"5m": 3_600_000, "1h": 86_400_000}
_COLUMNS = ["series_id", "ts", "min_value", "max_value", "avg_value", "value_count",
            "last_value", "last_ts"]


def _state(conn, schema: Schema, resolution: str) -> int | None:
    t = schema.rollup_state
    return conn.execute(sa.select(t.c.done_until).where(t.c.resolution == resolution)).scalar()


def _set_state(conn, schema: Schema, resolution: str, until: int, had: bool) -> None:
    t = schema.rollup_state
    if had:
        conn.execute(sa.update(t).where(t.c.resolution == resolution).values(done_until=until))
    else:
        conn.execute(sa.insert(t).values(resolution=resolution, done_until=until))


def _key(t) -> tuple:
    return (t.c.series_id,)


def _five_minutes(schema: Schema, gauges: list[int], counters: list[int], start: int,
                  end: int) -> sa.Select:
    """5-minute rows of the series ``gauges`` and ``counters`` for intervals in [start, end)."""
    s = schema.samples
    step = sa.literal_column(str(RESOLUTIONS["5m"]))
    parts = []
    if gauges:
        parts.append(sa.select(s.c.series_id, s.c.ts, s.c.value.label("v"))
                     .where(s.c.series_id.in_(gauges), s.c.ts >= start, s.c.ts < end))
    if counters:
        parts.append(_rates(s, counters, start, end))
    vals = (parts[0] if len(parts) == 1 else sa.union_all(*parts)).subquery("vals")
    return _summarize(vals, step, vals.c.v, vals.c.v, vals.c.v, None, vals.c.v, vals.c.ts)


def _rates(s: sa.Table, counters: list[int], start: int, end: int) -> sa.Select:
    """The rates per second of the series ``counters`` at their samples in [start, end)."""
    window = {"partition_by": _key(s), "order_by": s.c.ts}
    seq = (sa.select(s.c.series_id, s.c.ts, s.c.value.label("v"),
                     sa.func.lag(s.c.value).over(**window).label("prev"),
                     sa.func.lag(s.c.ts).over(**window).label("prev_ts"))
           .where(s.c.series_id.in_(counters), s.c.ts >= start - LOOKBACK_MS, s.c.ts < end)
           .subquery("seq"))
    wrap32, wrap64 = sa.literal(2.0**32), sa.literal(2.0**64)
    delta = sa.case((seq.c.v >= seq.c.prev, seq.c.v - seq.c.prev),
                    (sa.and_(seq.c.prev < wrap32, seq.c.v < wrap32), seq.c.v - seq.c.prev + wrap32),
                    else_=seq.c.v - seq.c.prev + wrap64)
    return (sa.select(*_key(seq), seq.c.ts,
                      (delta / ((seq.c.ts - seq.c.prev_ts) / sa.literal(1000.0))).label("v"))
            .where(seq.c.prev.is_not(None), seq.c.ts >= start, seq.c.ts > seq.c.prev_ts))


def _hours(schema: Schema, gauges: list[int], counters: list[int], start: int,
           end: int) -> sa.Select:
    """Hourly rows of the series ``gauges`` and ``counters`` from their 5-minute rows in
    [start, end)."""
    r = schema.rollups_5m
    rows = (sa.select(r).where(r.c.series_id.in_(gauges + counters), r.c.ts >= start,
                               r.c.ts < end)
            .subquery("five"))
    step = sa.literal_column(str(RESOLUTIONS["1h"]))
    return _summarize(rows, step, rows.c.min_value, rows.c.max_value, rows.c.avg_value,
                      rows.c.value_count, rows.c.last_value, rows.c.last_ts)


def _summarize(src, step, vmin, vmax, vavg, vcount, vlast, vts) -> sa.Select:
    """GROUP BY series and interval of ``src``: min, max, avg (weighted by ``vcount`` if
    given), count, and the last value (that of the greatest ``vts``)."""
    bucket = (src.c.ts - src.c.ts % step).label("b")
    last = sa.func.first_value(vlast).over(
        partition_by=(*_key(src), bucket), order_by=vts.desc()).label("lv")
    n = sa.literal(1) if vcount is None else vcount
    w = sa.select(*_key(src), bucket, vmin.label("mn"), vmax.label("mx"),
                  (vavg * n).label("tot"), n.label("n"), last, vts.label("lts")).subquery("w")
    return (sa.select(*_key(w), w.c.b, sa.func.min(w.c.mn), sa.func.max(w.c.mx),
                      sa.func.sum(w.c.tot) / sa.func.sum(w.c.n), sa.func.sum(w.c.n),
                      sa.func.max(w.c.lv), sa.func.max(w.c.lts))
            .group_by(*_key(w), w.c.b)
            # In key order: appended to the table's B-tree, not split into its pages.
            .order_by(*_key(w), w.c.b))


def _series_groups(engine: sa.Engine, schema: Schema) -> list[tuple[list[int], list[int]]]:
    """Every series id in ranges of SERIES_PER_STATEMENT, as (gauges, counters) of each:
    a statement writes one range of the key (the rows of both kinds together, in key
    order, fill the table's pages; gauges then counters would split them)."""
    se, m = schema.series, schema.metrics
    with engine.connect() as conn:
        rows = conn.execute(sa.select(se.c.id, m.c.kind == "counter")
                            .join_from(se, m, m.c.id == se.c.metric_id)
                            .order_by(se.c.id)).all()
    groups = []
    for i in range(0, len(rows), SERIES_PER_STATEMENT):
        chunk = rows[i:i + SERIES_PER_STATEMENT]
        groups.append(([id_ for id_, counter in chunk if not counter],
                       [id_ for id_, counter in chunk if counter]))
    return groups


def _first(conn, schema: Schema, resolution: str) -> int | None:
    src = schema.samples if resolution == "5m" else schema.rollups_5m
    return conn.execute(sa.select(sa.func.min(src.c.ts))).scalar()


def build(engine: sa.Engine, schema: Schema, now_ms: int | None = None, *,
          progress: Callable[[str], None] = lambda line: None) -> dict[str, int]:
    """Roll up every closed interval not built yet; rows written per resolution."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    written = {}
    for resolution, step in RESOLUTIONS.items():
        table = schema.rollups_5m if resolution == "5m" else schema.rollups_1h
        with engine.connect() as conn:
            mark = _state(conn, schema, resolution)
            if resolution == "5m":
                limit = (now_ms - SETTLE_MS) // step * step
            else:
                built = _state(conn, schema, "5m")
                limit = (built or 0) // step * step
            start = mark
            if start is None:
                first = _first(conn, schema, resolution)
                start = limit if first is None else min(first // step * step, limit)
        total = 0
        had = mark is not None
        select = _five_minutes if resolution == "5m" else _hours
        insert = insert_ignore(engine.dialect.name, table)
        groups = _series_groups(engine, schema) if start < limit else []
        while start < limit:
            end = min(start + _CHUNK[resolution], limit)
            with engine.begin() as conn:
                for gauges, counters in groups:
                    res = conn.execute(insert.from_select(
                        _COLUMNS, select(schema, gauges, counters, start, end)))
                    total += max(res.rowcount or 0, 0)
                _set_state(conn, schema, resolution, end, had)
            had = True
            start = end
        if not had and start >= limit:
            with engine.begin() as conn:
                _set_state(conn, schema, resolution, limit, False)
        written[resolution] = total
        progress(f"{table.name}: {total} rows rolled up")
    return written
