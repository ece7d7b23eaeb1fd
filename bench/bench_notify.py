"""Alerter notifications: throughput into a real SMTP server, and breach -> email latency.

Notification throughput into the test SMTP server, and the latency from a
breach to its email received (goal: p99 < 2 s plus group_wait). The SMTP
server is the tests' (:mod:`tests.smtpserver`: Twisted's ESMTP, in this
process); it stamps each mail as it is received.

1. ``throughput`` (in process): ``connector_alerter.notifier.open_notifier``
   as the alerter opens it (routes file, outbox and state in ``[database]``:
   MariaDB by default, tables of a unique prefix dropped afterwards; ticking
   every second), one route (``group_by: [host]``, ``group_wait: 0s``, one
   email receiver) to the local SMTP server. ``--alarms`` distinct ``alarm``
   messages (one per host, so one mail each) are handed to
   ``Notifier.handle_alarm`` at once, as the subscriber would with a full
   prefetch window. Printed: alarms taken per second (handle_alarm, state
   saved), and mails received per second from the first alarm to the last
   mail (the figure), with the delivery ledger's count (``notification``
   records published: must equal the mails).
2. ``latency`` (real daemons): ``twistd centaure-alerter`` (rule ``cpuLoad >
   90``, the route above with ``--group-wait``) and ``twistd
   centaure-correlator`` on the real RabbitMQ and MariaDB. This process
   publishes, through the project's own publisher, one ``perf`` message per
   new host with a breaching value every ``1 / --rate`` s (``--breaches`` of
   them): each is one ``threshold`` -> one ``alarm`` -> one mail. Latency =
   mail received - perf published; p50, p99, max and how many mails never came.
   (The poller is left out: its share is the poll interval.)

Usage:
    .venv/bin/python bench/bench_notify.py [--runs 3] [--alarms 1000] [--db mariadb|sqlite]
        [--breaches 100] [--rate 4] [--group-wait 0s] [--skip-throughput] [--skip-latency]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import tempfile
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from twisted.internet import asyncioreactor  # noqa: E402

asyncioreactor.install()

from twisted.internet import defer, reactor, task, threads  # noqa: E402

from bench.bench_correlator import Daemon, delete_bus  # noqa: E402
from bench.bench_db import AMQP_URL, MARIADB_URL, drop_prefixed  # noqa: E402
from connector import messages  # noqa: E402
from connector.settings import settings_from_string  # noqa: E402
from tests.smtpserver import SmtpServer  # noqa: E402

ROUTES = """\
routes:
  - name: bench
    group_by: [host]
    group_wait: {group_wait}
    group_interval: 1m
    repeat_interval: 0
    email: [noc@example.com]
"""
RULES = """\
- name: cpu-high
  severity: major
  when: {metric: cpuLoad, op: '>', value: 90}
"""
SUBJECT_HOST = re.compile(r" - (\S+): ")


class StampedInbox(list):
    """The SMTP server's inbox, with the time each mail was received."""

    def __init__(self) -> None:
        super().__init__()
        self.stamps: list[float] = []

    def append(self, mail) -> None:
        self.stamps.append(time.time())
        super().append(mail)


def smtp_server() -> SmtpServer:
    smtp = SmtpServer()
    smtp.inbox = StampedInbox()
    smtp.start()
    return smtp


async def sleep(seconds: float) -> None:
    await task.deferLater(reactor, seconds, lambda: None)


# --- 1. throughput ---------------------------------------------------------------------------

def alarm(i: int, now: float) -> messages.Alarm:
    return messages.Alarm(source="correlator@bench", ts=now, host=f"host{i:05d}", ref=10_000 + i,
                          name="cpu-high", severity="major", state="raised",
                          message="cpu-high breached: cpuLoad=95", first_seen=now, last_seen=now,
                          count=1, origin="threshold")


async def bench_throughput(args: argparse.Namespace) -> dict:
    from connector_alerter.notifier import open_notifier

    tp = f"b{uuid.uuid4().hex[:8]}_"
    smtp = smtp_server()
    with tempfile.TemporaryDirectory() as d:
        url = MARIADB_URL if args.db == "mariadb" else f"sqlite:///{d}/alerter.sqlite3"
        with open(os.path.join(d, "routes.yaml"), "w") as f:
            f.write(ROUTES.format(group_wait="0s"))
        settings = settings_from_string(
            f"[database]\nurl = {url}\n\n[alerter]\nroutes = routes.yaml\ntable_prefix = {tp}\n\n"
            f"[smtp]\nport = {smtp.port}\nstarttls = never\nsender = centaure@example.com\n",
            source=os.path.join(d, "settings.ini"))
        ledger: list[messages.Notification] = []
        notifier = await open_notifier(settings, reactor, ledger.append, source="alerter@bench")
        try:
            now = time.time()
            alarms = [alarm(i, now) for i in range(args.alarms)]
            t0 = time.time()
            await defer.gatherResults([defer.ensureDeferred(notifier.handle_alarm(a))
                                       for a in alarms])
            taken = time.time() - t0
            deadline = time.monotonic() + 600
            while len(smtp.inbox) < args.alarms and time.monotonic() < deadline:
                await sleep(0.05)
            await sleep(1.0)  # the last ledger records
            stamps = smtp.inbox.stamps
            hosts = {SUBJECT_HOST.search(m["Subject"]).group(1) for m in smtp.inbox}
        finally:
            notifier.stop()
            await smtp.stop()
            await threads.deferToThread(notifier.store.engine.dispose) \
                if hasattr(notifier.store, "engine") else None
            if args.db == "mariadb":
                await threads.deferToThread(drop_prefixed, MARIADB_URL, tp)
    n = len(stamps)
    return {"taken_per_s": args.alarms / taken, "mails": n, "distinct_hosts": len(hosts),
            "rate": n / (stamps[-1] - t0) if n else 0.0,
            "first_mail_s": stamps[0] - t0 if n else float("nan"),
            "sent_records": sum(1 for r in ledger if r.state == "sent"),
            "elapsed": (stamps[-1] - t0) if n else float("nan")}


# --- 2. latency --------------------------------------------------------------------------------

def perf(host: str) -> messages.Perf:
    return messages.Perf(source="snmp@bench", host=host, address="10.0.0.1",
                         device_type="router",
                         metrics=[messages.Metric(name="cpuLoad", value=95.0, kind="gauge",
                                                  oid="1.3.6.1.4.1.1")])


async def bench_latency(args: argparse.Namespace) -> dict:
    from connector.amqp.bus import AMQPBus
    from connector.settings import load_settings

    prefix, tp = f"b{uuid.uuid4().hex[:8]}", f"b{uuid.uuid4().hex[:8]}_"
    smtp = smtp_server()
    daemons: list[Daemon] = []
    bus = None
    with tempfile.TemporaryDirectory() as d:
        os.chmod(d, 0o755)
        with open(os.path.join(d, "rules.yaml"), "w") as f:
            f.write(RULES)
        with open(os.path.join(d, "routes.yaml"), "w") as f:
            f.write(ROUTES.format(group_wait=args.group_wait))
        try:
            # The correlator first: its queue exists before the alerter publishes.
            daemons.append(Daemon(d, "centaure-correlator", prefix, 500, {
                "database": {"url": MARIADB_URL},
                "correlator": {"table_prefix": tp + "c_"}}))
            await threads.deferToThread(daemons[0].wait_healthy, "correlator")
            daemons.append(Daemon(d, "centaure-alerter", prefix, 500, {
                "database": {"url": MARIADB_URL},
                "alerter": {"rules": "rules.yaml", "routes": "routes.yaml", "backfill": "false",
                            "table_prefix": tp + "a_"},
                "smtp": {"port": smtp.port, "starttls": "never",
                         "sender": "centaure@example.com"}}))
            await threads.deferToThread(daemons[1].wait_healthy, "alerter")
            path = os.path.join(d, "bench.ini")
            with open(path, "w") as f:
                f.write(f"[bus]\nurl = {AMQP_URL}\nexchange_prefix = {prefix}\n\n"
                        f"[buffer]\npath = {d}/buffer-bench.sqlite3\n")
            s = load_settings(path)
            bus = AMQPBus(reactor, s.bus, s.buffer, "bench")
            await bus.startService()
            while not bus.connected:
                await sleep(0.05)
            publisher = bus.publisher("bench")
            sent: dict[str, float] = {}
            run = uuid.uuid4().hex[:6]
            for i in range(args.breaches):
                host = f"r{run}-{i:04d}"
                sent[host] = time.time()
                publisher.publish(perf(host))
                await sleep(1.0 / args.rate)
            deadline = time.monotonic() + 30 + float(args.group_wait.rstrip("s") or 0)
            while len(smtp.inbox) < args.breaches and time.monotonic() < deadline:
                await sleep(0.05)
            got = {}
            for mail, stamp in zip(smtp.inbox, smtp.inbox.stamps):
                host = SUBJECT_HOST.search(mail["Subject"]).group(1)
                got.setdefault(host, stamp)
        finally:
            if bus is not None:
                await bus.stopService()
            for daemon in daemons:
                await threads.deferToThread(daemon.stop)
            await smtp.stop()
            await threads.deferToThread(delete_bus, prefix, [f"{prefix}.alerter"])
            await threads.deferToThread(drop_prefixed, MARIADB_URL, tp)
    lat = sorted(got[h] - t for h, t in sent.items() if h in got)
    return {"n": len(lat), "lost": len(sent) - len(lat), "mails": len(smtp.inbox),
            "p50": quantile(lat, 0.5), "p99": quantile(lat, 0.99),
            "max": lat[-1] if lat else float("nan")}


def quantile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(q * len(values)))]


async def main(args: argparse.Namespace) -> None:
    if not args.skip_throughput:
        rates = []
        for i in range(args.runs):
            r = await bench_throughput(args)
            rates.append(r["rate"])
            print(f"  run {i + 1}: {r['mails']:,} mails ({r['distinct_hosts']:,} hosts) in "
                  f"{r['elapsed']:.1f} s: {r['rate']:,.0f} mails/s; alarms taken "
                  f"{r['taken_per_s']:,.0f}/s; first mail after {r['first_mail_s']:.2f} s; "
                  f"ledger 'sent' records {r['sent_records']:,}", flush=True)
        print(f"throughput, notifier ({args.db}) -> SMTP server: "
              f"{statistics.median(rates):,.0f} mails/s (median of {args.runs}; runs "
              f"{', '.join(f'{x:,.0f}' for x in rates)}; {args.alarms:,} alarms each)",
              flush=True)
    if not args.skip_latency:
        p50s, p99s = [], []
        for i in range(args.runs):
            r = await bench_latency(args)
            p50s.append(r["p50"])
            p99s.append(r["p99"])
            print(f"  run {i + 1}: {r['n']} breaches mailed, {r['lost']} never, {r['mails']} "
                  f"mails: p50 {r['p50']:.3f} s, p99 {r['p99']:.3f} s, max {r['max']:.3f} s",
                  flush=True)
        gw = float(args.group_wait.rstrip("s") or 0)
        p99 = statistics.median(p99s)
        print(f"latency, perf published -> mail received (group_wait {args.group_wait}, "
              f"{args.rate}/s): p50 {statistics.median(p50s):.3f} s, p99 {p99:.3f} s (medians "
              f"of {args.runs}; p99 runs {', '.join(f'{x:.3f}' for x in p99s)})")
        print(f"goal: p99 < 2 s + group_wait ({2 + gw:.0f} s): {'met' if p99 < 2 + gw else 'NOT met'}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--alarms", type=int, default=1000)
    ap.add_argument("--db", choices=("mariadb", "sqlite"), default="mariadb")
    ap.add_argument("--breaches", type=int, default=100)
    ap.add_argument("--rate", type=float, default=4.0, help="breaches per second")
    ap.add_argument("--group-wait", default="0s", help="in seconds, e.g. 0s, 5s")
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument("--skip-latency", action="store_true")
    parsed = ap.parse_args()
    task.react(lambda _r: defer.ensureDeferred(main(parsed)))
