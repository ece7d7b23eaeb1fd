"""The web console (``twistd centaure-console``) with a big board, against the real RabbitMQ.

Parts (each prints its figures):

1. ``board``: the correlator's tables (SQLite) hold ``--alarms`` active alarms
   (10,000); the console loads them at start. Server time to first byte and to
   the last byte of ``GET /`` (the board rendered by the server, every alarm
   in it), logged in, median of ``--runs``; then Chromium (Debian's, headless)
   loading the board: time to first byte, DOMContentLoaded, and the time until
   the page's script has drawn the table again from the event stream's
   snapshot (``data-rendered-at`` of the table), median of ``--runs``.
2. ``live``: ``--clients`` (100) event-stream clients (``/events``, in
   ``--procs`` processes of non-blocking sockets) while this process publishes
   ``alarm`` messages (``updated``, each for one of the board's alarms, its
   ``ts`` the send time) to ``<prefix>.alarm`` at ``--rate`` (1,000/s) for
   ``--seconds``. Printed: whether every client saw every change, and the lag
   from a message's ``ts`` to its arrival at a client (p50, p99, max, over all
   clients).
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import re
import selectors
import shutil
import socket
import statistics
import sys
import tempfile
import time
import urllib.parse
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "src"))

import pika  # noqa: E402
import sqlalchemy as sa  # noqa: E402

from bench.bench_correlator import Daemon, amqp, delete_bus  # noqa: E402
from bench.bench_db import AMQP_URL, free_tcp_port  # noqa: E402
from centaure_shared.storage.alarms import create_all, make_schema  # noqa: E402
from connector import messages  # noqa: E402
from connector.topology import connector_queue  # noqa: E402
from connector_console.users import write_user  # noqa: E402

SEVERITIES = ("critical", "major", "minor", "warning", "info")
PASSWORD = "bench passphrase"


def fill(db_url: str, n: int) -> list[tuple[int, str]]:
    """``n`` active alarms in the correlator's tables; their (ref, host)."""
    schema = make_schema("corr_")
    engine = sa.create_engine(db_url)
    create_all(engine, schema)
    now = time.time()
    rows = []
    for i in range(n):
        rows.append({
            "ref": 10**12 + i, "host": f"host{i // 10:05d}.example.net", "name": "linkDown",
            "identity": json.dumps({"ifIndex": str(i % 10)}), "origin": "trap",
            "severity": SEVERITIES[i % 5], "base_severity": SEVERITIES[i % 5],
            "message": f"Interface {i % 10} down (admin up, oper down)", "active": True,
            "first_seen": now - 3600 + i * 0.1, "last_seen": now - 1800 + i * 0.1, "count": 1 + i % 7,
            "cleared_at": None, "clear_reason": None, "changed_ts": now - 1800,
            "acked_by": "alice" if i % 9 == 0 else None, "acked_at": None, "notes": "[]",
            "flapping": i % 97 == 0, "history": "[]", "cause_ref": None,
            "published_at": now - 1800, "pending_update": False, "seq": 1})
    with engine.begin() as conn:
        conn.execute(schema.alarms.insert(), rows)
    engine.dispose()
    return [(r["ref"], r["host"]) for r in rows]


def login(base: str) -> str:
    """The session cookie's value after a login over HTTP."""
    host, port = urllib.parse.urlsplit(base).netloc.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    conn.request("GET", "/login")
    r = conn.getresponse()
    form = r.read().decode()
    login_cookie = re.search(r"centaure_login=([^;]+)", r.getheader("set-cookie")).group(1)
    csrf = re.search(r'name="csrf" value="([^"]+)"', form).group(1)
    body = urllib.parse.urlencode({"csrf": csrf, "name": "bench", "password": PASSWORD,
                                   "next": "/"})
    conn.request("POST", "/login", body, {"Content-Type": "application/x-www-form-urlencoded",
                                          "Cookie": f"centaure_login={login_cookie}"})
    r = conn.getresponse()
    r.read()
    conn.close()
    return re.search(r"centaure_session=([^;]+)", r.getheader("set-cookie")).group(1)


def server_times(base: str, session: str, runs: int) -> dict:
    host, port = urllib.parse.urlsplit(base).netloc.split(":")
    ttfb, total, size = [], [], 0
    for _ in range(runs):
        conn = http.client.HTTPConnection(host, int(port), timeout=120)
        t0 = time.perf_counter()
        conn.request("GET", "/", headers={"Cookie": f"centaure_session={session}"})
        r = conn.getresponse()
        r.fp.peek(1)
        t1 = time.perf_counter()
        body = r.read()
        t2 = time.perf_counter()
        conn.close()
        assert r.status == 200, r.status
        size = len(body)
        ttfb.append(t1 - t0)
        total.append(t2 - t0)
    return {"ttfb_ms": statistics.median(ttfb) * 1000, "total_ms": statistics.median(total) * 1000,
            "bytes": size}


def browser_times(base: str, n: int, runs: int) -> dict:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,900"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    try:
        driver.get(base + "/login")
        driver.find_element(By.ID, "name").send_keys("bench")
        driver.find_element(By.ID, "password").send_keys(PASSWORD)
        driver.find_element(By.ID, "login").click()
        out = {"ttfb_ms": [], "dcl_ms": [], "rendered_ms": []}
        for _ in range(runs):
            driver.get(base + "/")
            WebDriverWait(driver, 300, 0.05).until(lambda d: d.execute_script(
                "const t = document.getElementById('alarms');"
                f"return t.dataset.renderedAt && t.tBodies[0].rows.length === {n};"))
            nav = driver.execute_script(
                "const n = performance.getEntriesByType('navigation')[0];"
                "return [n.responseStart, n.domContentLoadedEventEnd,"
                " Number(document.getElementById('alarms').dataset.renderedAt)];")
            for key, value in zip(("ttfb_ms", "dcl_ms", "rendered_ms"), nav):
                out[key].append(value)
        return {k: statistics.median(v) for k, v in out.items()}
    finally:
        driver.quit()


def sse_clients(base: str, session: str, clients: int, want: int, ready, result_q,
                deadline_s: float) -> None:
    """``clients`` streams in this process: (count of upserts per client, lags in ms)."""
    host, port = urllib.parse.urlsplit(base).netloc.split(":")
    sel = selectors.DefaultSelector()
    buffers, counts, lags = {}, {}, []
    for i in range(clients):
        s = socket.create_connection((host, int(port)))
        s.sendall(f"GET /events HTTP/1.1\r\nHost: {host}\r\nCookie: centaure_session={session}"
                  "\r\nAccept: text/event-stream\r\n\r\n".encode())
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, i)
        buffers[i], counts[i] = b"", 0
    snapshots = set()
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline and (len(snapshots) < clients or
                                           min(counts.values()) < want):
        for key, _ in sel.select(0.5):
            data = key.fileobj.recv(1 << 20)
            now = time.time()
            if not data:
                sel.unregister(key.fileobj)
                continue
            buf = buffers[key.data] + data
            *events, buffers[key.data] = buf.split(b"\n\n")
            for event in events:
                if b"event: snapshot" in event:
                    snapshots.add(key.data)
                    if len(snapshots) == clients:
                        ready.set()
                elif b"event: upsert" in event:
                    counts[key.data] += 1
                    # The alarm's version is the message's ts, the send time.
                    version = float(event.rsplit(b'"version":', 1)[1].rstrip(b"}\n"))
                    lags.append((now - version) * 1000)
    result_q.put((list(counts.values()), lags))


def run_live(base: str, session: str, prefix: str, alarms: list, args) -> dict:
    want = args.rate * args.seconds
    per = [args.clients // args.procs + (i < args.clients % args.procs) for i in range(args.procs)]
    readies = [multiprocessing.Event() for _ in per]
    result_q = multiprocessing.Queue()
    procs = [multiprocessing.Process(target=sse_clients, args=(
        base, session, n, want, ready, result_q, args.seconds * 10 + 60))
        for n, ready in zip(per, readies)]
    for p in procs:
        p.start()
    for ready in readies:
        assert ready.wait(120), "the event-stream clients did not all get their snapshot"
    conn = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    ch = conn.channel()
    exchange = f"{prefix}.alarm"
    start = time.monotonic()
    for i in range(want):
        target = start + i / args.rate
        delay = target - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        ref, host = alarms[i % len(alarms)]
        now = time.time()
        alarm = messages.Alarm(source="correlator@bench", ts=now, host=host, ref=ref,
                               name="linkDown", severity="major", state="updated",
                               message="Interface down (bench)", first_seen=now - 3600,
                               last_seen=now, count=i + 2, origin="trap")
        ch.basic_publish(exchange, messages.routing_key(alarm), messages.encode(alarm),
                         pika.BasicProperties(message_id=uuid.uuid4().hex, type="alarm"))
    sent_for = time.monotonic() - start
    conn.close()
    counts, lags = [], []
    for _ in procs:
        c, lag = result_q.get(timeout=args.seconds * 10 + 120)
        counts += c
        lags += lag
    for p in procs:
        p.join(30)
    lags.sort()
    return {"sent": want, "sent_rate": want / sent_for, "clients": len(counts),
            "every_client_saw_every_change": all(c == want for c in counts),
            "min_seen": min(counts), "lag_p50_ms": lags[len(lags) // 2],
            "lag_p99_ms": lags[int(len(lags) * 0.99)], "lag_max_ms": lags[-1]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--alarms", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--clients", type=int, default=100)
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--rate", type=int, default=1000)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--parts", default="board,live")
    args = ap.parse_args()
    d = tempfile.mkdtemp(prefix="bench-console-")
    prefix = f"bc{uuid.uuid4().hex[:8]}"
    db_url = f"sqlite:///{d}/centaure.sqlite3"
    alarms = fill(db_url, args.alarms)
    write_user(f"{d}/users.yaml", "bench", "operator", PASSWORD)
    with amqp() as conn:
        ch = conn.channel()
        spec = connector_queue(prefix, "console")
        for b in spec.bindings:
            ch.exchange_declare(b.exchange, "topic", durable=True)
        ch.queue_declare(spec.name, durable=True, arguments=spec.arguments)
        for b in spec.bindings:
            ch.queue_bind(spec.name, b.exchange, b.pattern)
    port = free_tcp_port()
    daemon = Daemon(d, "centaure-console", prefix, 1000, {
        "database": {"url": db_url},
        "console": {"port": port, "users_file": f"{d}/users.yaml",
                    "max_event_clients": args.clients + 10}})
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while f"alarm board loaded: {args.alarms} active alarms" not in open(daemon.log_path).read():
            assert daemon.proc.poll() is None, open(daemon.log_path).read()[-3000:]
            assert time.monotonic() < deadline, "the console never loaded the board"
            time.sleep(0.2)
        session = login(base)
        if "board" in args.parts:
            print(f"board, {args.alarms} active alarms, server:", json.dumps(
                server_times(base, session, args.runs)), flush=True)
            print(f"board, {args.alarms} active alarms, Chromium:", json.dumps(
                browser_times(base, args.alarms, args.runs)), flush=True)
        if "live" in args.parts:
            print(f"live, {args.clients} clients, {args.rate}/s for {args.seconds} s:",
                  json.dumps(run_live(base, session, prefix, alarms, args)), flush=True)
    finally:
        daemon.proc.terminate()
        daemon.proc.wait(60)
        delete_bus(prefix, [f"{prefix}.console"], "console")
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
