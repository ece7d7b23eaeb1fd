"""Benchmark of the SQLite backup buffer (connector.buffer.SQLiteBuffer).

Measures, for synchronous=NORMAL and FULL:
  * the append rate, in transactions of --batches messages (default 100 and 1,000);
  * the replay rate: read(after_id, --read-batch) then delete(those ids), until empty.

Each figure is measured --runs times on a fresh file and the median printed.
A last line gives plain sqlite3 executemany on the same rows (no buffer logic)
as a reference for what this machine does at that moment.

    .venv/bin/python bench/bench_buffer.py [--messages 50000] [--body-size 400]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from connector.buffer import BufferedMessage, SQLiteBuffer  # noqa: E402


def make_messages(count: int, body_size: int) -> list[BufferedMessage]:
    """Messages shaped like the publisher's: ~body_size bytes, two headers."""
    pad = os.urandom(max(body_size - 10, 0))
    now = time.time()
    return [
        BufferedMessage(
            exchange="centaure.events",
            routing_key="snmp.trap.router-%d" % (i % 500),
            body=(b"%010d" % i) + pad,
            message_id="c0ffee-%012d" % i,
            msg_type="snmp.trap",
            timestamp=now + i * 1e-6,
            headers={"app_id": "snmp-collector", "attempt": 0},
        )
        for i in range(count)
    ]


def remove_db(path: str) -> None:
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.remove(path + suffix)


def run_once(
    path: str, messages: list[BufferedMessage], batch: int, read_batch: int, synchronous: str
) -> tuple[float, float]:
    """Return (append msg/s, read+delete msg/s) measured on a fresh file."""
    remove_db(path)
    buf = SQLiteBuffer(path, len(messages) + 1, 1 << 40, "drop_oldest", synchronous)
    buf.open()
    try:
        t0 = time.perf_counter()
        for first in range(0, len(messages), batch):
            buf.append(messages[first : first + batch])
        t1 = time.perf_counter()
        assert buf.count() == len(messages), buf.count()

        after = replayed = 0
        t2 = time.perf_counter()
        while True:
            rows = buf.read(after, read_batch)
            if not rows:
                break
            after = rows[-1][0]
            replayed += buf.delete([row_id for row_id, _ in rows])
        t3 = time.perf_counter()
        assert replayed == len(messages) and buf.count() == 0, (replayed, buf.count())
    finally:
        buf.close()
    return len(messages) / (t1 - t0), len(messages) / (t3 - t2)


def run_reference(path: str, messages: list[BufferedMessage], batch: int) -> float:
    """Plain sqlite3 executemany of the same rows (WAL, NORMAL), no buffer logic."""
    remove_db(path)
    conn = sqlite3.connect(path, isolation_level=None)
    columns = "exchange, routing_key, body, message_id, msg_type, timestamp, headers"
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute(
            "CREATE TABLE m (id INTEGER PRIMARY KEY AUTOINCREMENT, exchange TEXT,"
            " routing_key TEXT, body BLOB, message_id TEXT, msg_type TEXT, timestamp REAL,"
            " headers TEXT)"
        )
        insert = f"INSERT INTO m ({columns}) VALUES (?, ?, ?, ?, ?, ?, ?)"
        t0 = time.perf_counter()
        for first in range(0, len(messages), batch):
            rows = [
                (m.exchange, m.routing_key, m.body, m.message_id, m.msg_type, m.timestamp,
                 json.dumps(m.headers))
                for m in messages[first : first + batch]
            ]
            conn.execute("BEGIN")
            conn.executemany(insert, rows)
            conn.execute("COMMIT")
        return len(messages) / (time.perf_counter() - t0)
    finally:
        conn.close()


def figures(values: list[float]) -> str:
    return " ".join(f"{v:,.0f}" for v in values)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=50_000, help="messages per run")
    parser.add_argument("--body-size", type=int, default=400, help="body size in bytes")
    parser.add_argument("--batches", default="100,1000", help="append transaction sizes")
    parser.add_argument("--read-batch", type=int, default=1000, help="rows per read+delete")
    parser.add_argument("--sync", default="NORMAL,FULL", help="synchronous levels to measure")
    parser.add_argument("--runs", type=int, default=3, help="runs per figure (median printed)")
    parser.add_argument("--no-reference", action="store_true", help="skip the plain-sqlite3 line")
    parser.add_argument("--dir", default=None, help="directory for the file (default: a temp dir)")
    args = parser.parse_args(argv)

    batches = [int(b) for b in args.batches.split(",")]
    levels = [s.strip().upper() for s in args.sync.split(",")]
    messages = make_messages(args.messages, args.body_size)

    print(
        f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; "
        f"{args.messages:,} messages of {args.body_size} B; median of {args.runs} runs"
    )
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="bench-buffer-") as tmp:
        path = os.path.join(tmp, "buffer.db")
        print(f"file: {path}")
        print(f"{'synchronous':<14}{'batch':>7}{'append msg/s':>15}{'read+delete msg/s':>20}"
              "   all runs: append | read+delete")
        for level in levels:
            for batch in batches:
                results = [
                    run_once(path, messages, batch, args.read_batch, level)
                    for _ in range(args.runs)
                ]
                appends = [a for a, _ in results]
                replays = [r for _, r in results]
                print(
                    f"{level:<14}{batch:>7,}{statistics.median(appends):>15,.0f}"
                    f"{statistics.median(replays):>20,.0f}   "
                    f"{figures(appends)} | {figures(replays)}",
                    flush=True,
                )
        if not args.no_reference:
            ref = [run_reference(path, messages, batches[0]) for _ in range(args.runs)]
            print(
                f"{'plain sqlite3':<14}{batches[0]:>7,}{statistics.median(ref):>15,.0f}"
                f"{'-':>20}   {figures(ref)}   (executemany alone, NORMAL: reference)"
            )
    print(
        f"read+delete = read(after_id, {args.read_batch}) then delete(ids) in one transaction; "
        f"load average now {os.getloadavg()[0]:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
