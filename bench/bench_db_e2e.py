"""End to end: a fleet polled by ``centaure-snmp``, over RabbitMQ, stored by ``centaure-db``.

Real net-snmp ``snmpd`` agents stand in for the devices (each inventory
device is one of them, round robin; profiles mib2-system + if-mib). Both
daemons run as they would in production (``twistd``), the writer into
MariaDB. Measured over a window after warm-up: metrics/s stored (the
writer's ``rows_written``) and the lag from the poll's timestamp to the
commit (the writer's ``store_lag_seconds`` histogram, p50 and p99 as bucket
upper bounds).

Usage: .venv/bin/python bench/bench_db_e2e.py [--devices 1000] [--interval 10]
       [--seconds 40]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.bench_db import (  # noqa: E402
    AMQP_URL, BIN, MARIADB_URL, DbDaemon, delete_prefixed_bus, drop_prefixed, free_tcp_port)


def write_fleet_files(d: str, devices: int, ports: list[int]) -> None:
    """inventory.yaml (``devices`` switches spread over the agents' ports) and v2c credentials."""
    with open(os.path.join(d, "inventory.yaml"), "w") as f:
        f.write("devices:\n")
        for i in range(devices):
            f.write(f"  - {{name: dev{i:05d}, address: 127.0.0.1, port: {ports[i % len(ports)]}, "
                    f"device_type: switch, id: \"{i}\"}}\n")
    with open(os.path.join(d, "credentials.yaml"), "w") as f:
        f.write("default:\n  version: v2c\n  community: public\n")


def write_poller_settings(d: str, bus_prefix: str, devices: int, ports: list[int],
                          interval: int) -> str:
    write_fleet_files(d, devices, ports)
    path = os.path.join(d, "snmp.ini")
    with open(path, "w") as f:
        f.write(f"[bus]\nurl = {AMQP_URL}\nexchange_prefix = {bus_prefix}\n\n"
                f"[buffer]\npath = {d}/buffer-{{connector}}.sqlite3\n\n"
                f"[connector]\nhttp_port = {free_tcp_port()}\nnode = bench\n\n"
                f"[inventory]\nsource = yaml\npath = inventory.yaml\nport_column = port\n\n"
                f"[snmp]\nprofiles = shipped\ncredentials = credentials.yaml\n"
                f"interval = {interval}s\n")
    return path


def lag_quantiles(db: dict) -> tuple[float, float]:
    return db.get("store_lag_p50", float("nan")), db.get("store_lag_p99", float("nan"))


def bench_e2e(devices: int = 1000, interval: int = 10, seconds: float = 40,
              agents: int = 2) -> dict:
    from tests.snmp.snmpd import start_snmpd

    bus_prefix, tp = f"b{uuid.uuid4().hex[:8]}", f"b{uuid.uuid4().hex[:8]}_"
    with tempfile.TemporaryDirectory() as d:
        started = [start_snmpd(os.path.join(d, f"agent{i}")) for i in range(agents)]
        db = DbDaemon(d, bus_prefix, tp, 5000)
        poller = None
        try:
            db.wait_ready()
            path = write_poller_settings(d, bus_prefix, devices, [a.port for a in started],
                                         interval)
            log = open(os.path.join(d, "snmp.log"), "w")
            poller = subprocess.Popen([f"{BIN}/twistd", "-n", "--pidfile=", "centaure-snmp",
                                       "-c", path], cwd=d, stdout=log, stderr=subprocess.STDOUT,
                                      env=dict(os.environ, PYTHONPATH=ROOT))
            warmup = interval * 1.5
            time.sleep(warmup)
            first = db.db()
            t1 = time.monotonic()
            time.sleep(seconds)
            last = db.db()
            t2 = time.monotonic()
            if poller.poll() is not None:
                raise SystemExit(f"centaure-snmp stopped: {log.name}")
            rows = last["rows_written"] - first["rows_written"]
            p50, p99 = lag_quantiles(last)
            return {"devices": devices, "interval_s": interval, "window_s": round(t2 - t1, 1),
                    "metrics_per_s": round(rows / (t2 - t1)),
                    "lag_p50_s": p50, "lag_p99_s": p99,
                    "writer_batches": last["batches"] - first["batches"]}
        finally:
            if poller is not None and poller.poll() is None:
                poller.send_signal(signal.SIGTERM)
                poller.wait(60)
            db.stop()
            for a in started:
                a.stop()
            delete_prefixed_bus(bus_prefix)
            drop_prefixed(MARIADB_URL, tp)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--devices", type=int, default=1000)
    ap.add_argument("--interval", type=int, default=10)
    ap.add_argument("--seconds", type=float, default=40)
    args = ap.parse_args()
    print(json.dumps(bench_e2e(args.devices, args.interval, args.seconds), indent=1))


if __name__ == "__main__":
    main()
