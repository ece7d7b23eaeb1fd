"""Encode and decode cost of a ``perf`` message: msgspec vs orjson vs stdlib json.

Usage::

    .venv/bin/python bench/bench_messages.py [--metrics 50] [--number 10000] [--runs 3]

Every case runs ``--runs`` times (interleaved, so that a noisy neighbour hurts
all cases alike) and the median is printed, per message, per metric and as
messages per second. Times are the CPU time of this process (a shared machine
skews them less than wall time); the garbage collector stays on, as in a daemon.

Decode cases all end with the same validated ``Perf`` struct, except the one
marked "no validation", given as a floor.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from connector import messages as m  # noqa: E402

try:
    import orjson
except ImportError:  # optional test dependency
    orjson = None  # type: ignore[assignment]


def make_perf(n_metrics: int) -> m.Perf:
    """A poll of a switch/UPS as the poller would send it: counters, gauges, some text."""
    metrics = []
    for i in range(n_metrics):
        col = i % 5
        if col == 0:
            metric = m.Metric(name="ifHCInOctets", index=str(i + 1), value=9_876_543_210_123 + i,
                              kind="counter", unit="octets", oid=f"1.3.6.1.2.1.31.1.1.1.6.{i + 1}")
        elif col == 1:
            metric = m.Metric(name="ifHCOutOctets", index=str(i + 1), value=1_234_567_890 + i,
                              kind="counter", unit="octets", oid=f"1.3.6.1.2.1.31.1.1.1.10.{i + 1}")
        elif col == 2:
            metric = m.Metric(name="ifOperStatus", index=str(i + 1), value=1, kind="gauge",
                              oid=f"1.3.6.1.2.1.2.2.1.8.{i + 1}")
        elif col == 3:
            metric = m.Metric(name="upsInputVoltage", index=str(i + 1), value=229.5 + i / 10,
                              kind="gauge", unit="V", oid=f"1.3.6.1.2.1.33.1.3.3.1.3.{i + 1}")
        else:
            metric = m.Metric(name="ifAlias", index=str(i + 1), value=f"uplink to rack {i}",
                              kind="text", oid=f"1.3.6.1.2.1.31.1.1.1.18.{i + 1}")
        metrics.append(metric)
    return m.Perf(ts=1767225600.123456, source="centaure-snmp@node1",
                  host="sw-core-1.dc1.example.net", address="192.0.2.1",
                  device_type="switch", metrics=metrics)


def build_cases(msg: m.Perf) -> list[tuple[str, str, Callable[[], Any]]]:
    """(operation, label, zero-argument callable) for every measured case."""
    body = m.encode(msg)
    as_dict = msgspec.to_builtins(msg)
    # Same message as another writer might format it: decode() cannot read the
    # type and version from encode()'s prefix and makes the envelope pass.
    foreign = json.dumps(as_dict).encode()
    perf_decoder = msgspec.json.Decoder(m.Perf)
    to_builtins = msgspec.to_builtins
    convert = msgspec.convert
    message_type = m.Message
    dumps = json.dumps
    loads = json.loads

    cases: list[tuple[str, str, Callable[[], Any]]] = [
        ("encode", "msgspec  messages.encode(struct)", lambda: m.encode(msg)),
    ]
    if orjson is not None:
        ojdumps, ojloads = orjson.dumps, orjson.loads
        cases += [
            ("encode", "orjson   dumps(dict)", lambda: ojdumps(as_dict)),
            ("encode", "orjson   dumps(to_builtins(struct))", lambda: ojdumps(to_builtins(msg))),
        ]
    cases += [
        ("encode", "json     dumps(dict)", lambda: dumps(as_dict, separators=(",", ":")).encode()),
        ("encode", "json     dumps(to_builtins(struct))",
         lambda: dumps(to_builtins(msg), separators=(",", ":")).encode()),
        ("decode", "msgspec  messages.decode(body)", lambda: m.decode(body)),
        ("decode", "msgspec  messages.decode(foreign body)", lambda: m.decode(foreign)),
        ("decode", "msgspec  Decoder(Perf).decode(body), bare", lambda: perf_decoder.decode(body)),
    ]
    if orjson is not None:
        cases += [
            ("decode", "orjson   convert(loads(body), Message)",
             lambda: convert(ojloads(body), message_type)),
            ("decode", "orjson   loads(body), no validation", lambda: ojloads(body)),
        ]
    cases += [
        ("decode", "json     convert(loads(body), Message)",
         lambda: convert(loads(body), message_type)),
        ("decode", "json     loads(body), no validation", lambda: loads(body)),
    ]
    return cases


def check(msg: m.Perf, cases: list[tuple[str, str, Callable[[], Any]]]) -> None:
    """Every case must produce the same thing, or its figure means nothing."""
    for op, label, fn in cases:
        out = fn()
        if op == "encode":
            assert m.decode(out) == msg, label
        elif "no validation" in label:
            assert out == msgspec.to_builtins(msg), label
        else:
            assert out == msg, label


def time_case(fn: Callable[[], Any], number: int) -> float:
    """CPU seconds per call over ``number`` calls."""
    start = time.process_time()
    for _ in range(number):
        fn()
    return (time.process_time() - start) / number


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--metrics", type=int, default=50, help="metrics per perf message")
    parser.add_argument("--number", type=int, default=10000, help="messages per run and case")
    parser.add_argument("--runs", type=int, default=3, help="runs; the median is printed")
    args = parser.parse_args(argv)

    msg = make_perf(args.metrics)
    cases = build_cases(msg)
    check(msg, cases)
    gc.enable()

    results: dict[str, list[float]] = {label: [] for _, label, _ in cases}
    for _ in range(args.runs):
        for _, label, fn in cases:
            for _ in range(min(1000, args.number)):  # warm caches and allocator
                fn()
            results[label].append(time_case(fn, args.number))

    versions = [f"python {platform.python_version()}", f"msgspec {msgspec.__version__}"]
    versions.append(f"orjson {orjson.__version__}" if orjson is not None else "orjson not installed")
    print(f"perf message: {args.metrics} metrics, {len(m.encode(msg))} bytes of JSON; "
          f"{args.number} messages x {args.runs} runs, median; {', '.join(versions)}")
    print(f"{'op':<7} {'case':<44} {'us/msg':>9} {'us/metric':>10} {'msg/s':>10}")
    for op, label, _ in cases:
        per_msg = statistics.median(results[label])
        print(f"{op:<7} {label:<44} {per_msg * 1e6:9.2f} {per_msg * 1e6 / args.metrics:10.3f} "
              f"{1 / per_msg:10,.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
