"""The normalized layout's store: messages to rows, batches to SQL.

:class:`NormalizedStore` provides ``IStore`` for the tables of
:mod:`centaure_shared.storage.schema`. ``prepare`` runs on the reactor thread and does no
I/O; ``write`` runs on the writer's thread, one transaction per batch.
Another store can put these rows in its own transaction with ``write_in``
(no commit) and ``after_commit`` (caches the new ids once committed).

Idempotency (a replayed message writes no duplicate row):

* samples are keyed by (series, ts in ms), a series being one (device,
  metric, index): numbers in ``samples``, texts and polls without a value
  in ``samples_text``; events, alarm
  history, thresholds and notifications by the AMQP ``message_id`` (or, if a
  delivery has none, a hash of the message's body); these are inserted with
  insert-ignore semantics per dialect (SQLite ``INSERT OR IGNORE``,
  MySQL/MariaDB ``INSERT IGNORE``, PostgreSQL ``ON CONFLICT DO NOTHING``);
* the current state of an alarm (``alarms``) is upserted by ref, and only a
  message at least as recent as the stored one changes it;
* devices, metrics and series are got-or-created (insert-ignore, then a
  select that sees rows another writer committed meanwhile), with a
  per-process cache of ids filled only after a commit.

Values are always bound parameters, written with executemany.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.dialects import mysql as mysql_dialect
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from zope.interface import implementer

from connector.consumer import RejectedMessage
from connector.interfaces import IStore
from connector.messages import Alarm, Event, Notification, Perf, Threshold, encode

from centaure_shared.storage.schema import TEXT_VALUE_MAX, Schema

__all__ = ["NormalizedStore", "UnstorableMessage", "insert_ignore", "message_id"]

_JSON = msgspec.json.Encoder()
# Longest Text value accepted (bytes): MySQL/MariaDB TEXT holds 65,535.
_TEXT_BYTES_MAX = 65535


class UnstorableMessage(RejectedMessage, ValueError):
    """A message that no column can hold; ``str()`` says why (for dead-lettering)."""


def _ms(ts: float) -> int:
    return int(round(ts * 1000.0))


def message_id(message, delivery) -> str:
    """The key of a message's row: its AMQP message id, else a hash of its body."""
    mid = getattr(delivery, "message_id", None)
    if mid:
        return str(mid)
    return "sha1:" + hashlib.sha1(encode(message)).hexdigest()


def insert_ignore(dialect: str, table: sa.Table):
    """An INSERT that skips rows whose unique key exists, for ``dialect``."""
    if dialect == "postgresql":
        return pg_dialect.insert(table).on_conflict_do_nothing()
    if dialect in ("mysql", "mariadb"):
        return sa.insert(table).prefix_with("IGNORE")
    if dialect == "sqlite":
        return sa.insert(table).prefix_with("OR IGNORE")
    raise NotImplementedError(f"unsupported SQL dialect {dialect!r}")


class _Prepared:
    """One message's rows, waiting for its batch."""

    __slots__ = ("rows", "nrows", "perf")

    def __init__(self, rows: dict[str, list[dict]], perf: tuple | None) -> None:
        self.rows = rows
        # perf: (host, address, device_type, [(metric name, kind, unit), ...], ts,
        #        [(index, number or None, text or None), ...])
        self.perf = perf
        self.nrows = sum(len(r) for r in rows.values()) + (len(perf[3]) if perf else 0)


@implementer(IStore)
class NormalizedStore:
    """Devices, metrics, samples, events, alarms and their history, in SQL."""

    def __init__(self, engine: sa.Engine, schema: Schema) -> None:
        self.engine = engine
        self.schema = schema
        self._device_ids: dict[str, int] = {}
        self._metric_ids: dict[tuple[str, str], int] = {}
        self._series_ids: dict[tuple[int, int, str], int] = {}
        self._dialect = engine.dialect.name
        self._statements = self._build_statements()
        self._limits = {t.name: self._string_limits(t) for t in schema.metadata.sorted_tables}

    def prepare(self, message, delivery) -> _Prepared | None:
        """The rows of ``message``; UnstorableMessage if no column can hold it."""
        try:
            item = self._rows_of(message, delivery)
        except UnstorableMessage:
            raise
        except (ValueError, TypeError, OverflowError, AttributeError) as exc:
            raise UnstorableMessage(f"cannot store {type(message).__name__}: {exc}") from None
        if item is not None:
            for table, rows in item.rows.items():
                limits = self._limits[table]
                for row in rows:
                    self._check_row(table, limits, row)
        return item

    def health(self) -> dict[str, Any]:
        """Cache sizes (devices, metrics and series known to this process)."""
        return {"devices_cached": len(self._device_ids), "metrics_cached": len(self._metric_ids),
                "series_cached": len(self._series_ids)}

    def _rows_of(self, m, delivery) -> _Prepared | None:
        s = self.schema
        ts = _ms(m.ts)
        if isinstance(m, Perf):
            self._check_len("host", m.host, 255)
            metrics, samples = [], []
            for i, metric in enumerate(m.metrics):
                self._check_len(f"metrics[{i}].name", metric.name, 255)
                self._check_len(f"metrics[{i}].index", metric.index, 128)
                self._check_len(f"metrics[{i}].unit", metric.unit, 32)
                v = metric.value
                num = text = None
                if "\x00" in metric.index:
                    raise UnstorableMessage(
                        f"metrics[{i}].index: NUL character in value")
                if v is None:
                    pass
                elif isinstance(v, str):
                    if len(v) > TEXT_VALUE_MAX:
                        raise UnstorableMessage(
                            f"metric {metric.name!r} index {metric.index!r}: text value of "
                            f"{len(v)} characters, longer than {TEXT_VALUE_MAX}")
                    if "\x00" in v:
                        raise UnstorableMessage(
                            f"metric {metric.name!r} index {metric.index!r}: NUL character "
                            "in text value")
                    text = v
                elif isinstance(v, (int, float)) and not isinstance(v, bool):
                    num = float(v)  # OverflowError for huge ints: unstorable
                    if not math.isfinite(num):
                        raise UnstorableMessage(
                            f"metric {metric.name!r} index {metric.index!r}: value {v!r} "
                            "is not a finite number")
                else:
                    raise UnstorableMessage(
                        f"metric {metric.name!r}: unsupported value type {type(v).__name__}")
                metrics.append((metric.name, metric.kind, metric.unit))
                samples.append((metric.index, num, text))
            # Series ids are filled in on the writer's thread (write_in).
            item = _Prepared({}, (m.host, m.address, m.device_type, metrics, ts, samples))
            return item
        if isinstance(m, Event):
            row = {"message_id": message_id(m, delivery), "ts": ts, "host": m.host,
                   "address": m.address, "snmp_version": m.snmp_version,
                   "trap_oid": m.trap_oid, "name": m.name, "severity": m.severity,
                   "action": m.action, "alarm": m.alarm, "key": m.key, "message": m.message,
                   "varbinds": _JSON.encode(m.varbinds).decode("utf-8"),
                   "unknown_sender": bool(m.unknown_sender)}
            return _Prepared({s.events.name: [row]}, None)
        if isinstance(m, Alarm):
            state = {"host": m.host, "name": m.name, "severity": m.severity,
                     "state": m.state, "message": m.message,
                     "first_seen": _ms(m.first_seen), "last_seen": _ms(m.last_seen),
                     "cleared_at": None if m.cleared_at is None else _ms(m.cleared_at),
                     "count": m.count, "origin": m.origin, "acked_by": m.acked_by,
                     "flapping": bool(m.flapping), "cause_ref": m.cause_ref, "ts": ts}
            for name in ("ref", "cause_ref"):
                v = getattr(m, name)
                if v is not None and not 0 <= v < 2**64:
                    raise UnstorableMessage(f"alarm {name} {v} is not unsigned 64-bit")
            hist = {"message_id": message_id(m, delivery), "ref": m.ref, **state}
            return _Prepared({s.alarm_history.name: [hist],
                          s.alarms.name: [{"ref": m.ref, **state}]}, None)
        if isinstance(m, Threshold):
            row = {"message_id": message_id(m, delivery), "ts": ts, "host": m.host,
                   "rule": m.rule, "state": m.state,
                   "values": _JSON.encode(m.values).decode("utf-8")}
            return _Prepared({s.thresholds.name: [row]}, None)
        if isinstance(m, Notification):
            if m.ref is not None and not 0 <= m.ref < 2**64:
                raise UnstorableMessage(f"notification ref {m.ref} is not unsigned 64-bit")
            row = {"message_id": message_id(m, delivery), "ts": ts, "ref": m.ref,
                   "rule": m.rule, "host": m.host, "channel": m.channel,
                   "recipient": m.recipient, "state": m.state, "attempts": m.attempts,
                   "reason": m.reason}
            return _Prepared({s.notifications.name: [row]}, None)
        return None

    @staticmethod
    def _check_len(what: str, value: str | None, limit: int) -> None:
        if value is not None and len(value) > limit:
            raise UnstorableMessage(f"{what} is {len(value)} characters, longer than {limit}")

    @staticmethod
    def _string_limits(table: sa.Table) -> dict[str, int | None]:
        limits = {}
        for col in table.columns:
            if isinstance(col.type, sa.String):
                limits[col.name] = col.type.length  # None: Text
        return limits

    @staticmethod
    def _check_row(table: str, limits: dict, row: dict) -> None:
        for col, limit in limits.items():
            v = row.get(col)
            if not isinstance(v, str):
                continue
            if limit is not None and len(v) > limit:
                raise UnstorableMessage(
                    f"{table}.{col}: value of {len(v)} characters, longer than {limit}")
            if limit is None and len(v) * 4 > _TEXT_BYTES_MAX \
                    and len(v.encode("utf-8")) > _TEXT_BYTES_MAX:
                raise UnstorableMessage(
                    f"{table}.{col}: value longer than {_TEXT_BYTES_MAX} bytes")
            if "\x00" in v:
                raise UnstorableMessage(f"{table}.{col}: NUL character in value")

    # --- SQL (writer thread only) ---------------------------------------------------

    def _alarm_upsert(self):
        t = self.schema.alarms
        cols = [c.name for c in t.columns if c.name not in ("ref", "ts")] + ["ts"]
        if self._dialect in ("mysql", "mariadb"):
            stmt = mysql_dialect.insert(t)
            newer = stmt.inserted.ts >= t.c.ts
            # Assignments run left to right: ts last, after the comparisons.
            return stmt.on_duplicate_key_update(
                [(c, sa.case((newer, stmt.inserted[c]), else_=t.c[c])) for c in cols])
        mod = pg_dialect if self._dialect == "postgresql" else sqlite_dialect
        stmt = mod.insert(t)
        return stmt.on_conflict_do_update(
            index_elements=[t.c.ref],
            set_={c: stmt.excluded[c] for c in cols},
            where=stmt.excluded.ts >= t.c.ts)

    def _build_statements(self) -> dict[str, Any]:
        s = self.schema
        st = {t.name: insert_ignore(self._dialect, t) for t in
              (s.devices, s.metrics, s.series, s.samples, s.samples_text, s.events,
               s.alarm_history, s.thresholds, s.notifications)}
        st[s.alarms.name] = self._alarm_upsert()
        return st

    def write(self, items: list[_Prepared]) -> dict[str, int]:
        """One transaction for the whole batch; returns rows written per table."""
        with self.engine.begin() as conn:
            written, new_ids = self.write_in(conn, items)
        self.after_commit(new_ids)
        return written

    def write_in(self, conn: sa.Connection, items: list[_Prepared]) -> tuple[dict[str, int], Any]:
        """Write ``items`` in the caller's transaction on ``conn`` (no commit).

        Returns (rows written per table, ids to cache): once the caller has
        committed, it passes the second to :meth:`after_commit`; after a
        rollback it drops it (the ids may not exist).
        """
        s = self.schema
        written: dict[str, int] = {}
        new_devices: dict[str, int] = {}
        new_metrics: dict[tuple[str, str], int] = {}
        new_series: dict[tuple[int, int, str], int] = {}
        perfs = [it.perf for it in items if it.perf is not None]
        if perfs:
            new_devices = self._ensure_devices(conn, perfs)
            new_metrics = self._ensure_metrics(conn, perfs)
            dev = {**self._device_ids, **new_devices}
            met = {**self._metric_ids, **new_metrics}
            keys = [[(dev[host], met[(name, kind)], index)
                     for (name, kind, _unit), (index, _, _) in zip(metrics, values)]
                    for host, _, _, metrics, _, values in perfs]
            new_series = self._ensure_series(conn, keys)
            ser = {**self._series_ids, **new_series} if new_series else self._series_ids
        rows: dict[str, list[dict]] = {}
        numbers, texts = s.samples.name, s.samples_text.name
        perf_keys = iter(keys) if perfs else None
        for it in items:
            if it.perf is not None:
                ts, values = it.perf[4], it.perf[5]
                for key, (_, num, text) in zip(next(perf_keys), values):
                    if num is not None:
                        rows.setdefault(numbers, []).append(
                            {"series_id": ser[key], "ts": ts, "value": num})
                    else:
                        rows.setdefault(texts, []).append(
                            {"series_id": ser[key], "ts": ts, "value": text})
            else:
                for table, trows in it.rows.items():
                    rows.setdefault(table, []).extend(trows)
        alarm_rows = rows.pop(s.alarms.name, None)
        for table, trows in rows.items():
            res = conn.execute(self._statements[table], trows)
            written[table] = written.get(table, 0) + _rowcount(res, len(trows))
        if alarm_rows:
            # One row per ref per statement (PostgreSQL refuses to update a
            # row twice in one INSERT ... ON CONFLICT): keep the newest.
            latest: dict[int, dict] = {}
            for r in alarm_rows:
                if r["ref"] not in latest or r["ts"] >= latest[r["ref"]]["ts"]:
                    latest[r["ref"]] = r
            conn.execute(self._statements[s.alarms.name], list(latest.values()))
            written[s.alarms.name] = written.get(s.alarms.name, 0) + len(latest)
        return written, (new_devices, new_metrics, new_series)

    def after_commit(self, new_ids: Any) -> None:
        """Cache the ids a committed :meth:`write_in` created (from its result)."""
        new_devices, new_metrics, new_series = new_ids
        self._device_ids.update(new_devices)
        self._metric_ids.update(new_metrics)
        self._series_ids.update(new_series)

    def _ensure_devices(self, conn, perfs) -> dict[str, int]:
        t = self.schema.devices
        missing: dict[str, dict] = {}
        for host, address, device_type, *_ in perfs:
            if host not in self._device_ids and host not in missing:
                missing[host] = {"name": host, "address": address[:64] or None,
                                 "device_type": device_type[:255] or None}
        if not missing:
            return {}
        conn.execute(self._statements[t.name], list(missing.values()))
        return self._select_ids(conn, t, t.c.name, list(missing), lambda r: r[1])

    def _ensure_metrics(self, conn, perfs) -> dict[tuple[str, str], int]:
        t = self.schema.metrics
        missing: dict[tuple[str, str], dict] = {}
        for _, _, _, metrics, *_ in perfs:
            for name, kind, unit in metrics:
                key = (name, kind)
                if key not in self._metric_ids and key not in missing:
                    missing[key] = {"name": name, "kind": kind, "unit": unit}
        if not missing:
            return {}
        conn.execute(self._statements[t.name], list(missing.values()))
        names = sorted({k[0] for k in missing})
        found: dict[tuple[str, str], int] = {}
        for locking in (False, True):
            for i in range(0, len(names), 500):
                query = sa.select(t.c.id, t.c.name, t.c.kind).where(t.c.name.in_(names[i:i + 500]))
                for id_, name, kind in conn.execute(_latest(query) if locking else query):
                    if (name, kind) in missing:
                        found[(name, kind)] = id_
            lost = set(missing) - set(found)
            if not lost:
                return found
            names = sorted({k[0] for k in lost})
        raise RuntimeError(f"metrics not found after insert: {sorted(lost)[:5]}")

    def _ensure_series(self, conn, keys: list[list[tuple[int, int, str]]]
                       ) -> dict[tuple[int, int, str], int]:
        """Ids of the (device, metric, index) in ``keys`` not cached yet, created if new."""
        t = self.schema.series
        missing: dict[tuple[int, int, str], dict] = {}
        for message_keys in keys:
            for key in message_keys:
                if key not in self._series_ids and key not in missing:
                    missing[key] = {"device_id": key[0], "metric_id": key[1], "idx": key[2]}
        if not missing:
            return {}
        conn.execute(self._statements[t.name], list(missing.values()))
        # Read back by device (the unique key's first column), every series of it: one
        # query for a new device's whole set, and the cache filled for the others too.
        devices = sorted({k[0] for k in missing})
        found: dict[tuple[int, int, str], int] = {}
        for locking in (False, True):
            for i in range(0, len(devices), 500):
                query = (sa.select(t.c.id, t.c.device_id, t.c.metric_id, t.c.idx)
                         .where(t.c.device_id.in_(devices[i:i + 500])))
                for id_, did, mid, idx in conn.execute(_latest(query) if locking else query):
                    found[(did, mid, idx)] = id_
            lost = set(missing) - set(found)
            if not lost:
                return found
            devices = sorted({k[0] for k in lost})
        raise RuntimeError(f"series not found after insert: {sorted(lost)[:5]}")

    @staticmethod
    def _select_ids(conn, t, col, names, _key) -> dict:
        found = {}
        for locking in (False, True):
            for i in range(0, len(names), 500):
                query = sa.select(t.c.id, col).where(col.in_(names[i:i + 500]))
                for id_, name in conn.execute(_latest(query) if locking else query):
                    found[name] = id_
            lost = set(names) - set(found)
            if not lost:
                return found
            names = sorted(lost)
        raise RuntimeError(f"devices not found after insert: {sorted(lost)[:5]}")


def _latest(query):
    """``query`` as a locking read, which sees the latest committed rows.

    Another writer (competing consumers on one queue) may have inserted the
    same new device or metric in a transaction still open when ours ran its
    insert-ignore: the insert waits for that commit and ignores the row, but
    a plain SELECT then reads our transaction's REPEATABLE READ snapshot
    (MariaDB/MySQL), taken before that commit, and misses it. A locking read
    (``LOCK IN SHARE MODE`` / ``FOR SHARE``; nothing on SQLite) reads the
    committed row.
    """
    return query.with_for_update(read=True)


def _rowcount(result, default: int) -> int:
    n = result.rowcount
    return default if n is None or n < 0 else n
