"""The alerter end to end: metric values evaluated per second from RabbitMQ by ``centaure-alerter``.

End to end from the real RabbitMQ, JSON decoding included:
1,220 rules over 10,000 devices (the rules and the fleet of
``bench_evaluator.py``: 10 device types, 61 gauges per poll as the shipped
profiles give (mib2-system + if-mib), a warning and a critical rule per type
and metric, ~1% of values spiking over the thresholds). Goal: >= 300,000
values/s, or >= 0.8 x the raw consume-and-ack reference of the same run.

Each run: ``<prefix>.alerter`` (declared as ``connector.topology`` says) is
pre-filled with ``--passes`` x ``--devices`` persistent ``perf`` messages
(encoded with :mod:`connector.messages`), then ``twistd -n centaure-alerter``
starts on it (rules file from the same generator, ``backfill = false``, no
routes file: nobody is notified; its state in MariaDB, tables of its own
prefix, dropped afterwards) and drains it, publishing its ``threshold``
messages (with confirms, inputs acked once they are confirmed) to a durable
queue bound to ``<prefix>.threshold`` (as the correlator's would be). The
rate is the messages acked (the bus consumer's ``handled`` counter, on
/metrics every 50 ms) from the first ack seen to the last, times the values
per message; the daemon's CPU time (/proc) tells whether it computes or waits.

The raw reference, in the same run: the same bodies pre-filled the same way
into a queue of their own, drained by a minimal pika consumer
(``SelectConnection``, one channel, ``basic.qos`` = the daemon's prefetch)
that does nothing with a body and acks with ``multiple=True`` every 50
deliveries and whenever its reactor goes idle (10 ms timer); rate from its
first ack to its last. ``raw+json`` is the same consumer that also decodes
each body with ``messages.decode`` (msgspec, strict: what the daemon must do
before any evaluation). The ratio is the daemon over ``raw`` (nothing
decoded); over ``raw+json`` is printed too.

``--in-process`` adds the old reference: ``messages.decode`` then
``Evaluator.evaluate`` in this process on the same bodies (no bus).

``--profile FILE`` adds one run (not counted) of the daemon under cProfile
(``twistd --profiler=cprofile --savestats``, timed by the reactor thread's CPU
clock) and prints where its time goes. ``--code DIR`` runs the daemon from
another source tree (``git archive <commit> src | tar -x -C DIR``), to
measure before and after in the same conditions.

Usage:
    .venv/bin/python bench/bench_alerter.py [--runs 3] [--devices 10000] [--types 10]
        [--metrics 61] [--passes 4] [--prefetch 500] [--profile FILE] [--no-breach]
        [--skip-reference] [--in-process] [--code DIR]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import pstats
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

from bench import bench_correlator  # noqa: E402
from bench.bench_correlator import (  # noqa: E402
    AMQP_URL, MARIADB_URL, Daemon, amqp, declare, delete_bus, drop_prefixed, queue_count,
)
from bench.bench_db import sustained_rate  # noqa: E402
from bench.bench_evaluator import make_polls  # noqa: E402
from connector import messages  # noqa: E402
from connector.topology import connector_queue  # noqa: E402

GOAL = 300_000
GOAL_RATIO = 0.8

#: sitecustomize.py of a profiled daemon: cProfile timed by the thread's CPU clock.
CPU_PROFILE = """\
import cProfile
import time


class _CPUProfile(cProfile.Profile):
    def __init__(self, *args, **kwargs):
        super().__init__(time.thread_time)


cProfile.Profile = _CPUProfile
"""


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


def first_to_last(seen: list[tuple[float, int]], total: int) -> float:
    """Messages/s from the first sample with an ack to the first with all ``total`` acked."""
    t1, n1 = next((t, n) for t, n in seen if n > 0)
    t2 = next(t for t, n in seen if n >= total)
    return (total - n1) / (t2 - t1) if t2 > t1 else float("nan")


# --- in-process reference: decode + evaluate (no bus) ----------------------------------

def bench_in_process(bodies: list[tuple[str, bytes]], args: argparse.Namespace) -> float:
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


def daemon_pythonpath() -> str:
    """The daemons' PYTHONPATH as ``bench_correlator.Daemon`` sets it (``--code``)."""
    how = getattr(bench_correlator, "daemon_path", None)
    return how() if how is not None else bench_correlator.DAEMON_ROOT


def use_code(tree: str) -> None:
    """Run the daemons from another source tree (its ``src/``), e.g. an older commit."""
    tree = os.path.abspath(tree)
    if getattr(bench_correlator, "daemon_path", None) is not None:
        bench_correlator.DAEMON_ROOT = tree
    else:
        src = os.path.join(tree, "src")
        bench_correlator.DAEMON_ROOT = src if os.path.isdir(src) else tree


def threads_cpu(pid: int) -> tuple[float, float, float]:
    """(main thread CPU s, other threads CPU s, run-queue wait s) of process ``pid`` so far.

    The wait is the time its threads were runnable but not running (another
    process had the CPU): /proc/PID/task/*/schedstat, second field.
    """
    from bench.bench_correlator import CLK_TCK

    main = other = wait = 0.0
    base = f"/proc/{pid}/task"
    for tid in os.listdir(base):
        try:
            with open(f"{base}/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"{base}/{tid}/schedstat") as f:
                wait += int(f.read().split()[1]) / 1e9
        except OSError:
            continue
        cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK
        if int(tid) == pid:
            main += cpu
        else:
            other += cpu
    return main, other, wait


def db_cpu() -> float:
    """CPU seconds of MariaDB so far (0 when it is not found)."""
    from bench.bench_correlator import CLK_TCK

    out = subprocess.run(["pgrep", "-o", "mariadbd|mysqld"], capture_output=True,
                         text=True).stdout
    try:
        with open(f"/proc/{out.split()[0]}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (IndexError, OSError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


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


# --- the raw reference: consume and ack, nothing else ----------------------------------

def run_raw(args: argparse.Namespace) -> None:
    """(Subprocess) drain ``--raw-queue``: consume and ack (``--decode``: and decode).

    pika 1.4's ``SelectConnection``, one channel, ``basic.qos`` of
    ``--prefetch``; each delivery is counted (and, with ``--decode``, its body
    decoded by ``messages.decode``), then acked with ``multiple=True`` every
    50 deliveries and by a 10 ms timer for the rest. Prints one JSON object:
    ``first`` (time, acked) of the first ack, ``last`` time of the last one,
    ``cpu`` (this process, from consume to the last ack).
    """
    import resource

    from pika.adapters.select_connection import SelectConnection

    total, decode = args.expect, (messages.decode if args.decode else None)
    st = {"got": 0, "acked": 0, "tag": 0, "first": None, "last": 0.0, "cpu0": 0.0}
    chan: list = []

    def cpu() -> float:
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime

    def ack() -> None:
        if st["tag"] and st["acked"] < st["got"]:
            chan[0].basic_ack(st["tag"], multiple=True)
            st["acked"] = st["got"]
            now = time.monotonic()
            if st["first"] is None:
                st["first"] = (now, st["acked"])
            st["last"] = now
            if st["acked"] >= total:
                conn.close()

    def on_message(ch, method, props, body) -> None:
        if decode is not None:
            decode(body)
        st["got"] += 1
        st["tag"] = method.delivery_tag
        if st["got"] - st["acked"] >= 50:
            ack()

    def tick() -> None:
        ack()
        if st["acked"] < total:
            conn.ioloop.call_later(0.01, tick)

    def on_channel(ch) -> None:
        chan.append(ch)
        ch.basic_qos(prefetch_count=args.prefetch, callback=lambda _f: start(ch))

    def start(ch) -> None:
        st["cpu0"] = cpu()
        ch.basic_consume(args.raw_queue, on_message)
        tick()

    conn = SelectConnection(pika.URLParameters(AMQP_URL),
                            on_open_callback=lambda c: c.channel(on_open_callback=on_channel),
                            on_close_callback=lambda c, e: c.ioloop.stop())
    conn.ioloop.start()
    print(json.dumps({"first": st["first"], "last": st["last"], "cpu": cpu() - st["cpu0"]}),
          flush=True)


def bench_raw(bodies: list[tuple[str, bytes]], args: argparse.Namespace, decode: bool) -> dict:
    """One drain of the same pre-filled queue by :func:`run_raw`."""
    prefix = f"b{uuid.uuid4().hex[:8]}"
    n = len(bodies)
    try:
        queue = prefill(prefix, bodies)
        out = subprocess.run(
            [sys.executable, os.path.abspath(__file__), "--role", "raw", "--raw-queue", queue,
             "--expect", str(n), "--prefetch", str(args.prefetch),
             *(["--decode"] if decode else [])],
            stdout=subprocess.PIPE, text=True, cwd=ROOT, timeout=900, check=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        time.sleep(0.5)
        left = queue_count(queue)
    finally:
        try:
            delete_bus(prefix, [], "alerter")
        except Exception as e:  # the broker went away: report, go on
            print(f"  WARNING: could not delete {prefix}.*: {e!r}", flush=True)
    (t1, n1), t2 = r["first"], r["last"]
    elapsed = t2 - t1
    return {"msgs": (n - n1) / elapsed, "rate": (n - n1) * args.metrics / elapsed,
            "cpu": r["cpu"], "elapsed": elapsed, "left": left}


# --- the daemon ---------------------------------------------------------------------------

def bench_daemon(bodies: list[tuple[str, bytes]], args: argparse.Namespace,
                 profile: str = "") -> dict:
    """One drain of the pre-filled queue by ``twistd centaure-alerter``."""
    prefix = f"b{uuid.uuid4().hex[:8]}"
    tables = f"{prefix}_alert_"
    sink = f"{prefix}.bench-thresholds"
    n = len(bodies)
    total_values = n * args.metrics
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
            print(f"  queued {n:,} perf messages in {time.monotonic() - t0:.1f} s", flush=True)
            saved = bench_correlator.DAEMON_ROOT
            if profile:
                # twistd's cProfile runner, timed in CPU time of the thread (not wall time:
                # on a shared machine a wait for the CPU would be charged to whatever ran).
                with open(os.path.join(d, "sitecustomize.py"), "w") as f:
                    f.write(CPU_PROFILE)
                bench_correlator.DAEMON_ROOT = f"{daemon_pythonpath()}{os.pathsep}{d}"
            try:
                daemon = Daemon(d, "centaure-alerter", prefix, args.prefetch, {
                    "database": {"url": MARIADB_URL},
                    "alerter": {"rules": "rules.yaml", "backfill": "false",
                                "routes": "no-routes.yaml", "table_prefix": tables}},
                    profile=profile)
            finally:
                bench_correlator.DAEMON_ROOT = saved
            try:
                daemon.wait_healthy("alerter")
                cpu0, t_ready = daemon.cpu_seconds(), time.monotonic()
                broker0, db0, th0 = broker_cpu(), db_cpu(), threads_cpu(daemon.proc.pid)
                seen = daemon.follow("handled", "bus", n, 900, every=0.05)
                elapsed = time.monotonic() - t_ready
                cpu = daemon.cpu_seconds() - cpu0
                broker, db = broker_cpu() - broker0, db_cpu() - db0
                th = [b - a for a, b in zip(th0, threads_cpu(daemon.proc.pid))]
                counters = daemon.counters("alerter")
                metrics_text = (daemon._get("metrics") or b"").decode()
                time.sleep(1.0)                          # the last confirms and acks settle
                left, thresholds = queue_count(queue), queue_count(sink)
            finally:
                daemon.stop()
        finally:
            delete_bus(prefix, [sink], "alerter")
            try:
                drop_prefixed(MARIADB_URL, tables)
            except Exception as e:  # the database went away: report, go on
                print(f"  WARNING: could not drop the tables {tables}*: {e!r}", flush=True)
    t1 = next(t for t, v in seen if v > 0)
    t2 = next(t for t, v in seen if v >= n)
    return {"rate": first_to_last(seen, n) * args.metrics,
            "rate_10_90": sustained_rate(seen, n) * args.metrics,
            "elapsed": elapsed, "acking": t2 - t1, "cpu": cpu, "broker": broker, "db": db,
            "main": th[0], "threads": th[1], "wait": th[2],
            "counters": counters, "left": left, "thresholds": thresholds,
            "buffered": [line for line in metrics_text.splitlines()
                         if not line.startswith("#") and any(
                             w in line for w in ("messages_buffered", "spilled", "replayed"))]}


# --- where the time goes (cProfile of the daemon) -------------------------------------------

#: Steps of a delivery: (name, (file fragment, function)) whose cumulative time is shown.
STEPS = (
    ("AMQP frames in (fastpath: dataReceived)", ("connector/amqp/protocol.py", "dataReceived")),
    ("consumer: deliver (decode + handle + ack callbacks)", ("connector/consumer.py", "deliver")),
    ("decode (msgspec)", ("connector/messages.py", "decode")),
    ("alerter handle", ("connector_alerter/service.py", "handle")),
    ("evaluate (rules)", ("connector_alerter/evaluator.py", "evaluate")),
    ("publish thresholds (_publish)", ("connector_alerter/service.py", "_publish")),
    ("publisher publish_raw", ("connector/publisher.py", "publish_raw")),
    ("acks (subscriber _flush)", ("connector/amqp/subscriber.py", "_flush")),
    ("state saves (export, on the reactor)", ("connector_alerter/evaluator.py", "take_changes")),
)


def summarize(path: str, top: int = 20) -> None:
    """Cumulative time of the main steps and the top self times, from cProfile stats."""
    st = pstats.Stats(path)
    raw = st.stats  # type: ignore[attr-defined]
    total = st.total_tt  # type: ignore[attr-defined]
    print(f"  cProfile: {total:.1f} s of CPU of the daemon's main thread (the reactor) profiled; "
          f"steps (cumulative):")
    for name, (frag, fn) in STEPS:
        cum = sum(v[3] for (f, _l, func), v in raw.items() if frag in f and func == fn)
        print(f"    {100 * cum / total:5.1f}%  {cum:6.2f} s  {name}")
    print("  self time, top functions:")
    rows = sorted(raw.items(), key=lambda kv: -kv[1][2])[:top]
    for (f, line, func), v in rows:
        short = "/".join(f.split("/")[-2:])
        print(f"    {100 * v[2] / total:5.1f}%  {v[2]:6.2f} s  {v[1]:>9,} calls  "
              f"{func} ({short}:{line})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--devices", type=int, default=10000)
    ap.add_argument("--types", type=int, default=10)
    ap.add_argument("--metrics", type=int, default=61)
    ap.add_argument("--passes", type=int, default=4,
                    help="polls of the whole fleet queued (values: passes x devices x metrics)")
    ap.add_argument("--prefetch", type=int, default=500, help="[bus] prefetch (product default)")
    ap.add_argument("--profile", default="", help="one more run under cProfile, stats to FILE")
    ap.add_argument("--no-breach", action="store_true",
                    help="thresholds never reached: no threshold published (what publishing costs)")
    ap.add_argument("--skip-reference", action="store_true", help="no raw consume-and-ack")
    ap.add_argument("--code", default="",
                    help="run the daemon from this source tree (e.g. git archive of a commit)")
    ap.add_argument("--in-process", action="store_true",
                    help="also decode + evaluate in this process (no bus)")
    ap.add_argument("--role", default="bench", choices=("bench", "raw"), help=argparse.SUPPRESS)
    ap.add_argument("--raw-queue", default="", help=argparse.SUPPRESS)
    ap.add_argument("--expect", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--decode", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.role == "raw":
        run_raw(args)
        return
    if args.code:
        use_code(args.code)
    bodies = make_bodies(args)
    total = len(bodies) * args.metrics
    size = statistics.mean(len(b) for _, b in bodies[:1000])
    print(f"{len(rule_records(args.types, args.metrics, args.no_breach)):,} rules, "
          f"{args.devices:,} devices, {len(bodies):,} perf messages of {args.metrics} values "
          f"({size:,.0f} bytes), {total:,} values; prefetch {args.prefetch}", flush=True)
    if args.in_process:
        ref = [bench_in_process(bodies, args) for _ in range(args.runs)]
        print(f"in process, decode + evaluate (no bus): {statistics.median(ref):,.0f} values/s "
              f"(median of {args.runs}; runs {', '.join(f'{r:,.0f}' for r in ref)})", flush=True)
    results, raws, jsons = [], [], []
    for i in range(args.runs):
        if not args.skip_reference:
            for decode, out in ((False, raws), (True, jsons)):
                r = bench_raw(bodies, args, decode)
                out.append(r)
                print(f"  run {i + 1}: raw consume-and-ack{'+json' if decode else ''}: "
                      f"{r['rate']:,.0f} values/s ({r['msgs']:,.0f} msg/s, first to last ack "
                      f"{r['elapsed']:.1f} s, consumer CPU {r['cpu']:.1f} s); left {r['left']}",
                      flush=True)
        r = bench_daemon(bodies, args)
        results.append(r)
        c = r["counters"]
        print(f"  run {i + 1}: daemon {r['rate']:,.0f} values/s (first to last ack, "
              f"{r['acking']:.1f} s; 10%-90%: {r['rate_10_90']:,.0f}); daemon CPU {r['cpu']:.1f} s "
              f"({100 * r['cpu'] / r['elapsed']:.0f}% of a core, "
              f"{1e6 * r['cpu'] / total:.2f} us per value), broker CPU {r['broker']:.1f} s "
              f"({100 * r['broker'] / r['elapsed']:.0f}%), MariaDB CPU {r['db']:.1f} s; daemon "
              f"main thread {r['main']:.1f} s, other threads {r['threads']:.1f} s, waiting for "
              f"a CPU {r['wait']:.1f} s; perf "
              f"{c.get('perf_evaluated', 0):,.0f}, thresholds published "
              f"{c.get('thresholds_published', 0):,.0f} (queued {r['thresholds']:,}); "
              f"left in queue {r['left']}", flush=True)
        if r["buffered"]:
            print(f"  publisher: {'; '.join(r['buffered'])}")
    if args.profile:
        path = os.path.abspath(args.profile)
        r = bench_daemon(bodies, args, profile=path)
        print(f"  profiled run (not counted): {r['rate']:,.0f} values/s under cProfile")
        summarize(path)
    rates = [r["rate"] for r in results]
    median = statistics.median(rates)
    print(f"twistd centaure-alerter, RabbitMQ -> evaluate -> RabbitMQ: {median:,.0f} values/s "
          f"(median of {args.runs}; runs {', '.join(f'{r:,.0f}' for r in rates)})")
    ratio = None
    if raws:
        raw = statistics.median(r["rate"] for r in raws)
        js = statistics.median(r["rate"] for r in jsons)
        ratio = median / raw
        runs_raw = ", ".join(f"{r['rate']:,.0f}" for r in raws)
        runs_js = ", ".join(f"{r['rate']:,.0f}" for r in jsons)
        print(f"raw consume-and-ack (pika, nothing decoded): {raw:,.0f} values/s (median; runs "
              f"{runs_raw}); ratio {ratio:.2f}")
        print(f"raw consume-and-ack + messages.decode: {js:,.0f} values/s (median; runs "
              f"{runs_js}); ratio {median / js:.2f}")
    met = median >= GOAL or (ratio is not None and ratio >= GOAL_RATIO)
    print(f"goal: >= {GOAL:,} values/s end to end or >= {GOAL_RATIO} x raw: "
          f"{'met' if met else 'NOT met'}")


if __name__ == "__main__":
    main()
