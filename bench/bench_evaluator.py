"""The threshold-rule evaluator alone: metric values evaluated per second.

In-process, on decoded values (``Perf`` structs built
beforehand; no bus, no JSON): 1,000 rules over 10,000 devices. Goal:
>= 1,000,000 values/s on one core.

The fleet: ``--types`` device types (10) of ``--devices`` / types devices
each, every device reporting ``--metrics`` (50) gauges per poll. The rules:
for each device type and metric, a warning rule and a critical rule selected
by device type (so each value is tested against the two rules of its
metric: the per-host plan leaves the other 998 out). Two rule mixes:

* ``simple``: both rules are plain comparisons (``> 80``, ``> 95``): the
  generated-comparison path;
* ``mixed``: the critical rule has a window (``consecutive: 3``) and
  hysteresis, which goes through the general leaf feeder.

Each value stays near its own level, and about 1% of values spike above the
thresholds, so rules do change state (transitions build ``threshold``
messages). One pass
feeds every device once (10,000 perf messages, 500,000 values); the figure
is the median of ``--runs`` passes (after one warm-up pass that builds the
per-host plans), by the wall clock; the rate per CPU second of this process
is printed too, as it is less disturbed by other work on a shared machine.

Usage:
    .venv/bin/python bench/bench_evaluator.py [--runs 3] [--devices 10000] [--types 10]
        [--metrics 50]
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from connector.messages import Metric, Perf  # noqa: E402
from connector_alerter.evaluator import Evaluator  # noqa: E402
from connector_alerter.rules import build_rules  # noqa: E402

GOAL = 1_000_000


def make_rules(types: int, metrics: int, mixed: bool) -> list:
    records = []
    for t in range(types):
        for m in range(metrics):
            metric = f"metric{m}"
            records.append((f"r{len(records)}", {
                "name": f"type{t}-{metric}-warning", "device_types": [f"type{t}"],
                "when": {"metric": metric, "op": ">", "value": 80}}))
            critical = {"metric": metric, "op": ">", "value": 95}
            if mixed:
                critical.update(consecutive=3, hysteresis=2)
            records.append((f"r{len(records)}", {
                "name": f"type{t}-{metric}-critical", "device_types": [f"type{t}"],
                "severity": "critical", "when": critical}))
    return list(build_rules(records, "bench"))


def make_polls(devices: int, types: int, metrics: int, passes: int, seed: int = 1) -> list[list[Perf]]:
    rng = random.Random(seed)
    # Each value sits at its own level (0..75) with some noise; about 1% of
    # values spike to 85..100, so rules breach and recover now and then.
    levels = [[rng.uniform(0, 75) for _ in range(metrics)] for _ in range(devices)]
    out = []
    for p in range(passes):
        polls = []
        for d in range(devices):
            level = levels[d]
            values = [rng.uniform(85, 100) if rng.random() < 0.01 else level[m] + rng.uniform(-3, 3)
                      for m in range(metrics)]
            polls.append(Perf(source="poller@bench", ts=1_000_000.0 + p * 60, host=f"dev{d}",
                              address="10.0.0.1", device_type=f"type{d % types}",
                              metrics=[Metric(name=f"metric{m}", value=values[m], kind="gauge",
                                              oid=f"1.3.6.1.4.1.9.{m}")
                                       for m in range(metrics)]))
        out.append(polls)
    return out


def run(mixed: bool, args: argparse.Namespace) -> float:
    rules = make_rules(args.types, args.metrics, mixed)
    evaluator = Evaluator(rules, {}, "alerter@bench")
    passes = make_polls(args.devices, args.types, args.metrics, args.runs + 1)
    evaluate = evaluator.evaluate
    for perf in passes[0]:                       # warm-up: plans built
        evaluate(perf)
    # The polls are long-lived input: keep the collector from rescanning
    # them in every pass (a consumer's decoded messages die young instead).
    gc.collect()
    gc.freeze()
    rates = []
    cpu_rates = []
    transitions = 0
    for polls in passes[1:]:
        values = sum(len(p.metrics) for p in polls)
        start, cpu_start = time.perf_counter(), time.process_time()
        for perf in polls:
            transitions += len(evaluate(perf))
        elapsed = time.perf_counter() - start
        cpu = time.process_time() - cpu_start
        rates.append(values / elapsed)
        cpu_rates.append(values / cpu if cpu > 0 else float("inf"))
    gc.unfreeze()
    median = statistics.median(rates)
    print(f"{'mixed' if mixed else 'simple'}: {len(rules)} rules, {args.devices} devices, "
          f"{args.metrics} values per poll: {median:,.0f} values/s (median of {args.runs}; "
          f"runs {', '.join(f'{r:,.0f}' for r in rates)}; per CPU second "
          f"{statistics.median(cpu_rates):,.0f}; {transitions} transitions)")
    return median


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--devices", type=int, default=10000)
    parser.add_argument("--types", type=int, default=10)
    parser.add_argument("--metrics", type=int, default=50)
    args = parser.parse_args()
    simple = run(False, args)
    mixed = run(True, args)
    print(f"goal: >= {GOAL:,} values/s on one core (evaluator alone): "
          f"simple {'met' if simple >= GOAL else 'NOT met'}, mixed {'met' if mixed >= GOAL else 'NOT met'}")


if __name__ == "__main__":
    main()
