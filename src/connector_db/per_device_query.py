"""Reading the per_device layout's tables: ``centaure query`` with ``[db] layout = per_device``.

The same rows as :mod:`centaure_shared.storage.query` gives for the normalized
tables (:class:`~centaure_shared.storage.query.SampleRow`), read from one
table per metric and device named by a :class:`~connector_db.per_device.PerDeviceLayout`.
Table names are matched against the template and columns are reflected;
bound parameters only.
"""

from __future__ import annotations

import decimal
import math
import re
from typing import Any

import sqlalchemy as sa

from centaure_shared.storage import query

from .per_device import PerDeviceLayout

__all__ = ["per_device_metrics", "per_device_samples"]

_NUMBER_TEXT_RE = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def per_device_metrics(engine: sa.Engine, layout: PerDeviceLayout, host: str) -> list[str]:
    """The metrics of ``host`` that have a table in the per_device layout, sorted.

    Found by matching the database's table names against the template: one
    listing of the tables, no scan of any.
    """
    with engine.connect() as conn:
        return sorted(_per_device_tables(conn, layout, layout.device(host)))


def per_device_samples(engine: sa.Engine, layout: PerDeviceLayout, host: str,
                       metric: str | None = None, index: str | None = None,
                       start: float | None = None, end: float | None = None,
                       limit: int = 100, order: str = "desc") -> list[query.SampleRow]:
    """As :func:`samples`, from the per_device layout's tables (one per metric and device).

    What a row holds depends on ``table_struct``: its time comes from the
    ``ts_ms`` column (else ``ts``, whole seconds); its value from the
    ``value`` column (else ``value_num``, then ``value_text``), a number
    when it reads as one unless a ``kind`` column says ``text``; ``kind``
    and ``unit`` from columns of those sources ('' and None without them).
    A numeric index column keeps a scalar's index as 0, shown as "0".
    query.QueryError for a host without tables, or a metric it has no table for.
    """
    query.check_limit(limit)
    query.check_order(order)
    start_ms, end_ms = query.time_range(start, end)
    device = layout.device(host)
    index = None if index is None else str(index)

    def run(conn: sa.Connection) -> list[query.SampleRow]:
        fold = _folds_names(conn)
        if metric is not None:
            name = layout.table_name(metric, device)
            if name is not None and sa.inspect(conn).has_table(name):
                chosen = {metric: name}
            else:
                tables = _per_device_tables(conn, layout, device)
                if not tables:
                    raise _no_per_device_tables(layout, host, device)
                found = [m for m in tables if m == metric or (fold and m.lower() == metric.lower())]
                if not found:
                    names = sorted(tables)
                    raise query.QueryError(f"device {host!r} has no metric {metric!r}"
                                     f"{query.suggest(metric, names)}; its metrics: "
                                     f"{query.names_text(names, 'metrics')}")
                chosen = {metric: tables[found[0]]}
        else:
            chosen = _per_device_tables(conn, layout, device)
            if not chosen:
                raise _no_per_device_tables(layout, host, device)
        rows: list[query.SampleRow] = []
        for name, table in sorted(chosen.items()):
            rows.extend(_per_device_rows(conn, layout, host, name, table, index, start_ms,
                                         end_ms, limit, order, fold))
        sign = -1 if order == "desc" else 1
        rows.sort(key=lambda r: (sign * r.ts, r.metric, r.kind, r.index))
        return rows[:limit]

    with engine.connect() as conn:
        return run(conn)


def _per_device_tables(conn: sa.Connection, layout: PerDeviceLayout, device: str) -> dict[str, str]:
    """Metric -> table of every per_device table of ``device``."""
    fold = _folds_names(conn)
    found: dict[str, str] = {}
    for table in sa.inspect(conn).get_table_names():
        metric = layout.metric_of(table, device, fold)
        if metric is not None:
            found.setdefault(metric, table)
    return found


def _no_per_device_tables(layout: PerDeviceLayout, host: str, device: str) -> query.QueryError:
    example = layout.fill("METRIC", device)
    return query.QueryError(f"no device named {host!r} in the database: no per_device table of it "
                      f"(named like {example})")


def _per_device_rows(conn: sa.Connection, layout: PerDeviceLayout, host: str, metric: str,
                     table: str, index: str | None, start_ms: int | None, end_ms: int | None,
                     limit: int, order: str, fold: bool) -> list[query.SampleRow]:
    """The rows of one per_device table, as SampleRows."""
    key = str.lower if fold else str
    # Reflected: a table made before table_struct gained a column lacks it.
    present = {key(c["name"]): c["name"] for c in sa.inspect(conn).get_columns(table)}

    def col(spec) -> str | None:
        return None if spec is None else present.get(key(spec.name))

    names = {role: col(getattr(layout, role)) for role in
             ("time", "index", "value", "value_num", "value_text", "kind", "unit")}
    if names["time"] is None:
        return []
    t = sa.table(table, *(sa.column(n) for n in set(names.values()) if n is not None))
    ts_col = t.c[names["time"]]
    stmt = sa.select(*(t.c[n] if n is not None else sa.null() for n in names.values()))
    if index is not None:
        if names["index"] is None:
            return []
        try:
            wanted = layout.index.convert(index)
        except ValueError:
            return []  # an index this column could never hold: no such rows
        stmt = stmt.where(t.c[names["index"]] == wanted)
    scale = layout.time_scale
    if start_ms is not None:
        stmt = stmt.where(ts_col >= -(-start_ms // scale))
    if end_ms is not None:
        stmt = stmt.where(ts_col <= end_ms // scale)
    direction = sa.desc if order == "desc" else sa.asc
    stmt = stmt.order_by(direction(ts_col))
    if names["index"] is not None:
        stmt = stmt.order_by(t.c[names["index"]])
    rows = []
    for ts, idx, value, num, text, kind, unit in conn.execute(stmt.limit(limit)):
        kind = "" if kind is None else str(kind)
        if names["value"] is None:
            value = num if num is not None else text
        rows.append(query.SampleRow(host, metric, kind, unit, "" if idx is None else _index_text(idx),
                              ts * scale / 1000.0, _stored_value(value, kind)))
    return rows


def _index_text(idx: Any) -> str:
    if isinstance(idx, float) and idx.is_integer():
        return str(int(idx))
    return str(idx)


def _stored_value(value: Any, kind: str) -> float | str | None:
    """A per_device value as a sample's: a number when it is (or reads as) one."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, (int, float, decimal.Decimal)):
        return float(value)
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    if kind != "text" and _NUMBER_TEXT_RE.fullmatch(text.strip()):
        number = float(text)
        if math.isfinite(number):
            return number
    return text


def _folds_names(conn: sa.Connection) -> bool:
    """True when the database compares table and column names case-insensitively."""
    return conn.dialect.name in ("mysql", "mariadb", "sqlite")
