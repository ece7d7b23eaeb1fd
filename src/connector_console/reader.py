"""Reading the correlator's tables (its state, the source of truth): blocking, run in a thread."""

from __future__ import annotations

import dataclasses
import json
import time
from datetime import datetime, timezone

import sqlalchemy as sa

from centaure_shared.storage.alarms import make_schema

__all__ = ["AlarmReader", "Graph", "StoreReader"]


class AlarmReader:
    """The active alarms and one alarm's details, from ``<prefix>alarms``."""

    def __init__(self, engine: sa.Engine, prefix: str) -> None:
        self.engine = engine
        self.table = make_schema(prefix).alarms

    def _columns(self):
        t = self.table
        return (t.c.ref, t.c.host, t.c.name, t.c.severity, t.c.message, t.c.first_seen,
                t.c.last_seen, t.c.count, t.c.acked_by, t.c.flapping, t.c.origin, t.c.cause_ref,
                t.c.published_at, t.c.active, t.c.acked_at, t.c.cleared_at, t.c.clear_reason,
                t.c.notes)

    def active(self) -> list[dict]:
        """Every active alarm as a board row (``version``: when it was last published)."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(*self._columns())
                                .where(self.table.c.active.is_(True))).all()
        return [self._row(r._mapping, details=False) for r in rows]

    def one(self, ref: int) -> dict | None:
        """One alarm, active or cleared, with its notes; None when the correlator has none."""
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(*self._columns())
                               .where(self.table.c.ref == ref)).first()
        return None if row is None else self._row(row._mapping, details=True)

    @staticmethod
    def _row(m, details: bool) -> dict:
        row = {
            "ref": str(m["ref"]), "host": m["host"], "name": m["name"],
            "severity": m["severity"], "message": m["message"],
            "first_seen": m["first_seen"], "last_seen": m["last_seen"], "count": m["count"],
            "acked_by": m["acked_by"], "flapping": bool(m["flapping"]), "origin": m["origin"],
            "cause_ref": None if m["cause_ref"] is None else str(m["cause_ref"]),
            "version": m["published_at"],
        }
        if details:
            row.update(active=bool(m["active"]), acked_at=m["acked_at"],
                       cleared_at=m["cleared_at"], clear_reason=m["clear_reason"],
                       notes=[{"ts": ts, "user": user, "text": text}
                              for ts, user, text in json.loads(m["notes"] or "[]")])
        return row


#: Most points one graph draws (a range holding more shows its newest ones).
MAX_POINTS = 20_000
#: How each resolution's points are named on the page.
_POINTS = {"raw": "samples", "5m": "5-minute averages", "1h": "hourly averages"}


@dataclasses.dataclass(frozen=True)
class Graph:
    """The points of one series over a range, as the device page's graph draws them.

    ``resolution`` is ``raw`` (``values`` are the samples; a text value is None, a gap)
    or ``5m``/``1h`` (``values`` are the intervals' averages, ``low`` and ``high`` their
    minima and maxima, then from ``raw_from`` the samples not rolled up yet, whose
    ``low`` and ``high`` are None). ``label`` says which, ``summary`` how many, for the
    page.
    """

    resolution: str
    label: str
    summary: str
    ts: list[float]
    values: list[float | None]
    low: list[float | None] | None = None
    high: list[float | None] | None = None
    raw_from: float | None = None

    def as_json(self) -> dict:
        """The ``/api/samples`` answer: ts, values (and min, max, raw_from), resolution,
        label, summary."""
        out = {"resolution": self.resolution, "label": self.label, "summary": self.summary,
               "ts": self.ts, "values": self.values}
        if self.low is not None:
            out.update(min=self.low, max=self.high, raw_from=self.raw_from)
        return out


class StoreReader:
    """What the SQL writer stored (its normalized tables, ``[db] table_prefix``): a
    device's last values, events and samples; an alarm's history and notifications."""

    def __init__(self, engine: sa.Engine, prefix: str) -> None:
        from centaure_shared.storage.schema import make_schema as writer_schema

        self.engine = engine
        self.schema = writer_schema(prefix)

    def device(self, host: str) -> dict | None:
        """Last value of each metric and index, the last 20 events; None: a host never stored."""
        from centaure_shared.storage import query

        try:
            latest = query.latest_samples(self.engine, self.schema, host)
        except query.QueryError:
            latest = None
        try:
            events = query.events(self.engine, self.schema, host, limit=20)
        except query.QueryError:
            events = None
        if latest is None and events is None:
            return None
        return {"latest": latest or [], "events": events or []}

    def samples(self, host: str, metric: str, index: str, start: float,
                end: float) -> Graph:
        """One metric and index of ``host`` in [start, end], oldest first, at the resolution
        ``centaure query --resolution auto`` reads: raw samples up to 6 hours, 5-minute
        rollups up to 7 days, hourly beyond, then the raw samples of the intervals not
        rolled up yet (a gauge's: a counter's rollups are rates); raw samples where the
        rollups have nothing (none built yet). ``query.QueryError`` for a host or metric
        never stored."""
        from centaure_shared.storage import query

        resolution = query.pick_resolution(start, end, time.time())
        why = ""
        if resolution != "raw":
            rollups = query.rollups(self.engine, self.schema, host, metric, index, start, end,
                                    limit=MAX_POINTS, order="desc", resolution=resolution)
            if rollups:
                return self._rolled_up(query, host, metric, index, end, rollups[::-1])
            why = f" (no {_POINTS[resolution]} there yet)"
        ts, values = self._raw(query, host, metric, index, start, end)
        return Graph("raw", f"raw samples{why}", f"{len(ts)} samples", ts, values)

    def _rolled_up(self, query, host: str, metric: str, index: str, end: float,
                   rollups: list) -> Graph:
        """The graph of ``rollups`` (oldest first), then the raw samples after them."""
        resolution = rollups[0].resolution
        points = _POINTS[resolution]
        ts, values = [r.ts for r in rollups], [r.avg for r in rollups]
        low, high = [r.min for r in rollups], [r.max for r in rollups]
        if rollups[0].kind == "counter":
            return Graph(resolution, f"{points} of its rate per second, min–max band",
                         f"{len(ts)} {points}", ts, values, low, high)
        # Rollups are built by a periodic pass (hourly, as shipped) from closed intervals:
        # the samples since the last one end the graph, so that it reaches its range's end.
        after = rollups[-1].ts + query.RESOLUTIONS[resolution]
        tail_ts, tail = self._raw(query, host, metric, index, after, end) if after <= end \
            else ([], [])
        label, summary = f"{points}, min–max band", f"{len(ts)} {points}"
        if tail_ts:
            since = datetime.fromtimestamp(after, timezone.utc).strftime("%Y-%m-%d %H:%M")
            label += f"; raw samples from {since} UTC (not rolled up yet)"
            summary += f" and {len(tail_ts)} samples"
            ts, values = ts + tail_ts, values + tail
            low, high = low + [None] * len(tail), high + [None] * len(tail)
        return Graph(resolution, label, summary, ts, values, low, high,
                     after if tail_ts else None)

    def _raw(self, query, host: str, metric: str, index: str, start: float,
             end: float) -> tuple[list[float], list[float | None]]:
        """(times, values) of the newest MAX_POINTS samples in range, oldest first; a text
        value is None (a gap)."""
        rows = query.samples(self.engine, self.schema, host, metric, index, start, end,
                             limit=MAX_POINTS, order="desc")[::-1]
        return ([r.ts for r in rows],
                [r.value if isinstance(r.value, (int, float)) else None for r in rows])

    def history(self, ref: int, limit: int = 200) -> list[dict]:
        """The alarm's stored changes (one per ``alarm`` message), oldest first."""
        return self._of_alarm(self.schema.alarm_history, ref, limit, (
            "state", "severity", "count", "acked_by", "flapping", "message"))[::-1]

    def notifications(self, ref: int, limit: int = 200) -> list[dict]:
        """The alerter's notification attempts for the alarm (the ledger), newest first."""
        return self._of_alarm(self.schema.notifications, ref, limit, (
            "channel", "recipient", "state", "attempts", "reason", "rule"))

    def _of_alarm(self, table: sa.Table, ref: int, limit: int,
                  columns: tuple[str, ...]) -> list[dict]:
        """The newest ``limit`` rows of ``table`` about alarm ``ref``: ``ts`` (in seconds)
        and ``columns``."""
        stmt = (sa.select(table.c.ts, *(table.c[name] for name in columns))
                .where(table.c.ref == ref).order_by(table.c.ts.desc()).limit(limit))
        with self.engine.connect() as conn:
            rows = conn.execute(stmt).all()
        return [dict(r._mapping, ts=r.ts / 1000.0) for r in rows]
