"""The alerter end to end: metric values evaluated per second from RabbitMQ by ``centaure-alerter``.

End to end from the real RabbitMQ, JSON decoding included:
1,000 rules over 10,000 devices (the rules and the fleet of
``bench_evaluator.py``: 10 device types, 50 gauges per poll, a warning and a
critical rule per type and metric, ~1% of values spiking over the
thresholds). Goal: >= 300,000 values/s.

Each run: ``<prefix>.alerter`` (declared as ``connector.topology`` says) is
pre-filled with ``--passes`` x ``--devices`` persistent ``perf`` messages
(encoded with :mod:`connector.messages`, 50 values each), then ``twistd -n
centaure-alerter`` starts on it (rules file from the same generator,
``backfill = false``, no routes file: nobody is notified) and drains it,
publishing its ``threshold`` messages (with confirms, inputs acked once they
are confirmed) to a durable queue bound to ``<prefix>.threshold`` (as the
correlator's would be). The rate is the daemon's own ``values_evaluated``
counter (/metrics) between 10% and 90% of the backlog; the daemon's CPU time
(/proc) tells whether it computes or waits.

The reference, in this process on the very same bodies: ``messages.decode``
then ``Evaluator.evaluate`` (no bus), after a warm-up pass.

``--py-spy FILE`` samples the daemon with py-spy during its drain (first run
only) and prints where its time goes (self time by function, and the share
of the main steps); the raw collapsed stacks stay in FILE.

Usage:
    .venv/bin/python bench/bench_alerter.py [--runs 3] [--devices 10000] [--types 10]
        [--metrics 50] [--passes 4] [--prefetch 500] [--py-spy FILE] [--no-breach]
        [--skip-reference]
"""

from __future__ import annotations

import argparse
import collections
import gc
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import pika  # noqa: E402
import yaml  # noqa: E402

from bench.bench_correlator import Daemon, amqp, declare, delete_bus, queue_count  # noqa: E402
from bench.bench_db import BIN, sustained_rate  # noqa: E402
from bench.bench_evaluator import make_polls  # noqa: E402
from connector import messages  # noqa: E402
from connector.topology import connector_queue  # noqa: E402

GOAL = 300_000


def rule_records(types: int, metrics: int, never: bool = False) -> list[dict]:
    """bench_evaluator's ``simple`` rules as a YAML rules file holds them.

    ``never``: thresholds no value reaches (1,000 and 2,000): no transition,
    nothing published, every input acked at once.
    """
    warning, critical = (1000, 2000) if never else (80, 95)
    records = []
    for t in range(types):
        for m in range(metrics):
            metric = f"metric{m}"
            records.append({"name": f"type{t}-{metric}-warning", "device_types": [f"type{t}"],
                            "when": {"metric": metric, "op": ">", "value": warning}})
            records.append({"name": f"type{t}-{metric}-critical", "device_types": [f"type{t}"],
                            "severity": "critical",
                            "when": {"metric": metric, "op": ">", "value": critical}})
    return records


def make_bodies(args: argparse.Namespace) -> list[tuple[str, bytes]]:
    """(routing key, body) of every perf message: ``--passes`` polls of the fleet."""
    out = []
    for polls in make_polls(args.devices, args.types, args.metrics, args.passes):
        out.extend((messages.routing_key(p), messages.encode(p)) for p in polls)
    return out


# --- reference: decode + evaluate in this process ---------------------------------------

def bench_reference(bodies: list[tuple[str, bytes]], args: argparse.Namespace) -> float:
    from connector_alerter.evaluator import Evaluator
    from connector_alerter.rules import build_rules

    rules = list(build_rules([(f"r{i}", r) for i, r in
                              enumerate(rule_records(args.types, args.metrics, args.no_breach))], "bench"))
    evaluator = Evaluator(rules, {}, "alerter@bench")
    decode, evaluate = messages.decode, evaluator.evaluate
    per_pass = args.devices
    for _, body in bodies[:per_pass]:                    # warm-up: plans built
        evaluate(decode(body), time.time())
    gc.collect()
    values = 0
    now = time.time()
    start = time.perf_counter()
    for _, body in bodies[per_pass:]:
        perf = decode(body)
        values += len(perf.metrics)
        evaluate(perf, now)
    return values / (time.perf_counter() - start)


def broker_cpu() -> float:
    """CPU seconds of RabbitMQ's Erlang VM so far (0 when it is not found)."""
    from bench.bench_correlator import CLK_TCK

    out = subprocess.run(["pgrep", "-o", "beam.smp"], capture_output=True, text=True).stdout
    try:
        with open(f"/proc/{out.split()[0]}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (IndexError, OSError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


# --- the daemon ---------------------------------------------------------------------------

def prefill(prefix: str, bodies: list[tuple[str, bytes]]) -> str:
    """Queue every body (persistent) in ``<prefix>.alerter``; its name."""
    spec = connector_queue(prefix, "alerter")
    conn = amqp()
    ch = conn.channel()
    for b in spec.bindings:
        ch.exchange_declare(exchange=b.exchange, exchange_type="topic", durable=True)
    ch.queue_declare(queue=spec.name, durable=True, arguments=spec.arguments)
    for b in spec.bindings:
        ch.queue_bind(queue=spec.name, exchange=b.exchange, routing_key=b.pattern)
    exchange = messages.exchange_name(prefix, "perf")
    id_prefix = uuid.uuid4().hex[:16] + "-"
    for i, (key, body) in enumerate(bodies):
        ch.basic_publish(exchange, key, body, pika.BasicProperties(
            type="perf", delivery_mode=2, message_id=f"{id_prefix}{i:x}",
            content_type="application/json"))
    while ch.queue_declare(queue=spec.name, passive=True).method.message_count < len(bodies):
        time.sleep(0.2)
    conn.close()
    return spec.name


def bench_daemon(bodies: list[tuple[str, bytes]], total_values: int, args: argparse.Namespace,
                 py_spy: str = "") -> dict:
    """One drain of the pre-filled queue by ``twistd centaure-alerter``."""
    prefix = f"b{uuid.uuid4().hex[:8]}"
    sink = f"{prefix}.bench-thresholds"
    with tempfile.TemporaryDirectory() as d:
        os.chmod(d, 0o755)
        with open(os.path.join(d, "rules.yaml"), "w") as f:
            yaml.safe_dump(rule_records(args.types, args.metrics, args.no_breach), f)
        try:
            conn = amqp()
            declare(conn.channel(), sink, messages.exchange_name(prefix, "threshold"))
            conn.close()
            t0 = time.monotonic()
            queue = prefill(prefix, bodies)
            print(f"  queued {len(bodies):,} perf messages in {time.monotonic() - t0:.1f} s",
                  flush=True)
            daemon = Daemon(d, "centaure-alerter", prefix, args.prefetch, {
                "alerter": {"rules": "rules.yaml", "backfill": "false",
                            "routes": "no-routes.yaml"}})
            spy = None
            try:
                daemon.wait_healthy("alerter")
                if py_spy:
                    spy = subprocess.Popen([f"{BIN}/py-spy", "record", "-p", str(daemon.proc.pid),
                                            "-r", "200", "--gil", "-f", "raw", "-o", py_spy],
                                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                cpu0, t_ready = daemon.cpu_seconds(), time.monotonic()
                broker0 = broker_cpu()
                seen = daemon.follow("values_evaluated", "alerter", total_values, 600,
                                     every=0.05)
                elapsed = time.monotonic() - t_ready
                cpu = daemon.cpu_seconds() - cpu0
                broker = broker_cpu() - broker0
                if spy is not None:
                    spy.send_signal(signal.SIGINT)
                    spy.wait(60)
                counters = daemon.counters("alerter")
                metrics_text = (daemon._get("metrics") or b"").decode()
                time.sleep(1.0)                          # the last confirms and acks settle
                left, thresholds = queue_count(queue), queue_count(sink)
            finally:
                if spy is not None and spy.poll() is None:
                    spy.kill()
                daemon.stop()
        finally:
            delete_bus(prefix, [sink], "alerter")
    return {"rate": sustained_rate(seen, total_values), "elapsed": elapsed, "cpu": cpu, "broker": broker,
            "counters": counters, "left": left, "thresholds": thresholds,
            "buffered": [line for line in metrics_text.splitlines()
                         if not line.startswith("#") and any(
                             w in line for w in ("messages_buffered", "spilled", "replayed"))]}


# --- where the time goes (py-spy raw output) ------------------------------------------------

#: Steps of a delivery, by a function on the stack (the first match from the leaf wins).
STEPS = (
    ("evaluate (rules)", ("evaluate (connector_alerter/evaluator.py",)),
    ("decode (msgspec)", ("decode (connector/messages.py",)),
    ("publish threshold", ("publish (connector/publisher.py", "_publish (connector_alerter")),
    ("AMQP frames in (fastpath, txamqp)", ("dataReceived (",)),
    ("acks, Deferreds, consumer", ("connector/consumer.py", "subscriber.py")),
)


def summarize(path: str, top: int = 15) -> None:
    """Self time per function, and the steps' shares, from py-spy's collapsed stacks."""
    own: collections.Counter[str] = collections.Counter()
    steps: collections.Counter[str] = collections.Counter()
    total = 0
    with open(path) as f:
        for line in f:
            stack, _, n = line.rstrip("\n").rpartition(" ")
            if not stack:
                continue
            count = int(n)
            frames = stack.split(";")
            total += count
            own[frames[-1]] += count
            for name, marks in STEPS:
                if any(m in fr for fr in frames for m in marks):
                    steps[name] += count
                    break
            else:
                idle = "select" in frames[-1] or "epoll" in frames[-1] or "poll (" in frames[-1]
                steps["idle (waiting in the reactor's poll)" if idle else "other"] += count
    if not total:
        print("  py-spy: no samples")
        return
    print(f"  py-spy: {total} samples of the daemon; steps (inclusive):")
    for name, n in steps.most_common():
        print(f"    {100 * n / total:5.1f}%  {name}")
    print("  self time, top functions:")
    for fr, n in own.most_common(top):
        print(f"    {100 * n / total:5.1f}%  {fr}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--devices", type=int, default=10000)
    ap.add_argument("--types", type=int, default=10)
    ap.add_argument("--metrics", type=int, default=50)
    ap.add_argument("--passes", type=int, default=4,
                    help="polls of the whole fleet queued (values: passes x devices x metrics)")
    ap.add_argument("--prefetch", type=int, default=500, help="[bus] prefetch (product default)")
    ap.add_argument("--py-spy", default="", help="sample the first run's daemon into this file")
    ap.add_argument("--no-breach", action="store_true",
                    help="thresholds never reached: no threshold published (what publishing costs)")
    ap.add_argument("--skip-reference", action="store_true")
    args = ap.parse_args()
    bodies = make_bodies(args)
    total = len(bodies) * args.metrics
    size = statistics.mean(len(b) for _, b in bodies[:1000])
    print(f"{len(rule_records(args.types, args.metrics, args.no_breach)):,} rules, {args.devices:,} devices, "
          f"{len(bodies):,} perf messages of {args.metrics} values ({size:,.0f} bytes), "
          f"{total:,} values", flush=True)
    ref = []
    if not args.skip_reference:
        for _ in range(args.runs):
            ref.append(bench_reference(bodies, args))
        print(f"reference, decode + evaluate in process (no bus): "
              f"{statistics.median(ref):,.0f} values/s (median of {args.runs}; runs "
              f"{', '.join(f'{r:,.0f}' for r in ref)})", flush=True)
    results = []
    for i in range(args.runs):
        r = bench_daemon(bodies, total, args, py_spy=args.py_spy if i == 0 else "")
        results.append(r)
        c = r["counters"]
        print(f"  run {i + 1}: {r['rate']:,.0f} values/s (10%-90%); all {total:,} in "
              f"{r['elapsed']:.1f} s, daemon CPU {r['cpu']:.1f} s "
              f"({100 * r['cpu'] / r['elapsed']:.0f}% of a core, "
              f"{1e6 * r['cpu'] / total:.2f} us per value), broker CPU {r['broker']:.1f} s "
              f"({100 * r['broker'] / r['elapsed']:.0f}%); perf "
              f"{c.get('perf_evaluated', 0):,.0f}, thresholds published "
              f"{c.get('thresholds_published', 0):,.0f} (queued {r['thresholds']:,}); "
              f"left in queue {r['left']}", flush=True)
        if r["buffered"]:
            print(f"  publisher: {'; '.join(r['buffered'])}")
        if i == 0 and args.py_spy:
            summarize(args.py_spy)
    rates = [r["rate"] for r in results]
    median = statistics.median(rates)
    ratio = f" = {median / statistics.median(ref):.2f} x the reference" if ref else ""
    print(f"twistd centaure-alerter, RabbitMQ -> evaluate -> RabbitMQ: {median:,.0f} values/s "
          f"(median of {args.runs}; runs {', '.join(f'{r:,.0f}' for r in rates)}){ratio}")
    print(f"goal: >= {GOAL:,} values/s end to end: {'met' if median >= GOAL else 'NOT met'}")


if __name__ == "__main__":
    main()
