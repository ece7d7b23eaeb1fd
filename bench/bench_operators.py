#!/usr/bin/env python
"""Benchmark centaure_shared.operators pipelines on polled values.

Simulates a poller applying one metric's pipeline to --values values: --keys
table rows (think interfaces) polled --values/--keys times, 60 s apart.  Each
row has its OperatorContext (bound to its StateStore entry) created once and
re-used; per value the loop sets ``ctx.now`` and calls ``pipeline.apply``.

Cases:
  loop only       the loop and the ctx.now update, no call (the floor)
  empty pipeline  a metric without operators
  scale           scale(factor=8)
  counter_rate    counter_rate() on Counter32 values that wrap now and then
  rate+scale      counter_rate() then scale(factor=8): bits/s from octets

Each case runs --runs times (default 3); the median is printed, in values per
CPU-second of this process (time.process_time), i.e. per core.

Usage: .venv/bin/python bench/bench_operators.py [--values 1000000] [--keys 1000] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from centaure_shared.metric import MetricSpec, OperatorCall  # noqa: E402
from centaure_shared.operators import (  # noqa: E402
    SKIP,
    Pipeline,
    StateStore,
    compile_pipeline,
    default_registry,
)


def make_rows(keys: int, polls: int) -> list[list[int]]:
    """Counter32 values per poll: each key counts at its own rate, wrapping at 2**32."""
    rnd = random.Random(42)
    start = [rnd.randrange(2**32) for _ in range(keys)]
    speed = [rnd.randrange(1, 50_000_000) for _ in range(keys)]   # octets per 60 s
    return [[(s + p * v) % 2**32 for s, v in zip(start, speed)] for p in range(polls)]


def run_case(pipeline: Pipeline | None, rows: list[list[int]]) -> tuple[float, int]:
    """One pass over every value with fresh state; returns (CPU seconds, SKIPs)."""
    store = StateStore()
    name = pipeline.metric if pipeline is not None else "m"
    ctxs = [store.context("router1", name, str(i), 0.0, uptime=None, tag="Counter32")
            for i in range(len(rows[0]))]
    skipped = 0
    t0 = time.process_time()
    if pipeline is None:
        for poll, row in enumerate(rows):
            now = poll * 60.0
            for c, v in zip(ctxs, row):
                c.now = now
    else:
        apply = pipeline.apply
        for poll, row in enumerate(rows):
            now = poll * 60.0
            for c, v in zip(ctxs, row):
                c.now = now
                if apply(v, c) is SKIP:
                    skipped += 1
    return time.process_time() - t0, skipped


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--values", type=int, default=1_000_000,
                    help="values per measurement (default 1,000,000)")
    ap.add_argument("--keys", type=int, default=1000,
                    help="distinct (device, metric, index) keys (default 1000)")
    ap.add_argument("--runs", type=int, default=3,
                    help="measurements per case; the median is printed (default 3)")
    args = ap.parse_args(argv)
    polls = max(2, args.values // args.keys)
    rows = make_rows(args.keys, polls)
    total = polls * args.keys

    registry = default_registry()

    def compiled(*calls: OperatorCall) -> Pipeline:
        return compile_pipeline(registry, MetricSpec("ifInOctets", "1.3.6.1.2.1.2.2.1.10",
                                                     kind="counter", operators=calls))

    cases: list[tuple[str, Pipeline | None]] = [
        ("loop only", None),
        ("empty pipeline", compiled()),
        ("scale", compiled(OperatorCall("scale", {"factor": 8}))),
        ("counter_rate", compiled(OperatorCall("counter_rate"))),
        ("rate+scale", compiled(OperatorCall("counter_rate"),
                                OperatorCall("scale", {"factor": 8}))),
    ]
    print(f"Python {sys.version.split()[0]}; {total:,} values = {args.keys:,} keys x "
          f"{polls:,} polls; {args.runs} runs, median shown (values per CPU-second)")
    floor = None
    for name, pipeline in cases:
        times, skipped = [], 0
        for _ in range(args.runs):
            dt, skipped = run_case(pipeline, rows)
            times.append(dt)
        med = statistics.median(times)
        rate = total / med
        per_value_ns = med / total * 1e9
        extra = "" if floor is None else f"  (+{per_value_ns - floor:5.0f} ns over the loop)"
        if floor is None:
            floor = per_value_ns
        note = f"  SKIP {skipped:,}" if skipped else ""
        print(f"  {name:<15} {rate:>13,.0f} /s  {per_value_ns:6.0f} ns/value{extra}{note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
