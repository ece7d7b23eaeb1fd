"""``twistd centaure-traps`` with its journal, the real RabbitMQ and datagram-level senders.

* kill -9 in the middle of a 20,000-trap burst: after a restart every trap the
  kernel handed to the daemon is published (sequence numbers checked), repeats
  allowed and counted;
* the journal full (1 MiB, the broker unreachable behind a proxy that is not
  listening yet, a 10-message buffer refusing the newest): drops counted, one
  warning line per 10 s, the daemon keeps running, and everything journaled is
  published once the broker is reachable; new traps go through again;
* an oversized datagram and a flood of 64 KiB datagrams: the RSS stays under
  the bound stated below.
"""

from __future__ import annotations

import os
import re
import socket
import threading
import time

import pika
import pytest

from snmpwire import ber
from tests.conftest import AMQP_URL
from tests.integration.daemons import TwistdDaemon
from tests.integration.support import (
    connector_metrics,
    declare_check_queue,
    traps_folder,
    traps_settings,
)

pytestmark = pytest.mark.integration

BASE = 1 << 24
LINK_DOWN = "1.3.6.1.6.3.1.1.5.3"
SEQ_RE = re.compile(rb"1\.3\.6\.1\.2\.1\.2\.2\.1\.1\.(\d+)")
#: The RSS the daemon stays under while 64 KiB datagrams flood it.  It starts near 60 MiB
#: (Python, Twisted, txamqp, SQLAlchemy); the intake adds at most the journal's write batch
#: (1 MiB) and the traps read from the journal and waiting for the publisher: queue_bytes
#: (16 MiB) of memory, a quarter of it in datagrams, each also held decoded, as an event
#: and as its JSON body; Python's allocator keeps freed blocks, hence the margin.
RSS_BOUND_MIB = 256


def trap(seq: int, pad: int = 0) -> bytes:
    v = BASE + seq
    varbinds = [("1.3.6.1.2.1.1.3.0", ber.TIMETICKS, v),
                ("1.3.6.1.6.3.1.1.4.1.0", ber.OBJECT_IDENTIFIER, LINK_DOWN),
                (f"1.3.6.1.2.1.2.2.1.1.{v}", ber.INTEGER, v),
                (f"1.3.6.1.2.1.2.2.1.7.{v}", ber.INTEGER, 2),
                (f"1.3.6.1.2.1.2.2.1.8.{v}", ber.INTEGER, 2)]
    if pad:
        varbinds.append((f"1.3.6.1.2.1.2.2.1.2.{v}", ber.OCTET_STRING, b"x" * pad))
    return ber.encode_trap_v2(b"public", v, varbinds)


def blast(port: int, seqs, rate: float, stop: threading.Event | None = None,
          pad: int = 0) -> int:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * 1024 * 1024)
    start = time.perf_counter()
    sent = 0
    for i, seq in enumerate(seqs):
        if stop is not None and stop.is_set():
            break
        while i > (time.perf_counter() - start) * rate:
            time.sleep(0.001)
        try:
            sock.sendto(trap(seq, pad), ("127.0.0.1", port))
        except OSError:
            pass
        sent += 1
    sock.close()
    return sent


def udp_stats(port: int) -> dict | None:
    with open("/proc/net/udp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port:
                return {"drops": int(fields[-1]), "rx_queue": int(fields[4].split(":")[1], 16)}
    return None


def metrics(http_port: int) -> dict[str, float]:
    return connector_metrics(http_port, "traps")


def seqs_on(queue: str, idle: float = 2.0) -> list[int]:
    conn = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    ch = conn.channel()
    ch.basic_qos(prefetch_count=2000)
    out = []
    for method, _props, body in ch.consume(queue, auto_ack=True, inactivity_timeout=idle):
        if method is None:
            break
        m = SEQ_RE.search(body)
        if m:
            out.append(int(m[1]) - BASE)
    ch.cancel()
    conn.close()
    return out


def rss_mib(pid: int, field: str = "VmRSS") -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise AssertionError(field)


def make_daemon(tmp_path, prefix, url: str = AMQP_URL, traps: dict | None = None,
                buffer: dict | None = None) -> tuple[TwistdDaemon, int, int]:
    port, http_port = traps_folder(tmp_path)
    extra = {}
    if buffer:
        extra["buffer"] = {"path": str(tmp_path / "buffer-{connector}.sqlite3"), **buffer}
    path = traps_settings(tmp_path, prefix, port, http_port, url=url,
                          traps={"rate_limit": "0", "dedup_window": "0", **(traps or {})},
                          connector={"status_interval": "1s"}, **extra)
    daemon = TwistdDaemon("centaure-traps", path, http_port)
    daemon.wait_log("receiving traps on")
    return daemon, port, http_port


def test_kill_9_in_a_burst_loses_nothing_read(tmp_path, prefix):
    queue = declare_check_queue(prefix, "event")
    daemon, port, http_port = make_daemon(tmp_path, prefix)
    try:
        n = 20_000
        sent = blast(port, range(n), rate=20_000)
        # Everything is read long before it is published (~7,000 events/s here):
        # kill -9 once the socket is empty and part of the burst is published.
        deadline = time.monotonic() + 30
        while True:
            m = metrics(http_port)
            stats = udp_stats(port)
            if stats["rx_queue"] == 0 and m.get("datagrams_read", 0) + stats["drops"] >= sent:
                break
            assert time.monotonic() < deadline, (m, stats)
            time.sleep(0.05)
        kernel_drops = stats["drops"]
        published_before = m.get("published_events", 0)
        daemon.kill()
        assert published_before < n, "the burst was published before the kill: no test"
        assert os.listdir(tmp_path / "journal-traps"), "no journal beside the buffer"
        daemon.start()
        daemon.wait_log("processed again")
        got: list[int] = []
        deadline = time.monotonic() + 30
        while len(set(got)) < sent - kernel_drops and time.monotonic() < deadline:
            got.extend(seqs_on(queue, idle=1.0))
        distinct = set(got)
        repeats = len(got) - len(distinct)
        print(f"sent {sent}, kernel drops {kernel_drops}, published before the kill "
              f"{published_before:.0f}, distinct {len(distinct)}, repeats {repeats}")
        assert len(distinct) >= sent - kernel_drops
        assert distinct <= set(range(n))
        if kernel_drops == 0:
            assert distinct == set(range(n))
        m = metrics(http_port)
        assert m.get("journal_recovered", 0) > 0
    finally:
        daemon.stop()


class Proxy:
    """A TCP forwarder to the broker that listens only once started."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        self.port = s.getsockname()[1]
        s.close()
        self.server: socket.socket | None = None
        self.socks: list[socket.socket] = []

    def start(self) -> None:
        self.server = socket.socket()
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.server.bind(("127.0.0.1", self.port))
        self.server.listen(8)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            self.socks += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while True:
                data = a.recv(65536)
                if not data:
                    break
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for s in self.socks:
            s.close()


def test_journal_full_drops_counted_logged_every_10s_and_recovers(tmp_path, prefix):
    queue = declare_check_queue(prefix, "event")
    proxy = Proxy(("127.0.0.1", 5672))
    url = AMQP_URL.replace("127.0.0.1:5672", f"127.0.0.1:{proxy.port}")
    daemon, port, http_port = make_daemon(
        tmp_path, prefix, url=url, traps={"journal_size": "1MiB"},
        buffer={"max_messages": "10", "policy": "refuse_newest"})
    try:
        t0 = time.monotonic()
        # 1 MiB holds ~6,500 of these 161-byte records: 9,000 overflow it.
        sent = blast(port, range(9_000), rate=5_000)
        deadline = time.monotonic() + 10
        while metrics(http_port).get("datagrams_read", 0) < sent:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        m = metrics(http_port)
        dropped = m.get("dropped_journal_full", 0)
        assert dropped > 1_000, m
        assert m["journal_bytes"] <= 1024 * 1024
        assert daemon.logs().count("traps dropped:") == 1
        # More drops within the 10 s: no new line until the interval is over, then one.
        sent += blast(port, range(9_000, 9_500), rate=5_000)
        time.sleep(max(0.0, t0 + 8 - time.monotonic()))
        assert daemon.logs().count("traps dropped:") == 1
        time.sleep(max(0.0, t0 + 12.5 - time.monotonic()))
        lines = [line for line in daemon.logs().splitlines() if "traps dropped:" in line]
        assert len(lines) == 2, lines
        total_dropped = metrics(http_port)["dropped_journal_full"]
        assert re.search(r"(\d+) journal full", lines[1])
        assert sum(int(re.search(r"(\d+) journal full", x)[1]) for x in lines) == total_dropped
        assert daemon.alive()
        # The broker becomes reachable: the journal drains, nothing journaled is lost.
        proxy.start()
        kept = sent - total_dropped
        got: list[int] = []
        deadline = time.monotonic() + 25
        while len(set(got)) < kept and time.monotonic() < deadline:
            got.extend(seqs_on(queue, idle=1.0))
        assert len(set(got)) == kept, (len(set(got)), kept, metrics(http_port))
        # And new traps go through.
        blast(port, range(20_000, 20_100), rate=5_000)
        deadline = time.monotonic() + 15
        new: list[int] = []
        while len(set(new)) < 100 and time.monotonic() < deadline:
            new.extend(s for s in seqs_on(queue, idle=1.0) if s >= 20_000)
        assert set(new) == set(range(20_000, 20_100))
        assert metrics(http_port)["dropped_journal_full"] == total_dropped
    finally:
        daemon.stop()
        proxy.close()


def test_oversized_and_a_flood_of_64k_datagrams_keep_memory_bounded(tmp_path, prefix):
    queue = declare_check_queue(prefix, "event")
    daemon, port, http_port = make_daemon(tmp_path, prefix)
    try:
        pid = daemon.proc.pid
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.sendto(trap(1, pad=20_000), ("127.0.0.1", port))  # > max_datagram (16 KiB)
        sock.sendto(trap(2), ("127.0.0.1", port))
        deadline = time.monotonic() + 10
        while metrics(http_port).get("published_events", 0) < 1:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        m = metrics(http_port)
        assert m["dropped_oversized"] == 1
        assert seqs_on(queue, idle=1.0) == [2]
        base = rss_mib(pid)
        # 3,000 datagrams of 65,000 bytes (190 MiB) in ~3 s.
        sent = blast(port, range(100, 3_100), rate=1_000, pad=64_800)
        deadline = time.monotonic() + 10
        while True:
            m = metrics(http_port)
            if m.get("datagrams_read", 0) + udp_stats(port)["drops"] >= sent + 2:
                break
            assert time.monotonic() < deadline, m
            time.sleep(0.1)
        peak = rss_mib(pid, "VmHWM")
        print(f"RSS before the flood {base:.0f} MiB, peak {peak:.0f} MiB; {m}")
        assert m["dropped_oversized"] >= 1 + sent - udp_stats(port)["drops"] - 10
        assert peak < RSS_BOUND_MIB
        assert daemon.alive()
    finally:
        daemon.stop()


def test_a_flood_of_64k_traps_kept_whole_keeps_memory_bounded(tmp_path, prefix):
    """max_datagram = 65535: the 64 KiB traps are journaled and published; memory stays
    bounded by the write batch and queue_bytes, not by the flood."""
    queue = declare_check_queue(prefix, "event")
    daemon, port, http_port = make_daemon(tmp_path, prefix, traps={"max_datagram": "65535"})
    try:
        pid = daemon.proc.pid
        sent = blast(port, range(1_000), rate=500, pad=64_800)
        deadline = time.monotonic() + 30
        while True:
            m = metrics(http_port)
            if m.get("published_events", 0) + udp_stats(port)["drops"] >= sent:
                break
            assert time.monotonic() < deadline, m
            time.sleep(0.2)
        peak = rss_mib(pid, "VmHWM")
        got = seqs_on(queue, idle=1.0)
        print(f"peak RSS {peak:.0f} MiB, {len(set(got))} of {sent} published; {m}")
        assert len(set(got)) >= sent - udp_stats(port)["drops"]
        assert peak < RSS_BOUND_MIB
    finally:
        daemon.stop()

