"""The daemons under each Twisted reactor, as users run them (``twistd --reactor=NAME``).

Parts (each run starts a fresh daemon; the reactors alternate A, B, A, B...):

``traps``
    ``twistd centaure-traps`` on 127.0.0.1 (no rate limit, no dedup window,
    shipped definitions, the sender in the inventory), publishing ``event``
    messages to the real RabbitMQ (a queue is bound to them). This process
    sends ``--trap-rate`` v2c linkDown traps/s (``bench_traps.build_datagrams``:
    6 varbinds) for ``--trap-seconds``. Measured: the daemon's CPU seconds
    (``/proc/PID/stat`` utime+stime, every thread) from the first trap sent to
    the last event confirmed by the broker (``published_events`` on /metrics),
    per trap; events/s over that time; lost traps.
``poller``
    ``twistd centaure-snmp`` polling ``--devices`` inventory devices (switch:
    mib2-system + if-mib) spread over 2 net-snmp agents every ``--interval``
    seconds, ``perf`` messages to RabbitMQ (a queue is bound). After a warm-up
    of 1.5 intervals, over ``--poll-seconds``: the daemon's CPU seconds per
    varbind polled (``varbinds`` on /metrics).
``db``
    ``twistd centaure-db`` draining a queue pre-filled with ``--messages``
    perf messages of ``--metrics`` metrics into MariaDB (``bench_db``'s
    settings): metrics/s between 10% and 90% of the work and the daemon's
    CPU seconds per metric from ready to the last row.

Usage: .venv/bin/python bench/bench_reactor.py [--reactors asyncio,epoll] [--rounds 3]
       [--parts traps,poller,db] [--trap-rate 20000] [--trap-seconds 3] [--devices 1000]
       [--interval 10] [--poll-seconds 20] [--messages 4000] [--metrics 50]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import pika  # noqa: E402

from bench.bench_db import (  # noqa: E402
    AMQP_URL, BIN, MARIADB_URL, DbDaemon, delete_prefixed_bus, drop_prefixed, free_tcp_port,
    prefill, sustained_rate, watch_rows, write_db_settings)
from bench.bench_db_e2e import write_fleet_files  # noqa: E402
from bench.bench_traps import build_datagrams, send  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (all its threads)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def counter(port: int, name: str) -> float:
    """A ``centaure_<name>_total`` counter from the daemon's /metrics (0 if absent)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(f"centaure_{name}_total{{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def twistd(reactor: str, plugin: str, settings: str, cwd: str, log: str) -> subprocess.Popen:
    """``twistd -n --reactor=REACTOR PLUGIN -c SETTINGS`` with its output in ``log``."""
    out = open(log, "w")
    return subprocess.Popen([f"{BIN}/twistd", "-n", "--pidfile=", f"--reactor={reactor}", plugin,
                             "-c", settings], cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                            env=dict(os.environ, PYTHONPATH=ROOT))


def reactor_class(log: str) -> str:
    """The reactor class twistd logged at start-up."""
    with open(log) as f:
        for line in f:
            if "reactor class: " in line:
                return line.rsplit("reactor class: ", 1)[1].strip().rstrip(".").rsplit(".", 1)[-1]
    return "?"


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def bind_queue(prefix: str, kind: str) -> str:
    """A queue bound to every message of ``{prefix}.{kind}``; returns its name."""
    conn = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    ch = conn.channel()
    ch.exchange_declare(exchange=f"{prefix}.{kind}", exchange_type="topic", durable=True)
    name = f"{prefix}.bench-{kind}"
    ch.queue_declare(queue=name, auto_delete=False)
    ch.queue_bind(queue=name, exchange=f"{prefix}.{kind}", routing_key="#")
    conn.close()
    return name


def delete_bus(prefix: str, queues: list[str]) -> None:
    conn = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    ch = conn.channel()
    for q in queues:
        ch.queue_delete(queue=q)
    for t in ("perf", "event", "alarm", "threshold", "notification", "dead", "status"):
        ch.exchange_delete(exchange=f"{prefix}.{t}")
    conn.close()


def common_settings(d: str, prefix: str, http_port: int) -> str:
    return (f"[bus]\nurl = {AMQP_URL}\nexchange_prefix = {prefix}\n\n"
            f"[buffer]\npath = {d}/buffer-{{connector}}.sqlite3\n\n"
            f"[connector]\nhttp_port = {http_port}\nnode = bench\n\n")


def log_tail(log: str, lines: int = 30) -> str:
    with open(log) as f:
        return "".join(f.readlines()[-lines:])


def wait_log(proc: subprocess.Popen, log: str, text: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with open(log) as f:
            if text in f.read():
                return
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the daemon did not log {text!r}:\n{log_tail(log)}")
        time.sleep(0.1)


# --- traps ----------------------------------------------------------------------------

def run_traps(reactor: str, rate: int, seconds: float, datagrams: list[bytes]) -> dict:
    from centaure.shipped import example_path

    prefix = f"b{uuid.uuid4().hex[:8]}"
    d = tempfile.mkdtemp(prefix="bench-reactor-")
    http_port = free_tcp_port()
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        trap_port = s.getsockname()[1]
    shutil.copy(example_path("traps.yaml"), os.path.join(d, "traps.yaml"))
    with open(os.path.join(d, "inventory.yaml"), "w") as f:
        f.write("devices:\n  - {name: sw-core, address: 127.0.0.1, device_type: switch}\n")
    path = os.path.join(d, "settings.ini")
    with open(path, "w") as f:
        f.write(common_settings(d, prefix, http_port)
                + "[inventory]\nsource = yaml\npath = inventory.yaml\n\n"
                f"[traps]\nlisten = 127.0.0.1:{trap_port}\ndefinitions = traps.yaml\n"
                "v3_users = no-trap-users.yaml\nrate_limit = 0\ndedup_window = 0\n")
    queue = bind_queue(prefix, "event")
    log = os.path.join(d, "traps.log")
    proc = twistd(reactor, "centaure-traps", path, d, log)
    try:
        wait_log(proc, log, "receiving traps on")
        time.sleep(1.0)
        cpu0 = cpu_seconds(proc.pid)
        t0 = time.monotonic()
        sent, _, _ = send(trap_port, datagrams, rate, seconds)
        t_sent = time.monotonic()
        published, last_change, t_done = 0.0, time.monotonic(), time.monotonic()
        while published < sent and time.monotonic() - last_change < 5:
            time.sleep(0.05)
            now_published = counter(http_port, "published_events")
            if now_published != published:
                published, last_change, t_done = now_published, time.monotonic(), time.monotonic()
        cpu = cpu_seconds(proc.pid) - cpu0
        return {"part": "traps", "reactor": reactor, "class": reactor_class(log), "sent": sent, "published": int(published),
                "lost": sent - int(published), "cpu_s": round(cpu, 2),
                "cpu_us_per_trap": round(cpu / max(published, 1) * 1e6, 1),
                "events_per_s": round(published / (t_done - t0)),
                "lag_s": round(t_done - t_sent, 2)}
    finally:
        stop(proc)
        delete_bus(prefix, [queue])
        shutil.rmtree(d, ignore_errors=True)


# --- poller ---------------------------------------------------------------------------

def run_poller(reactor: str, devices: int, interval: int, window: float, agents: list) -> dict:
    prefix = f"b{uuid.uuid4().hex[:8]}"
    d = tempfile.mkdtemp(prefix="bench-reactor-")
    http_port = free_tcp_port()
    ports = [a.port for a in agents]
    write_fleet_files(d, devices, ports)
    path = os.path.join(d, "settings.ini")
    with open(path, "w") as f:
        f.write(common_settings(d, prefix, http_port)
                + "[inventory]\nsource = yaml\npath = inventory.yaml\nport_column = port\n\n"
                f"[snmp]\nprofiles = shipped\ncredentials = credentials.yaml\n"
                f"interval = {interval}s\n")
    queue = bind_queue(prefix, "perf")
    log = os.path.join(d, "snmp.log")
    proc = twistd(reactor, "centaure-snmp", path, d, log)
    try:
        time.sleep(interval * 1.5)
        if proc.poll() is not None:
            raise SystemExit(f"centaure-snmp stopped:\n{log_tail(log)}")
        cpu0, vb0, polls0 = (cpu_seconds(proc.pid), counter(http_port, "varbinds"),
                             counter(http_port, "polls"))
        t0 = time.monotonic()
        time.sleep(window)
        cpu, vb, polls = (cpu_seconds(proc.pid) - cpu0, counter(http_port, "varbinds") - vb0,
                          counter(http_port, "polls") - polls0)
        elapsed = time.monotonic() - t0
        timeouts = counter(http_port, "timeouts")
        return {"part": "poller", "reactor": reactor, "class": reactor_class(log), "devices": devices, "polls": int(polls),
                "varbinds": int(vb), "timeouts": int(timeouts), "cpu_s": round(cpu, 2),
                "varbinds_per_cpu_s": round(vb / cpu) if cpu else None,
                "cpu_us_per_varbind": round(cpu / max(vb, 1) * 1e6, 2),
                "varbinds_per_s": round(vb / elapsed)}
    finally:
        stop(proc)
        delete_bus(prefix, [queue])
        shutil.rmtree(d, ignore_errors=True)


# --- db -------------------------------------------------------------------------------

class ReactorDbDaemon(DbDaemon):
    """``bench_db.DbDaemon`` started with ``--reactor=REACTOR``."""

    def __init__(self, d: str, bus_prefix: str, table_prefix: str, batch: int,
                 reactor: str) -> None:
        self.port = free_tcp_port()
        path = write_db_settings(d, bus_prefix, self.port, table_prefix, batch)
        log = os.path.join(d, f"db-{self.port}.log")
        self.proc = twistd(reactor, "centaure-db", path, d, log)
        self.log = open(log)


def run_db(reactor: str, n: int, metrics: int) -> dict:
    prefix, tp = f"b{uuid.uuid4().hex[:8]}", f"b{uuid.uuid4().hex[:8]}_"
    with tempfile.TemporaryDirectory() as d:
        prefill(prefix, n, metrics)
        daemon = ReactorDbDaemon(d, prefix, tp, 5000, reactor)
        try:
            daemon.wait_ready()
            cpu0 = cpu_seconds(daemon.proc.pid)
            seen = watch_rows(daemon, n * metrics, timeout=600)
            cpu = cpu_seconds(daemon.proc.pid) - cpu0
            return {"part": "db", "reactor": reactor, "class": reactor_class(daemon.log.name), "metrics": n * metrics,
                    "metrics_per_s": round(sustained_rate(seen, n * metrics)),
                    "cpu_s": round(cpu, 2),
                    "cpu_us_per_metric": round(cpu / (n * metrics) * 1e6, 2)}
        finally:
            daemon.stop()
            delete_prefixed_bus(prefix)
            drop_prefixed(MARIADB_URL, tp)


# --- summary --------------------------------------------------------------------------

FIGURES = {"traps": ("cpu_us_per_trap", "events_per_s", "lost"),
           "poller": ("cpu_us_per_varbind", "varbinds_per_cpu_s", "timeouts"),
           "db": ("cpu_us_per_metric", "metrics_per_s")}


def summary(results: list[dict], reactors: list[str]) -> None:
    print("\nmedian [min-max] of the runs; ratio = first reactor / other reactor")
    for part, keys in FIGURES.items():
        rows = [r for r in results if r["part"] == part]
        if not rows:
            continue
        for key in keys:
            meds = {}
            for reactor in reactors:
                vals = [r[key] for r in rows if r["reactor"] == reactor and r[key] is not None]
                if vals:
                    meds[reactor] = statistics.median(vals)
                    print(f"  {part:7} {key:20} {reactor:8} {meds[reactor]:>12,.2f} "
                          f"[{min(vals):,.2f}-{max(vals):,.2f}] n={len(vals)}")
            a, b = (meds.get(r) for r in (reactors + reactors)[:2])
            if len(reactors) > 1 and a and b:
                print(f"  {part:7} {key:20} {reactors[0]}/{reactors[1]} = {a / b:.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reactors", default="asyncio,epoll")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--parts", default="traps,poller,db")
    ap.add_argument("--trap-rate", type=int, default=20_000)
    ap.add_argument("--trap-seconds", type=float, default=3.0)
    ap.add_argument("--devices", type=int, default=1000)
    ap.add_argument("--interval", type=int, default=10)
    ap.add_argument("--poll-seconds", type=float, default=20.0)
    ap.add_argument("--messages", type=int, default=4000)
    ap.add_argument("--metrics", type=int, default=50)
    args = ap.parse_args()
    reactors = args.reactors.split(",")  # alternated: A, B, A, B...
    parts = args.parts.split(",")
    datagrams = build_datagrams()
    results: list[dict] = []
    agents = []
    d = tempfile.mkdtemp(prefix="bench-reactor-agents-")
    try:
        if "poller" in parts:
            from tests.snmp.snmpd import start_snmpd

            agents = [start_snmpd(os.path.join(d, f"agent{i}")) for i in range(2)]
        for _ in range(args.rounds):
            for part in parts:
                for reactor in reactors:
                    try:
                        if part == "traps":
                            r = run_traps(reactor, args.trap_rate, args.trap_seconds, datagrams)
                        elif part == "poller":
                            r = run_poller(reactor, args.devices, args.interval,
                                           args.poll_seconds, agents)
                        else:
                            r = run_db(reactor, args.messages, args.metrics)
                    except SystemExit as e:  # one failed run is reported, not fatal
                        print(f"{part} {reactor}: run failed: {e}", flush=True)
                        continue
                    results.append(r)
                    print(json.dumps(r), flush=True)
    finally:
        for a in agents:
            a.stop()
        shutil.rmtree(d, ignore_errors=True)
    summary(results, args.reactors.split(","))


if __name__ == "__main__":
    main()
