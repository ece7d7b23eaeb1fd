"""The alerter's start-up replay: the stored samples of the watched metrics read back.

The alerter rebuilds its windows at start-up from the samples the
SQL writer stored (``centaure_shared.storage.query``). Fresh tables of a unique prefix
on MariaDB (dropped afterwards) hold ``--hosts`` devices x ``--metrics``
gauges x ``--polls`` polls of the last hour; every metric is watched, as by
the 1,000 rules of ``bench_evaluator.py``. Timed, each the median of
``--runs``:

1. reference, one query per (host, metric): ``query.samples(host, metric)``
   for each watched metric, as the alerter read them before;
2. one query per host: ``query.samples(host, metrics=[...])``, as it reads
   them now (``connector_alerter.replay.Replay``).

Both must return the same rows (checked). Printed: samples read per second
and the whole read's time for the fleet, with the ratio to the reference.

Usage:
    .venv/bin/python bench/bench_backfill.py [--runs 3] [--hosts 500] [--metrics 50] [--polls 10]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import sqlalchemy as sa  # noqa: E402

from bench.bench_db import MARIADB_URL, drop_prefixed  # noqa: E402
from connector_db import migrate  # noqa: E402
from centaure_shared.storage import query  # noqa: E402
from centaure_shared.storage.schema import make_schema  # noqa: E402


def fill(engine: sa.Engine, schema, hosts: int, metrics: int, polls: int, now: float) -> int:
    """Devices, metric names and samples (one per host, metric and poll, a minute apart)."""
    with engine.begin() as conn:
        conn.execute(schema.devices.insert(), [
            {"id": h + 1, "name": f"dev{h}", "address": "10.0.0.1", "device_type": "router"}
            for h in range(hosts)])
        conn.execute(schema.metrics.insert(), [
            {"id": m + 1, "name": f"metric{m}", "kind": "gauge", "unit": None}
            for m in range(metrics)])
        # One series per host and metric (index ''), ids in that order.
        conn.execute(schema.series.insert(), [
            {"device_id": h + 1, "metric_id": m + 1, "idx": ""}
            for h in range(hosts) for m in range(metrics)])
        series = {(d, m): i for i, d, m in conn.execute(sa.select(
            schema.series.c.id, schema.series.c.device_id, schema.series.c.metric_id))}
    start_ms = int((now - 60 * polls) * 1000)
    rows = 0
    for h in range(hosts):
        batch = [{"series_id": series[(h + 1, m + 1)], "ts": start_ms + 60_000 * p,
                  "value": float(m + p)}
                 for m in range(metrics) for p in range(polls)]
        with engine.begin() as conn:
            conn.execute(schema.samples.insert(), batch)
        rows += len(batch)
    return rows


def per_metric(engine, schema, hosts: list[str], names: list[str], start: float) -> list:
    out = []
    for host in hosts:
        for name in names:
            out.extend(query.samples(engine, schema, host, name, start=start, limit=10_000,
                                     order="asc"))
    return out


def per_host(engine, schema, hosts: list[str], names: list[str], start: float) -> list:
    out = []
    for host in hosts:
        out.extend(query.samples(engine, schema, host, metrics=names, start=start,
                                 limit=10_000 * len(names), order="asc"))
    return out


def timed(fn, *args) -> tuple[float, list]:
    started = time.perf_counter()
    rows = fn(*args)
    return time.perf_counter() - started, rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--hosts", type=int, default=500)
    ap.add_argument("--metrics", type=int, default=50)
    ap.add_argument("--polls", type=int, default=10)
    args = ap.parse_args()
    prefix = f"bf{uuid.uuid4().hex[:8]}_"
    engine = sa.create_engine(MARIADB_URL)
    try:
        migrate.upgrade(engine, prefix)
        schema = make_schema(prefix)
        now = time.time()
        t = time.perf_counter()
        stored = fill(engine, schema, args.hosts, args.metrics, args.polls, now)
        print(f"{stored:,} samples stored ({args.hosts} hosts x {args.metrics} metrics x "
              f"{args.polls} polls) in {time.perf_counter() - t:.1f} s", flush=True)
        hosts = [f"dev{h}" for h in range(args.hosts)]
        names = [f"metric{m}" for m in range(args.metrics)]
        start = now - 3600
        results: dict[str, list[float]] = {"per (host, metric)": [], "per host": []}
        for run in range(args.runs):
            ref_s, ref_rows = timed(per_metric, engine, schema, hosts, names, start)
            new_s, new_rows = timed(per_host, engine, schema, hosts, names, start)
            key = (lambda r: (r.host, r.metric, r.index, r.ts))
            if sorted(ref_rows, key=key) != sorted(new_rows, key=key) or len(new_rows) != stored:
                raise SystemExit(f"the two reads differ: {len(ref_rows)} and {len(new_rows)} "
                                 f"rows of {stored}")
            results["per (host, metric)"].append(ref_s)
            results["per host"].append(new_s)
            print(f"  run {run + 1}: per (host, metric) {ref_s:.2f} s "
                  f"({args.hosts * args.metrics:,} queries), per host {new_s:.2f} s "
                  f"({args.hosts:,} queries)", flush=True)
        ref = statistics.median(results["per (host, metric)"])
        for name, times in results.items():
            med = statistics.median(times)
            print(f"{name}: {stored / med:,.0f} samples/s, {med:.2f} s for the fleet "
                  f"(median of {args.runs}; runs {', '.join(f'{x:.2f}' for x in times)}) = "
                  f"{ref / med:.1f} x the per-(host, metric) reference")
    finally:
        engine.dispose()
        drop_prefixed(MARIADB_URL, prefix)


if __name__ == "__main__":
    main()
