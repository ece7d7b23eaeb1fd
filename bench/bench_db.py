"""The SQL writer's throughput and lag against the real RabbitMQ and MariaDB.

Parts (each prints its figures; medians of ``--runs``):

1. ``raw``: the reference, raw SQLAlchemy ``executemany`` of sample rows
   (insert-ignore, ``--batch`` rows per transaction) into the same table
   layout, ids known in advance: what the database and driver alone give.
2. ``bus``: ``twistd centaure-db`` draining a queue pre-filled with
   ``--messages`` perf messages of ``--metrics`` metrics: sustained metrics/s
   stored, measured on the daemon's own ``rows_written`` counter between 10%
   and 90% of the work (start-up excluded).
3. ``compare`` (``--code DIR``): the ``bus`` part run alternately with
   the daemon of this tree and with the daemon of another source tree
   (e.g. ``git worktree add /tmp/before <commit>``), each on the table
   layout its own migrations make: metrics/s of each (medians) and their
   ratio, to show what a storage change costs the writer in one run.
4. ``backlog`` (``--backlog N``): N one-metric messages queued while the
   writer is down, then replayed: rate and the daemon's RSS over the replay
   (memory must not grow with the backlog).

Usage:
    .venv/bin/python bench/bench_db.py [--messages 4000] [--metrics 50] [--runs 3]
        [--backlog 1000000] [--code DIR]

The end-to-end figure (a simulated fleet polled by ``centaure-snmp``, through
RabbitMQ, stored by ``centaure-db``) is ``bench/bench_db_e2e.py``, which
builds on the daemon helpers of this module.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import pika  # noqa: E402
import sqlalchemy as sa  # noqa: E402

from connector import messages  # noqa: E402
from connector.topology import connector_queue  # noqa: E402
from connector_db import migrate  # noqa: E402
from centaure_shared.storage.schema import make_schema  # noqa: E402
from connector_db.store import insert_ignore  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)
AMQP_URL = os.environ.get("CENTAURE_TEST_AMQP", "amqp://guest:guest@127.0.0.1:5672/%2F")
MARIADB_URL = os.environ.get("CENTAURE_TEST_MARIADB", "mysql+pymysql://root@127.0.0.1:3306/test")
TS = 1_790_000_000.0


def free_tcp_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def drop_prefixed(url: str, p: str) -> None:
    engine = sa.create_engine(url)
    md = sa.MetaData()
    md.reflect(engine, only=lambda name, _md: name.startswith(p))
    md.drop_all(engine)
    engine.dispose()


# --- 1. raw SQLAlchemy executemany -------------------------------------------------

def bench_raw(rows: int, batch: int, metrics: int) -> float:
    """Rows/s of insert-ignore executemany into a fresh samples table."""
    p = f"b{uuid.uuid4().hex[:8]}_"
    engine = sa.create_engine(MARIADB_URL)
    try:
        migrate.upgrade(engine, p)
        s = make_schema(p)
        stmt = insert_ignore(engine.dialect.name, s.samples)
        # The series of 10 devices x ``metrics`` x 3 indexes, as the writer resolves them.
        with engine.begin() as conn:
            conn.execute(sa.insert(s.series), [
                {"device_id": d, "metric_id": m, "idx": str(x)}
                for d in range(1, 11) for m in range(1, metrics + 1) for x in range(3)])
            series = {(d, m, x): i for i, d, m, x in conn.execute(sa.select(
                s.series.c.id, s.series.c.device_id, s.series.c.metric_id, s.series.c.idx))}
        data = [{"series_id": series[(1 + (i // metrics) % 10, 1 + i % metrics,
                                      str((i // metrics) % 3))],
                 "ts": int((TS + i // metrics) * 1000), "value": float(i)} for i in range(rows)]
        started = time.perf_counter()
        for i in range(0, rows, batch):
            with engine.begin() as conn:
                conn.execute(stmt, data[i:i + batch])
        return rows / (time.perf_counter() - started)
    finally:
        engine.dispose()
        drop_prefixed(MARIADB_URL, p)


# --- helpers for the daemon parts ----------------------------------------------------

def write_db_settings(d: str, bus_prefix: str, http_port: int, table_prefix: str, batch: int,
                      extra: str = "") -> str:
    """The settings file of a bench's ``centaure-db`` (real RabbitMQ and MariaDB); its path."""
    path = os.path.join(d, "settings.ini")
    with open(path, "w") as f:
        f.write(f"[bus]\nurl = {AMQP_URL}\nexchange_prefix = {bus_prefix}\nprefetch = 2000\n\n"
                f"[buffer]\npath = {d}/buffer-{{connector}}.sqlite3\n\n"
                f"[connector]\nhttp_port = {http_port}\nnode = bench\n\n"
                f"[database]\nurl = {MARIADB_URL}\n\n"
                f"[db]\ntable_prefix = {table_prefix}\nbatch_size = {batch}\n"
                f"batch_interval = 100ms\n\n{extra}")
    return path


def daemon_path(code: str) -> str:
    """PYTHONPATH of a daemon run from source tree ``code`` (its ``src/`` since that layout)."""
    src = os.path.join(code, "src")
    return src if os.path.isdir(src) else code


class DbDaemon:
    """``twistd centaure-db`` in a folder of its own."""

    def __init__(self, d: str, bus_prefix: str, table_prefix: str, batch: int,
                 extra: str = "", code: str = ROOT) -> None:
        self.port = free_tcp_port()
        path = write_db_settings(d, bus_prefix, self.port, table_prefix, batch, extra)
        self.log = open(os.path.join(d, f"db-{self.port}.log"), "w")
        self.proc = subprocess.Popen([f"{BIN}/twistd", "-n", "--pidfile=", "centaure-db", "-c",
                                      path], cwd=d, stdout=self.log, stderr=subprocess.STDOUT,
                                     env=dict(os.environ, PYTHONPATH=daemon_path(code)))

    def health(self) -> dict:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=5) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:
            return json.loads(e.read())
        except OSError:
            return {}

    def db(self) -> dict:
        return self.health().get("connectors", {}).get("db", {})

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while self.db().get("schema") != "ready":
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"centaure-db did not start: see {self.log.name}")
            time.sleep(0.1)

    def rss_kib(self) -> int:
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(60)
        self.log.close()


def declare_db_queue(ch, prefix: str) -> str:
    spec = connector_queue(prefix, "db")
    for b in spec.bindings:
        ch.exchange_declare(exchange=b.exchange, exchange_type="topic", durable=True)
    ch.queue_declare(queue=spec.name, durable=True, arguments=spec.arguments)
    for b in spec.bindings:
        ch.queue_bind(queue=spec.name, exchange=b.exchange, routing_key=b.pattern)
    return spec.name


def delete_prefixed_bus(prefix: str) -> None:
    conn = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    ch = conn.channel()
    ch.queue_delete(queue=f"{prefix}.db")
    for t in ("perf", "event", "alarm", "threshold", "notification", "dead", "status"):
        ch.exchange_delete(exchange=f"{prefix}.{t}")
    conn.close()


def prefill(prefix: str, n: int, metrics: int, hosts: int = 100) -> None:
    """Queue ``n`` perf messages (persistent), waiting until the broker has them all."""
    conn = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    ch = conn.channel()
    queue = declare_db_queue(ch, prefix)
    names = [f"m{k}" for k in range(metrics)]
    props = pika.BasicProperties(type="perf", delivery_mode=2, content_type="application/json")
    for i in range(n):
        m = messages.Perf(ts=TS + i // hosts, source="bench@n1", host=f"h{i % hosts:04d}",
                          address="10.0.0.1", device_type="router",
                          metrics=[messages.Metric(name=names[k], index="", value=float(i + k),
                                                   kind="gauge", oid="1.3.6.1.4.1.1")
                                   for k in range(metrics)])
        props.message_id = f"b{i}"
        ch.basic_publish(f"{prefix}.perf", f"perf.{m.host}", messages.encode(m), props)
        if i % 20000 == 19999:
            print(f"  queued {i + 1:,} of {n:,}", flush=True)
    while ch.queue_declare(queue=queue, passive=True).method.message_count < n:
        time.sleep(0.2)
    conn.close()


def watch_rows(daemon: DbDaemon, total: int, timeout: float, rss: list[int] | None = None
               ) -> list[tuple[float, int]]:
    """(time, rows written) every 0.1 s until ``total`` rows."""
    seen: list[tuple[float, int]] = []
    deadline = time.monotonic() + timeout
    last_print = 0.0
    while True:
        db = daemon.db()
        rows = sum(v for k, v in db.get("rows_by_table", {}).items() if k.endswith("samples"))
        now = time.monotonic()
        seen.append((now, rows))
        if rss is not None:
            rss.append(daemon.rss_kib())
        if now - last_print > 5:
            print(f"  {rows:,} of {total:,} rows", flush=True)
            last_print = now
        if rows >= total:
            return seen
        if daemon.proc.poll() is not None or now > deadline:
            raise SystemExit(f"writer stopped at {rows:,} of {total:,} rows: {daemon.log.name}")
        time.sleep(0.1)


def sustained_rate(seen: list[tuple[float, int]], total: int) -> float:
    """Rows/s between 10% and 90% of ``total``."""
    t1 = next(t for t, r in seen if r >= total * 0.1)
    r1 = next(r for t, r in seen if r >= total * 0.1)
    t2 = next(t for t, r in seen if r >= total * 0.9)
    r2 = next(r for t, r in seen if r >= total * 0.9)
    return (r2 - r1) / (t2 - t1) if t2 > t1 else float("nan")


# --- 2. bus -> SQL --------------------------------------------------------------------

def bench_bus(n: int, metrics: int, batch: int, code: str = ROOT) -> float:
    prefix, tp = f"b{uuid.uuid4().hex[:8]}", f"b{uuid.uuid4().hex[:8]}_"
    with tempfile.TemporaryDirectory() as d:
        prefill(prefix, n, metrics)
        daemon = DbDaemon(d, prefix, tp, batch, code=code)
        try:
            daemon.wait_ready()
            seen = watch_rows(daemon, n * metrics, timeout=600)
            return sustained_rate(seen, n * metrics)
        finally:
            daemon.stop()
            delete_prefixed_bus(prefix)
            drop_prefixed(MARIADB_URL, tp)


# --- 4. backlog replay ------------------------------------------------------------------

def bench_backlog(n: int, batch: int) -> dict:
    prefix, tp = f"b{uuid.uuid4().hex[:8]}", f"b{uuid.uuid4().hex[:8]}_"
    with tempfile.TemporaryDirectory() as d:
        print(f"  queueing a backlog of {n:,} one-metric messages", flush=True)
        prefill(prefix, n, 1, hosts=1000)
        daemon = DbDaemon(d, prefix, tp, batch)
        try:
            daemon.wait_ready()
            rss: list[int] = []
            started = time.monotonic()
            seen = watch_rows(daemon, n, timeout=3600, rss=rss)
            elapsed = time.monotonic() - started
            tenth = max(1, len(rss) // 10)
            return {"messages": n, "seconds": elapsed, "rate": n / elapsed,
                    "sustained": sustained_rate(seen, n),
                    "rss_first_10pct_kib": max(rss[:tenth]), "rss_max_kib": max(rss),
                    "rss_last_kib": rss[-1]}
        finally:
            daemon.stop()
            delete_prefixed_bus(prefix)
            drop_prefixed(MARIADB_URL, tp)


def compare(args) -> None:
    """This tree's writer against ``args.code``'s, alternated in one run."""
    here, there = [], []
    for run in range(args.runs):
        here.append(bench_bus(args.messages, args.metrics, args.batch))
        there.append(bench_bus(args.messages, args.metrics, args.batch, code=args.code))
        print(f"run {run + 1}: this tree {here[-1]:,.0f} metrics/s, "
              f"{args.code} {there[-1]:,.0f} metrics/s", flush=True)
    h, t = statistics.median(here), statistics.median(there)
    print(f"centaure-db, RabbitMQ -> MariaDB, perf of {args.metrics} metrics (median of "
          f"{args.runs}): this tree {h:,.0f} metrics/s, {args.code} {t:,.0f} metrics/s: {h / t:.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=4000)
    ap.add_argument("--metrics", type=int, default=50)
    ap.add_argument("--batch", type=int, default=5000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--backlog", type=int, default=0)
    ap.add_argument("--skip-bus", action="store_true")
    ap.add_argument("--code", default="",
                    help="another source tree whose centaure-db is run alternately with this one's")
    args = ap.parse_args()
    rows = args.messages * args.metrics
    if args.code:
        compare(args)
        return

    raw = []
    for run in range(args.runs):
        raw.append(bench_raw(rows, args.batch, args.metrics))
        print(f"raw executemany run {run + 1}: {raw[-1]:,.0f} rows/s", flush=True)
    raw_med = statistics.median(raw)
    print(f"raw SQLAlchemy executemany (MariaDB, {args.batch} rows/transaction): "
          f"{raw_med:,.0f} rows/s (median of {args.runs})")
    if not args.skip_bus:
        bus = []
        for run in range(args.runs):
            bus.append(bench_bus(args.messages, args.metrics, args.batch))
            print(f"bus -> SQL run {run + 1}: {bus[-1]:,.0f} metrics/s", flush=True)
        bus_med = statistics.median(bus)
        print(f"centaure-db, RabbitMQ -> MariaDB, perf of {args.metrics} metrics: "
              f"{bus_med:,.0f} metrics/s (median of {args.runs}); "
              f"{bus_med / raw_med:.2f}x raw executemany; goal 50,000: "
              f"{'met' if bus_med >= 50_000 else 'NOT met'}")
    if args.backlog:
        r = bench_backlog(args.backlog, args.batch)
        print(f"backlog replay of {r['messages']:,} messages: {r['seconds']:.0f} s, "
              f"{r['rate']:,.0f} msg/s ({r['sustained']:,.0f} sustained); RSS "
              f"{r['rss_first_10pct_kib'] / 1024:.0f} MiB in the first 10%, max "
              f"{r['rss_max_kib'] / 1024:.0f} MiB, at the end {r['rss_last_kib'] / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
