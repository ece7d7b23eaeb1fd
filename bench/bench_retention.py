"""Samples: migrating a filled table, dropping old days, insert rate, bytes per row.

Against the real MariaDB and PostgreSQL of this machine (database ``test``,
a fresh table prefix per run, dropped afterwards). Parts, per server:

1. ``migrate``: ``--rows`` sample rows over 30 days in the wide table of
   revision 0004 (device_id, metric_id, idx, ts, value_num, value_text; a
   partition per day), then ``migrate.upgrade`` to head (0005: series,
   narrow samples): seconds, and per million rows; every row checked kept.
2. ``retention``: ``maintain`` with 14 days kept on that table: the 15 or
   16 oldest days dropped as partitions; then the same rows deleted in
   batches from a table not partitioned (``create_all``), as SQLite and
   unpartitioned tables are purged.
3. ``insert``: rows/s of the writer's insert-ignore executemany (5,000 rows
   per transaction) into the narrow samples of head and into the wide
   samples of revision 0004 (both partitioned), alternated ``--runs``
   times (medians).
5. ``bytes`` (``--bytes``): the issue's data set (1,000 devices x 61 values x 20
   polls a minute apart, 1,220,000 rows) in the partitioned table, rolled
   up: bytes of data and indexes per raw row and per rollup row.
4. ``graph`` (``--graph``): one device, 10 gauges and a counter polled every
   minute for 30 days (475,200 rows): the rollups' build time, then a
   30-day graph of one metric read raw (43,200 rows) and from the hourly
   rollups (720 rows), median of ``--runs``.
6. ``history`` (``--history``): ``--rows`` alarm state changes over 30 days
   in the table of revision 0003, then the upgrade to 0004 (daily partitions
   of alarm history, thresholds and notifications): seconds, every row
   checked kept; then ``maintain`` with 14 days of alarm history kept: the 16
   oldest days dropped as partitions, and the rows older than 14 days deleted
   in batches from a table of revision 0003 (not partitioned) filled alike.

Usage:
    .venv/bin/python bench/bench_retention.py [--rows 1000000] [--runs 3]
        [--servers mariadb,postgresql]
"""

from __future__ import annotations

import argparse
import os
import random
import re
import statistics
import sys
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import sqlalchemy as sa  # noqa: E402
from alembic import command  # noqa: E402

from connector_db import migrate, partitions  # noqa: E402
from connector_db.maintain import Retention, maintain  # noqa: E402
from connector_db.store import insert_ignore  # noqa: E402
from centaure_shared.storage.schema import make_schema  # noqa: E402

URLS = {
    "mariadb": os.environ.get("CENTAURE_TEST_MARIADB", "mysql+pymysql://root@127.0.0.1:3306/test"),
    "postgresql": os.environ.get("CENTAURE_TEST_POSTGRESQL",
                                 "postgresql+psycopg2://postgres@127.0.0.1:5432/test"),
}
DAY = 86_400_000
METRICS = 61
DEVICES = 100


def drop(engine, p: str) -> None:
    md = sa.MetaData()
    # PostgreSQL's time partitions go with their tables.
    md.reflect(engine, only=lambda name, _md: name.startswith(p)
               and not re.search(r"_p(?:[0-9]{8}_[0-9]{4}|default)$", name))
    md.drop_all(engine)


#: The last revision with wide samples (device_id, metric_id, idx, ts, value_num, value_text).
WIDE = "0004"


def to_revision(engine, p: str, revision: str = WIDE) -> None:
    with engine.connect() as c:
        command.upgrade(migrate._config(p, c), revision)
        c.commit()


def wide_samples(p: str) -> sa.TableClause:
    """The samples table of revision 0004 and before."""
    return sa.table(f"{p}samples", *(sa.column(c) for c in (
        "device_id", "metric_id", "idx", "ts", "value_num", "value_text")))


def make_series(engine, schema, devices: int, metrics: int) -> dict[tuple[int, int], int]:
    """A series per device and metric (index ''); their ids."""
    with engine.begin() as c:
        c.execute(sa.insert(schema.series), [
            {"device_id": d, "metric_id": m, "idx": ""}
            for d in range(1, devices + 1) for m in range(1, metrics + 1)])
        return {(d, m): i for i, d, m in c.execute(sa.select(
            schema.series.c.id, schema.series.c.device_id, schema.series.c.metric_id))}


def fill(engine, schema, rows: int, end_ms: int, wide: bool = False) -> None:
    """``rows`` samples spread evenly over the 30 days before ``end_ms`` (``wide``: in the
    samples of revision 0004)."""
    polls = max(1, rows // (DEVICES * METRICS))
    step = 30 * DAY // polls
    if wide:
        stmt = sa.insert(wide_samples(schema.prefix))
    else:
        stmt = insert_ignore(engine.dialect.name, schema.samples)
        series = make_series(engine, schema, DEVICES, METRICS)
    batch: list[dict] = []
    done = 0
    with engine.begin() as c:
        c.execute(sa.insert(schema.devices), [{"id": d, "name": f"r{d}"}
                                              for d in range(1, DEVICES + 1)])
        # The metrics the series name: without them the rollups find nothing to build.
        c.execute(sa.insert(schema.metrics), [{"id": m, "name": f"m{m}", "kind": "gauge"}
                                              for m in range(1, METRICS + 1)])
    for poll in range(polls):
        ts = end_ms - 30 * DAY + poll * step
        for d in range(1, DEVICES + 1):
            for m in range(1, METRICS + 1):
                if wide:
                    batch.append({"device_id": d, "metric_id": m, "idx": "", "ts": ts,
                                  "value_num": float(m), "value_text": None})
                else:
                    batch.append({"series_id": series[(d, m)], "ts": ts, "value": float(m)})
                done += 1
                if len(batch) == 20_000 or done == rows:
                    with engine.begin() as c:
                        c.execute(stmt, batch)
                    batch = []
                if done == rows:
                    return
    if batch:
        with engine.begin() as c:
            c.execute(stmt, batch)


def count(engine, schema) -> int:
    """Samples stored (numbers and texts; in any layout)."""
    with engine.connect() as c:
        n = c.execute(sa.select(sa.func.count()).select_from(
            sa.table(schema.samples.name))).scalar_one()
        if sa.inspect(c).has_table(schema.samples_text.name):
            n += c.execute(sa.select(sa.func.count()).select_from(
                schema.samples_text)).scalar_one()
        return n


def bench_migrate_and_retention(name: str, rows: int) -> dict:
    engine = sa.create_engine(URLS[name])
    p = f"r{uuid.uuid4().hex[:8]}_"
    schema = make_schema(p)
    now_ms = int(time.time() * 1000)
    out = {}
    plain = f"r{uuid.uuid4().hex[:8]}_"
    try:
        # Filled before 0002, so that 0002 makes a partition per day of rows, as a
        # database upgraded through the revisions has.
        to_revision(engine, p, "0001")
        fill(engine, schema, rows, now_ms, wide=True)
        to_revision(engine, p, WIDE)
        n = count(engine, schema)
        started = time.perf_counter()
        migrate.upgrade(engine, p)
        out["migrate_s"] = time.perf_counter() - started
        assert count(engine, schema) == n, "rows lost by the migration"
        with engine.connect() as c:
            out["partitions"] = len(partitions.partitions(c, schema.samples.name))
        out["rows"] = n
        from connector_db import rollups

        started = time.perf_counter()
        rollups.build(engine, schema, now_ms)
        out["rollup_s"] = time.perf_counter() - started
        started = time.perf_counter()
        report = maintain(engine, schema, Retention(), now=now_ms / 1000)
        out["drop_s"] = time.perf_counter() - started
        out["dropped_partitions"] = len(report.dropped)
        left = count(engine, schema)
        out["dropped_rows"] = n - left
        # The same purge by batched deletes, on a table not partitioned.
        from centaure_shared.storage.schema import create_all
        from connector_db.maintain import _delete_series

        other = make_schema(plain)
        create_all(engine, other)
        fill(engine, other, rows, now_ms)
        started = time.perf_counter()
        out["deleted_rows"] = _delete_series(engine, other, other.samples,
                                             now_ms - 14 * DAY, 5000, lambda line: None)
        out["delete_s"] = time.perf_counter() - started
        return out
    finally:
        drop(engine, p)
        drop(engine, plain)
        engine.dispose()


def bench_insert(name: str, runs: int, rows: int = 200_000) -> dict:
    engine = sa.create_engine(URLS[name])
    prefixes = {"narrow": f"i{uuid.uuid4().hex[:8]}_", "wide": f"i{uuid.uuid4().hex[:8]}_"}
    now_ms = int(time.time() * 1000)
    rates: dict[str, list[float]] = {k: [] for k in prefixes}
    try:
        migrate.upgrade(engine, prefixes["narrow"])
        series = make_series(engine, make_schema(prefixes["narrow"]), DEVICES, METRICS)
        to_revision(engine, prefixes["wide"])
        for run in range(runs):
            for kind, p in prefixes.items():
                s = make_schema(p)
                # A poll per second over ~55 minutes: within today and tomorrow's partitions.
                base = now_ms + run * 10 * DAY // 100
                if kind == "wide":
                    stmt = insert_ignore(engine.dialect.name, wide_samples(p))
                    data = [{"device_id": 1 + (i // METRICS) % DEVICES,
                             "metric_id": 1 + i % METRICS, "idx": "",
                             "ts": base + (i // (METRICS * DEVICES)) * 1000,
                             "value_num": float(i), "value_text": None} for i in range(rows)]
                else:
                    stmt = insert_ignore(engine.dialect.name, s.samples)
                    data = [{"series_id": series[(1 + (i // METRICS) % DEVICES,
                                                  1 + i % METRICS)],
                             "ts": base + (i // (METRICS * DEVICES)) * 1000,
                             "value": float(i)} for i in range(rows)]
                started = time.perf_counter()
                for i in range(0, rows, 5000):
                    with engine.begin() as conn:
                        conn.execute(stmt, data[i:i + 5000])
                rates[kind].append(rows / (time.perf_counter() - started))
        return {k: statistics.median(v) for k, v in rates.items()}
    finally:
        for p in prefixes.values():
            drop(engine, p)
        engine.dispose()


def bench_graph(name: str, runs: int) -> dict:
    from centaure_shared.storage import query
    from connector_db import rollups

    engine = sa.create_engine(URLS[name])
    p = f"g{uuid.uuid4().hex[:8]}_"
    schema = make_schema(p)
    now_ms = int(time.time() * 1000) // 60_000 * 60_000
    minutes = 30 * 1440
    try:
        migrate.upgrade(engine, p)
        with engine.begin() as c:
            c.execute(sa.insert(schema.devices), [{"id": 1, "name": "r1"}])
            c.execute(sa.insert(schema.metrics), [
                {"id": m, "name": f"m{m}", "kind": "counter" if m == 11 else "gauge"}
                for m in range(1, 12)])
        stmt = insert_ignore(engine.dialect.name, schema.samples)
        series = make_series(engine, schema, 1, 11)
        rows = [{"series_id": series[(1, m)], "ts": now_ms - i * 60_000,
                 "value": float((i * 7919 + m) % 1000) if m < 11 else float(i * 1000)}
                for i in range(minutes) for m in range(1, 12)]
        for i in range(0, len(rows), 20_000):
            with engine.begin() as c:
                c.execute(stmt, rows[i:i + 20_000])
        started = time.perf_counter()
        rollups.build(engine, schema, now_ms)
        build_s = time.perf_counter() - started
        start = (now_ms - 30 * 86_400_000) / 1000
        raw_t, roll_t = [], []
        for _ in range(runs):
            t = time.perf_counter()
            raw = query.samples(engine, schema, "r1", "m1", start=start, limit=100_000)
            raw_t.append(time.perf_counter() - t)
            t = time.perf_counter()
            hourly = query.rollups(engine, schema, "r1", "m1", start=start, limit=100_000,
                                   resolution="1h")
            roll_t.append(time.perf_counter() - t)
        return {"rows": len(rows), "build_s": build_s, "raw_rows": len(raw),
                "raw_s": statistics.median(raw_t), "rollup_rows": len(hourly),
                "rollup_s": statistics.median(roll_t)}
    finally:
        drop(engine, p)
        engine.dispose()


def _size(engine, table: str) -> int:
    """Bytes of data and indexes of ``table`` (all its partitions) on disk."""
    with engine.connect() as c:
        if engine.dialect.name == "postgresql":
            c.exec_driver_sql(f'ANALYZE "{table}"')
            return int(c.execute(sa.text(
                "SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
                "WHERE c.oid = to_regclass(:t) OR c.oid IN (SELECT inhrelid FROM pg_inherits "
                "WHERE inhparent = to_regclass(:t))"), {"t": table}).scalar())
        # Bytes the files take on disk: with page compression (samples on MariaDB) that is
        # less than information_schema's data_length, which counts pages uncompressed.
        # FOR EXPORT writes the table's dirty pages out first.
        c.exec_driver_sql(f"FLUSH TABLES `{table}` FOR EXPORT")
        c.exec_driver_sql("UNLOCK TABLES")
        c.exec_driver_sql(f"ANALYZE TABLE `{table}`").all()
        pages = int(c.execute(sa.text(
            "SELECT SUM(data_length + index_length) FROM information_schema.partitions "
            "WHERE table_schema = DATABASE() AND table_name = :t"), {"t": table}).scalar())
        disk = int(c.execute(sa.text(
            "SELECT SUM(allocated_size) FROM information_schema.innodb_sys_tablespaces "
            "WHERE name = CONCAT(DATABASE(), '/', :t) "
            "OR name LIKE CONCAT(DATABASE(), '/', :t, '#P#%')"), {"t": table}).scalar())
        print(f"  {table}: {pages:,} bytes in pages, {disk:,} bytes on disk", flush=True)
        return disk


def bench_bytes(name: str, devices: int = 1000) -> dict:
    from connector_db import rollups

    engine = sa.create_engine(URLS[name])
    p = f"s{uuid.uuid4().hex[:8]}_"
    schema = make_schema(p)
    hour = 3_600_000
    base = int(time.time() * 1000) // hour * hour - 2 * hour
    try:
        migrate.upgrade(engine, p)
        with engine.begin() as c:
            c.execute(sa.insert(schema.devices), [{"id": d, "name": f"r{d}"}
                                                  for d in range(1, devices + 1)])
            c.execute(sa.insert(schema.metrics), [
                {"id": m, "name": f"m{m}", "kind": "counter" if m % 5 == 0 else "gauge"}
                for m in range(1, 62)])
        stmt = insert_ignore(engine.dialect.name, schema.samples)
        keys = [(d, m, str(m % 8) if m > 30 else "") for d in range(1, devices + 1)
                for m in range(1, 62)]
        with engine.begin() as c:
            c.execute(sa.insert(schema.series), [{"device_id": d, "metric_id": m, "idx": i}
                                                 for d, m, i in keys])
            series = {(d, m, i): id_ for id_, d, m, i in c.execute(sa.select(
                schema.series.c.id, schema.series.c.device_id, schema.series.c.metric_id,
                schema.series.c.idx))}
        # Values as devices give them, so that compression is not flattered: counters
        # (every fifth metric) grow by random amounts, gauges are random with two decimals
        # (their binary mantissas do not repeat).
        rnd = random.Random(20)
        counters = dict.fromkeys(keys, 0)
        batch = []
        for poll in range(20):
            for d in range(1, devices + 1):
                for m in range(1, 62):
                    key = (d, m, str(m % 8) if m > 30 else "")
                    if m % 5 == 0:
                        counters[key] += rnd.randrange(1_000_000)
                        value = float(counters[key])
                    else:
                        value = round(rnd.uniform(0, 100), 2)
                    batch.append({"series_id": series[key], "ts": base + poll * 60_000,
                                  "value": value})
            if len(batch) >= 61 * devices:
                with engine.begin() as c:
                    c.execute(stmt, batch)
                batch = []
        rollups.build(engine, schema, base + 2 * hour)
        out = {"series": _size(engine, schema.series.name) / len(keys)}
        for t in (schema.samples, schema.rollups_5m, schema.rollups_1h):
            key = t.name[len(p):]
            rows = count_rows(engine, t)
            out[key], out[f"{key}_rows"] = _size(engine, t.name) / max(rows, 1), rows
        return out
    finally:
        drop(engine, p)
        engine.dispose()


def fill_history(engine, schema, rows: int, end_ms: int) -> None:
    """``rows`` alarm state changes spread evenly over the 30 days before ``end_ms``."""
    step = 30 * DAY // rows
    stmt = insert_ignore(engine.dialect.name, schema.alarm_history)
    for first in range(0, rows, 20_000):
        with engine.begin() as c:
            c.execute(stmt, [
                {"message_id": uuid.UUID(int=i).hex, "ref": i // 2, "ts": ts,
                 "host": f"r{i % 1000}.example.net", "name": "linkDown", "severity": "major",
                 "state": "cleared" if i % 2 else "raised", "message": "link 3 down",
                 "first_seen": ts, "last_seen": ts, "cleared_at": None, "count": 1,
                 "origin": "trap", "acked_by": None, "flapping": False, "cause_ref": None}
                for i in range(first, min(first + 20_000, rows))
                for ts in [end_ms - 30 * DAY + i * step]])


def bench_history(name: str, rows: int) -> dict:
    """Part 6: alarm history of revision 0003 partitioned by revision 0004; 14 days kept
    of 30, by dropped partitions and by batched deletes."""
    engine = sa.create_engine(URLS[name])
    p, plain = f"e{uuid.uuid4().hex[:8]}_", f"e{uuid.uuid4().hex[:8]}_"
    now_ms = int(time.time() * 1000)
    keep = Retention(alarm_history=14 * 86400.0, lock_timeout=600.0)
    out = {"rows": rows}
    try:
        for prefix in (p, plain):
            with engine.connect() as c:
                command.upgrade(migrate._config(prefix, c), "0003")
                c.commit()
            fill_history(engine, make_schema(prefix), rows, now_ms)
        schema = make_schema(p)
        started = time.perf_counter()
        with engine.connect() as c:
            command.upgrade(migrate._config(p, c), "0004")
            c.commit()
        out["migrate_s"] = time.perf_counter() - started
        assert count_rows(engine, schema.alarm_history) == rows, "rows lost by the migration"
        with engine.connect() as c:
            out["partitions"] = len(partitions.partitions(c, schema.alarm_history.name))
        started = time.perf_counter()
        report = maintain(engine, schema, keep, now=now_ms / 1000, samples=False)
        out["drop_s"] = time.perf_counter() - started
        out["dropped_partitions"] = len(report.dropped_from[schema.alarm_history.name])
        out["dropped_rows"] = rows - count_rows(engine, schema.alarm_history)
        other = make_schema(plain)
        started = time.perf_counter()
        report = maintain(engine, other, keep, now=now_ms / 1000, samples=False)
        out["delete_s"] = time.perf_counter() - started
        out["deleted_rows"] = report.deleted[other.alarm_history.name]
        return out
    finally:
        drop(engine, p)
        drop(engine, plain)
        engine.dispose()


def count_rows(engine, table) -> int:
    with engine.connect() as c:
        return c.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--servers", default="mariadb,postgresql")
    ap.add_argument("--skip-insert", action="store_true")
    ap.add_argument("--graph", action="store_true", help="only part 4")
    ap.add_argument("--bytes", action="store_true", help="only part 5")
    ap.add_argument("--history", action="store_true", help="only part 6")
    args = ap.parse_args()
    for name in args.servers.split(","):
        if args.history:
            e = bench_history(name, args.rows)
            print(f"{name}: migration of {e['rows']:,} alarm history rows (30 days, "
                  f"{e['partitions']} partitions) from revision 0003 to 0004: {e['migrate_s']:.1f} s, "
                  f"{e['migrate_s'] / (e['rows'] / 1e6):.1f} s per million rows")
            print(f"{name}: 14 days of alarm history kept: {e['dropped_partitions']} partitions "
                  f"({e['dropped_rows']:,} rows) dropped in {e['drop_s']:.2f} s; in a table "
                  f"not partitioned, the {e['deleted_rows']:,} rows older than 14 days deleted "
                  f"in batches in {e['delete_s']:.1f} s")
            sys.stdout.flush()
            continue
        if args.bytes:
            b = bench_bytes(name)
            print(f"{name}: bytes per row (data + indexes): raw samples {b['samples']:.0f} "
                  f"({b['samples_rows']:,} rows), 5-minute rollups {b['rollups_5m']:.0f} "
                  f"({b['rollups_5m_rows']:,} rows), hourly rollups {b['rollups_1h']:.0f} "
                  f"({b['rollups_1h_rows']:,} rows); series {b['series']:.0f} per series")
            continue
        if args.graph:
            g = bench_graph(name, args.runs)
            print(f"{name}: rollups of {g['rows']:,} raw rows built in {g['build_s']:.1f} s "
                  f"({g['rows'] / g['build_s']:,.0f} raw rows/s); 30-day graph of one metric: "
                  f"raw {g['raw_rows']:,} rows in {g['raw_s'] * 1000:.0f} ms, hourly rollups "
                  f"{g['rollup_rows']} rows in {g['rollup_s'] * 1000:.1f} ms")
            continue
        r = bench_migrate_and_retention(name, args.rows)
        per_m = r["migrate_s"] / (r["rows"] / 1e6)
        print(f"{name}: migration of {r['rows']:,} rows (30 days, {r['partitions']} "
              f"partitions) from revision {WIDE} to narrow samples ({migrate.head()}): "
              f"{r['migrate_s']:.1f} s, {per_m:.1f} s per million rows")
        print(f"{name}: rollups (5m, 1h) of those {r['rows']:,} rows ({DEVICES} devices) built "
              f"in {r['rollup_s']:.1f} s ({r['rows'] / r['rollup_s']:,.0f} raw rows/s)")
        print(f"{name}: 14 days kept: {r['dropped_partitions']} partitions "
              f"({r['dropped_rows']:,} rows) dropped in {r['drop_s']:.2f} s; the same "
              f"{r['deleted_rows']:,} rows deleted in batches in {r['delete_s']:.1f} s")
        if not args.skip_insert:
            rates = bench_insert(name, args.runs)
            print(f"{name}: insert-ignore executemany into partitioned samples, median of "
                  f"{args.runs}: narrow (series_id, ts, value) {rates['narrow']:,.0f} rows/s, "
                  f"wide (revision {WIDE}) {rates['wide']:,.0f} rows/s "
                  f"({rates['narrow'] / rates['wide']:.2f}x)")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
