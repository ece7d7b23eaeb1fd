"""Rollups of samples: 5-minute and hourly min, max, avg, count and last per series.

Built from the stored samples by ``centaure db maintain`` (before old raw
partitions are dropped), interval by interval once closed:

* ``5m``: every numeric sample of a (device, metric, index) whose time falls
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
and its new mark are one transaction (a chunk rebuilt after a crash
replaces its rows), so a pass is idempotent. A first pass starts at the
oldest sample.

Raw rows are read in primary-key order a chunk at a time and folded in
Python: no dialect-specific SQL, one code path for SQLite, MariaDB and
PostgreSQL.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import sqlalchemy as sa

from centaure_shared.storage.schema import Schema

__all__ = ["RESOLUTIONS", "SETTLE_MS", "LOOKBACK_MS", "build", "Acc", "counter_delta"]

#: Interval of each resolution, in milliseconds.
RESOLUTIONS = {"5m": 300_000, "1h": 3_600_000}
#: Time after an interval's end before it is rolled up (late samples).
SETTLE_MS = 120_000
#: How far before an interval a counter's previous sample is looked for.
LOOKBACK_MS = 900_000
_CHUNK = {"5m": 3_600_000, "1h": 86_400_000}


def counter_delta(previous: float, value: float) -> float:
    """``value - previous`` for a counter, a wrap counted (32 or 64 bits)."""
    delta = value - previous
    if delta < 0:
        delta += 2.0**32 if previous < 2**32 and value < 2**32 else 2.0**64
    return delta


@dataclass
class Acc:
    """One interval's summary being built."""

    vmin: float
    vmax: float
    total: float
    count: int
    last: float
    last_ts: int

    @classmethod
    def of(cls, value: float, ts: int) -> Acc:
        """The summary of one value."""
        return cls(value, value, value, 1, value, ts)

    def add(self, value: float, ts: int) -> None:
        """One more value (times come in order)."""
        self.vmin = min(self.vmin, value)
        self.vmax = max(self.vmax, value)
        self.total += value
        self.count += 1
        if ts >= self.last_ts:
            self.last, self.last_ts = value, ts

    def merge(self, vmin: float, vmax: float, avg: float, count: int, last: float,
              last_ts: int) -> None:
        """Another summary (a 5-minute row into an hour)."""
        self.vmin = min(self.vmin, vmin)
        self.vmax = max(self.vmax, vmax)
        self.total += avg * count
        self.count += count
        if last_ts >= self.last_ts:
            self.last, self.last_ts = last, last_ts

    def row(self, key: tuple, ts: int) -> dict:
        """The rollup row of ``key`` (device_id, metric_id, idx) for the interval at ``ts``."""
        return {"device_id": key[0], "metric_id": key[1], "idx": key[2], "ts": ts,
                "min_value": self.vmin, "max_value": self.vmax,
                "avg_value": self.total / self.count, "value_count": self.count,
                "last_value": self.last, "last_ts": self.last_ts}


def _state(conn, schema: Schema, resolution: str) -> int | None:
    t = schema.rollup_state
    return conn.execute(sa.select(t.c.done_until).where(t.c.resolution == resolution)).scalar()


def _set_state(conn, schema: Schema, resolution: str, until: int, had: bool) -> None:
    t = schema.rollup_state
    if had:
        conn.execute(sa.update(t).where(t.c.resolution == resolution).values(done_until=until))
    else:
        conn.execute(sa.insert(t).values(resolution=resolution, done_until=until))


def _fold_raw(rows: Iterator, start: int, end: int, step: int) -> Iterator[dict]:
    """5-minute rows of raw (device, metric, idx, ts, value, kind) rows in key, ts order."""
    key = None
    accs: dict[int, Acc] = {}
    prev: tuple[int, float] | None = None
    for device, metric, idx, ts, value, kind in rows:
        k = (device, metric, idx)
        if k != key:
            for b, acc in sorted(accs.items()):
                yield acc.row(key, b)
            key, accs, prev = k, {}, None
        if kind == "counter":
            last, prev = prev, (ts, value)
            if last is None or ts <= last[0]:
                continue
            value = counter_delta(last[1], value) / ((ts - last[0]) / 1000.0)
        if ts < start or ts >= end:
            continue
        b = ts - ts % step
        acc = accs.get(b)
        if acc is None:
            accs[b] = Acc.of(value, ts)
        else:
            acc.add(value, ts)
    if key is not None:
        for b, acc in sorted(accs.items()):
            yield acc.row(key, b)


def _fold_5m(rows: Iterator, step: int) -> Iterator[dict]:
    """Hourly rows of 5-minute rows in key, ts order."""
    key = None
    accs: dict[int, Acc] = {}
    for device, metric, idx, ts, vmin, vmax, avg, count, last, last_ts in rows:
        k = (device, metric, idx)
        if k != key:
            for b, acc in sorted(accs.items()):
                yield acc.row(key, b)
            key, accs = k, {}
        b = ts - ts % step
        acc = accs.get(b)
        if acc is None:
            accs[b] = Acc(vmin, vmax, avg * count, count, last, last_ts)
        else:
            acc.merge(vmin, vmax, avg, count, last, last_ts)
    if key is not None:
        for b, acc in sorted(accs.items()):
            yield acc.row(key, b)


def _source_rows(conn, schema: Schema, resolution: str, start: int, end: int):
    if resolution == "5m":
        s, m = schema.samples, schema.metrics
        stmt = (sa.select(s.c.device_id, s.c.metric_id, s.c.idx, s.c.ts, s.c.value_num, m.c.kind)
                .join_from(s, m, m.c.id == s.c.metric_id)
                .where(s.c.ts >= start - LOOKBACK_MS, s.c.ts < end, s.c.value_num.is_not(None))
                .order_by(s.c.device_id, s.c.metric_id, s.c.idx, s.c.ts))
        return _fold_raw(iter(conn.execute(stmt).all()), start, end, RESOLUTIONS["5m"])
    r = schema.rollups_5m
    stmt = (sa.select(r.c.device_id, r.c.metric_id, r.c.idx, r.c.ts, r.c.min_value,
                      r.c.max_value, r.c.avg_value, r.c.value_count, r.c.last_value,
                      r.c.last_ts)
            .where(r.c.ts >= start, r.c.ts < end)
            .order_by(r.c.device_id, r.c.metric_id, r.c.idx, r.c.ts))
    return _fold_5m(iter(conn.execute(stmt).all()), RESOLUTIONS["1h"])


def _first(conn, schema: Schema, resolution: str) -> int | None:
    src = schema.samples if resolution == "5m" else schema.rollups_5m
    return conn.execute(sa.select(sa.func.min(src.c.ts))).scalar()


def build(engine: sa.Engine, schema: Schema, now_ms: int | None = None, *,
          progress: Callable[[str], None] = lambda line: None,
          batch: int = 5000) -> dict[str, int]:
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
        while start < limit:
            end = min(start + _CHUNK[resolution], limit)
            with engine.begin() as conn:
                conn.execute(sa.delete(table).where(table.c.ts >= start, table.c.ts < end))
                rows: list[dict] = []
                for row in _source_rows(conn, schema, resolution, start, end):
                    rows.append(row)
                    if len(rows) == batch:
                        conn.execute(sa.insert(table), rows)
                        total, rows = total + len(rows), []
                if rows:
                    conn.execute(sa.insert(table), rows)
                    total += len(rows)
                _set_state(conn, schema, resolution, end, had)
            had = True
            start = end
        if not had and start >= limit:
            with engine.begin() as conn:
                _set_state(conn, schema, resolution, limit, False)
        written[resolution] = total
        progress(f"{table.name}: {total} rows rolled up")
    return written
