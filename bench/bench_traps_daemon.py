"""The trap daemon as users run it, against net-snmp's snmptrapd, same traps, same machine.

    .venv/bin/python bench/bench_traps_daemon.py                # the whole set (~30 min)
    .venv/bin/python bench/bench_traps_daemon.py --rates 20000 --seconds 5 --runs 1 \\
        --no-long --no-burst --no-v3                            # a quick look

What runs:

* ``twistd -n centaure-traps`` (the real daemon: shipped defaults and the shipped
  ``traps.yaml``, except ``rate_limit = 0`` and ``dedup_window = 0`` so that every
  trap counts, its listening port, its buffer and journal in a fresh folder),
  publishing to the local RabbitMQ (``--amqp``, a unique exchange prefix); a durable
  lazy queue bound to the event exchange counts what was published;
* ``snmptrapd -f -On -n -Lf FILE`` (net-snmp; installed with apt when missing),
  authorization off, logging every trap to a file.

Both are fed, one after the other, by the same blaster: numbered SNMPv2c linkDown
traps of 136 bytes (the number in the request-id, sysUpTime and ifIndex), built from
a template (patched bytes, no encoder in the loop), sent on loopback by a paced
``send`` loop (a tick per millisecond) at a fixed rate.  The blaster's achieved rate is
printed.

For each trial: sent; kernel drops (``/proc/net/udp`` drops column of the receiver's
socket); the daemon's drops by reason (its ``/metrics``); events published (every
sequence number found on the queue, repeats counted) or snmptrapd's traps logged;
lost = sent - distinct numbers received.

Sets: ``--rates`` for ``--seconds`` each (median of ``--runs``), one long run
(``--long-rate`` for ``--long-seconds``), one burst (``--burst`` traps at
``--burst-rate``), and SNMPv3 authPriv (SHA/AES) traps at ``--v3-rate`` for
``--v3-seconds`` (daemon only).  ``--json FILE`` writes every trial.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
SRC = os.path.join(ROOT, "src")
if SRC not in sys.path:
    sys.path.insert(0, SRC)
BIN = os.path.dirname(sys.executable)

BASE = 1 << 24  # every number is BASE + seq: 4-octet integers and OID sub-ids, fixed size
LINK_DOWN = "1.3.6.1.6.3.1.1.5.3"
SEQ_RE = re.compile(rb"1\.3\.6\.1\.2\.1\.2\.2\.1\.1\.(\d+)")
V3_USER = "bench"
V3_ENGINE = bytes.fromhex("8000000005") + b"bench-sender"
V3_AUTH = "bench-auth-pass"
V3_PRIV = "bench-priv-pass"


# --------------------------------------------------------------------------
# Traps


def encode_v2c(seq: int) -> bytes:
    from snmpwire import ber

    v = BASE + seq
    return ber.encode_trap_v2(b"public", v, [
        ("1.3.6.1.2.1.1.3.0", ber.TIMETICKS, v),
        ("1.3.6.1.6.3.1.1.4.1.0", ber.OBJECT_IDENTIFIER, LINK_DOWN),
        (f"1.3.6.1.2.1.2.2.1.1.{v}", ber.INTEGER, v),
        (f"1.3.6.1.2.1.2.2.1.7.{v}", ber.INTEGER, 2),
        (f"1.3.6.1.2.1.2.2.1.8.{v}", ber.INTEGER, 2),
    ])


def _b128(v: int) -> bytes:
    out = [v & 0x7F]
    v >>= 7
    while v:
        out.append(0x80 | (v & 0x7F))
        v >>= 7
    return bytes(reversed(out))


class V2cFactory:
    """Numbered v2c traps by patching a template (checked against the encoder)."""

    def __init__(self) -> None:
        t = encode_v2c(0)
        self.template = t
        ival = BASE.to_bytes(4, "big")
        oval = _b128(BASE)
        self.ints = [m.start() for m in re.finditer(re.escape(b"\x02\x04" + ival), t)]
        self.ints += [m.start() for m in re.finditer(re.escape(b"\x43\x04" + ival), t)]
        self.oids = [m.start() for m in re.finditer(re.escape(oval), t)]
        for s in (1, 777, 123_456, 9_999_999):
            assert self.make(s) == encode_v2c(s), s

    def make(self, seq: int) -> bytes:
        v = BASE + seq
        b = bytearray(self.template)
        iv = v.to_bytes(4, "big")
        for p in self.ints:
            b[p + 2:p + 6] = iv
        ov = _b128(v)
        for p in self.oids:
            b[p:p + 4] = ov
        return bytes(b)


class V3Factory:
    """Numbered SNMPv3 authPriv (SHA/AES-128) traps from one sender engine, pre-built."""

    def __init__(self, n: int) -> None:
        from snmpwire import ber
        from snmpwire.usm import UsmUser, encode_notification, localized_keys

        user = UsmUser(V3_USER, "SHA", V3_AUTH, "AES", V3_PRIV, engine_id=V3_ENGINE)
        keys = localized_keys(user, V3_ENGINE, {})
        self.datagrams = []
        for seq in range(n):
            v = BASE + seq
            self.datagrams.append(encode_notification(
                keys, engine_id=V3_ENGINE, user=V3_USER, trap_oid=LINK_DOWN,
                varbinds=[(f"1.3.6.1.2.1.2.2.1.1.{v}", ber.INTEGER, v),
                          (f"1.3.6.1.2.1.2.2.1.7.{v}", ber.INTEGER, 2),
                          (f"1.3.6.1.2.1.2.2.1.8.{v}", ber.INTEGER, 2)],
                uptime=v, boots=1, time=1000 + seq // 1000, msg_id=v, request_id=v))

    def make(self, seq: int) -> bytes:
        return self.datagrams[seq]


def blast(port: int, make, total: int, rate: int) -> dict:
    """Send ``total`` numbered traps at ``rate``/s to 127.0.0.1:port; what was achieved."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * 1024 * 1024)
    sock.connect(("127.0.0.1", port))
    send = sock.send
    perf = time.perf_counter
    sent = errors = 0
    start = perf()
    while sent < total:
        target = min(total, int((perf() - start) * rate) + 1)
        while sent < target:
            try:
                send(make(sent))
            except OSError:  # ENOBUFS: sent and lost
                errors += 1
            sent += 1
        time.sleep(0.001)
    elapsed = perf() - start
    sock.close()
    return {"sent": sent, "send_errors": errors, "blast_seconds": round(elapsed, 3),
            "blast_rate": round(sent / elapsed)}


def max_blast_rate(seconds: float = 2.0) -> int:
    """What the blaster reaches unpaced (to a port nobody reads: the kernel drops)."""
    f = V2cFactory()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    sock.connect(sink.getsockname())
    n = 0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        for _ in range(1000):
            try:
                sock.send(f.make(n))
            except OSError:
                pass
            n += 1
    sock.close()
    sink.close()
    return int(n / seconds)


# --------------------------------------------------------------------------
# Helpers


def free_udp_port() -> int:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def free_tcp_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def udp_socket_stats(port: int) -> dict | None:
    """drops and rx_queue of the UDP socket bound to ``port`` (/proc/net/udp{,6})."""
    for name in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            with open(name) as f:
                lines = f.readlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port:
                return {"drops": int(fields[-1]), "rx_queue": int(fields[4].split(":")[1], 16)}
    return None


def metrics(http_port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("#") or 'connector="traps"' not in line:
            continue
        name, _, value = line.rpartition(" ")
        name = name.split("{")[0].removeprefix("centaure_").removesuffix("_total")
        out[name] = float(value)
    return out


def count_seqs(seqs, total: int) -> dict:
    distinct = set()
    repeats = 0
    for s in seqs:
        if s in distinct:
            repeats += 1
        else:
            distinct.add(s)
    received = sum(1 for s in distinct if 0 <= s < total)
    return {"received": received, "repeats": repeats, "lost": total - received}


# --------------------------------------------------------------------------
# centaure-traps


def daemon_trial(args, make, total: int, rate: int, v3: bool = False) -> dict:
    import pika

    from centaure.shipped import example_path

    work = tempfile.mkdtemp(prefix="bench-traps-")
    prefix = f"bench{uuid.uuid4().hex[:10]}"
    port = free_udp_port()
    http_port = free_tcp_port()
    shutil.copy(example_path("traps.yaml"), os.path.join(work, "traps.yaml"))
    with open(os.path.join(work, "inventory.yaml"), "w") as f:
        f.write("devices:\n- {name: bench-device, address: 127.0.0.1, device_type: switch}\n")
    users = ""
    if v3:
        with open(os.path.join(work, "trap-users.yaml"), "w") as f:
            f.write(f"- {{user: {V3_USER}, engine_id: '{V3_ENGINE.hex()}', auth_protocol: SHA, "
                    f"auth_key: {V3_AUTH}, priv_protocol: AES, priv_key: {V3_PRIV}}}\n")
        users = "v3_users = trap-users.yaml\n"
    extra = "".join(f"{kv}\n" for kv in args.daemon_setting)
    with open(os.path.join(work, "settings.ini"), "w") as f:
        f.write(f"[bus]\nurl = {args.amqp}\nexchange_prefix = {prefix}\n"
                f"[buffer]\npath = {work}/var/buffer-{{connector}}.sqlite3\n"
                f"[connector]\nhttp_port = {http_port}\nnode = bench\n"
                f"[inventory]\npath = inventory.yaml\n"
                f"[traps]\nlisten = 127.0.0.1:{port}\nrate_limit = 0\ndedup_window = 0\n"
                f"definitions = traps.yaml\n{users}{extra}")
    conn = pika.BlockingConnection(pika.URLParameters(args.amqp))
    ch = conn.channel()
    queue = f"{prefix}.bench"
    ch.exchange_declare(exchange=f"{prefix}.event", exchange_type="topic", durable=True)
    ch.queue_declare(queue=queue, durable=True, arguments={"x-queue-mode": "lazy"})
    ch.queue_bind(queue=queue, exchange=f"{prefix}.event", routing_key="#")
    conn.close()
    log_path = os.path.join(work, "twistd.log")
    log = open(log_path, "w")
    proc = subprocess.Popen([f"{BIN}/twistd", "-n", "--pidfile=", "centaure-traps", "-c",
                             os.path.join(work, "settings.ini")], cwd=work, stdout=log,
                            stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONPATH=SRC))
    result: dict = {"receiver": "centaure-traps" + (" v3" if v3 else ""), "rate": rate,
                    "traps": total, "load": os.getloadavg()[0]}
    try:
        deadline = time.monotonic() + 60
        while "receiving traps on" not in open(log_path).read():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the daemon did not start:\n" + open(log_path).read()[-3000:])
            time.sleep(0.2)
        time.sleep(1.0)
        cpu0 = _cpu(proc.pid)
        result.update(blast(port, make, total, rate))
        blast_end = time.monotonic()
        # Wait until everything read is handled: nothing in the socket, nothing waiting
        # in the journal, the published count still.
        last, still_since = None, time.monotonic()
        limit = time.monotonic() + max(120, total / 2000)
        peak = 0
        while time.monotonic() < limit:
            m = metrics(http_port)
            peak = max(peak, m.get("journal_bytes", 0))
            sock = udp_socket_stats(port) or {"rx_queue": 0}
            now = (m.get("published_events", 0), m.get("datagrams_received", 0))
            done = m.get("datagrams_received", 0) >= m.get("datagrams_read", 0) - sum(
                v for k, v in m.items() if k.startswith("dropped_")) and sock["rx_queue"] == 0 \
                and m.get("journal_waiting", 0) == 0
            if now != last:
                last, still_since = now, time.monotonic()
            elif done and time.monotonic() - still_since > 2:
                break
            time.sleep(0.5)
        result["drain_seconds"] = round(still_since - blast_end, 1)
        result["cpu_seconds"] = round(_cpu(proc.pid) - cpu0, 1)
        result["kernel_drops"] = (udp_socket_stats(port) or {}).get("drops")
        m = metrics(http_port)
        result["daemon_drops"] = {k: int(v) for k, v in m.items()
                                  if k.startswith("dropped_") and v}
        for k in ("datagrams_read", "published_events", "publish_errors", "journal_retries"):
            result[k] = int(m.get(k, 0))
        result["journal_peak_bytes"] = int(peak)
        result["rss_mib"] = _rss_mib(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
    warnings = [line for line in open(log_path) if "traps dropped" in line]
    result["drop_log_lines"] = len(warnings)
    result.update(count_seqs(_drain_queue(args.amqp, queue), total))
    _delete(args.amqp, prefix, queue)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    else:
        result["workdir"] = work
    return result


def _cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def _drain_queue(url: str, queue: str):
    import pika

    conn = pika.BlockingConnection(pika.URLParameters(url))
    ch = conn.channel()
    ch.basic_qos(prefetch_count=5000)
    find = SEQ_RE.search
    for method, _props, body in ch.consume(queue, auto_ack=True, inactivity_timeout=3):
        if method is None:
            break
        m = find(body)
        if m:
            yield int(m[1]) - BASE
    ch.cancel()
    conn.close()


def _delete(url: str, prefix: str, queue: str) -> None:
    import pika

    conn = pika.BlockingConnection(pika.URLParameters(url))
    ch = conn.channel()
    ch.queue_delete(queue=queue)
    for t in ("event", "status", "dead"):
        try:
            ch.exchange_delete(exchange=f"{prefix}.{t}")
        except Exception:
            ch = conn.channel()
    conn.close()


# --------------------------------------------------------------------------
# snmptrapd


def ensure_snmptrapd() -> str:
    path = shutil.which("snmptrapd") or ("/usr/sbin/snmptrapd"
                                         if os.path.exists("/usr/sbin/snmptrapd") else None)
    if path:
        return path
    print("installing snmptrapd (apt-get install -y snmptrapd)", file=sys.stderr)
    subprocess.run(["apt-get", "install", "-y", "snmptrapd"], check=True,
                   stdout=subprocess.DEVNULL)
    return shutil.which("snmptrapd") or "/usr/sbin/snmptrapd"


def snmptrapd_trial(args, make, total: int, rate: int) -> dict:
    binary = ensure_snmptrapd()
    work = tempfile.mkdtemp(prefix="bench-snmptrapd-")
    conf = os.path.join(work, "snmptrapd.conf")
    with open(conf, "w") as f:
        f.write("disableAuthorization yes\n")
    log_path = os.path.join(work, "traps.log")
    port = free_udp_port()
    proc = subprocess.Popen([binary, "-f", "-On", "-n", "-Lf", log_path, "-C", "-c", conf,
                             "-M", "/dev/null", f"udp:127.0.0.1:{port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=dict(os.environ, MIBS=""))
    result: dict = {"receiver": "snmptrapd", "rate": rate, "traps": total,
                    "load": os.getloadavg()[0]}
    try:
        deadline = time.monotonic() + 20
        while udp_socket_stats(port) is None:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("snmptrapd did not start")
            time.sleep(0.1)
        time.sleep(0.5)
        cpu0 = _cpu(proc.pid)
        result.update(blast(port, make, total, rate))
        last, still_since = -1, time.monotonic()
        while time.monotonic() - still_since < 3:
            size = os.path.getsize(log_path) if os.path.exists(log_path) else 0
            if size != last:
                last, still_since = size, time.monotonic()
            time.sleep(0.3)
        result["cpu_seconds"] = round(_cpu(proc.pid) - cpu0, 1)
        result["kernel_drops"] = (udp_socket_stats(port) or {}).get("drops")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
    with open(log_path, "rb") as f:
        seqs = [int(m[1]) - BASE for m in SEQ_RE.finditer(f.read())]
    # Each trap names its ifIndex three times (ifIndex, ifAdminStatus, ifOperStatus OIDs
    # share the suffix) but the pattern matches the ifIndex column (.1.) only.
    result.update(count_seqs(seqs, total))
    shutil.rmtree(work, ignore_errors=True)
    return result


# --------------------------------------------------------------------------


def show(r: dict) -> None:
    keys = ("receiver", "load", "rate", "traps", "sent", "blast_rate", "kernel_drops", "daemon_drops",
            "received", "lost", "repeats", "drain_seconds", "cpu_seconds", "journal_peak_bytes",
            "rss_mib", "drop_log_lines")
    print("  " + ", ".join(f"{k}={r[k]}" for k in keys if k in r), flush=True)


def median_row(rows: list[dict]) -> dict:
    out = dict(rows[0])
    for k in ("lost", "kernel_drops", "received", "repeats", "blast_rate", "cpu_seconds",
              "drain_seconds", "journal_peak_bytes", "rss_mib"):
        vals = [r[k] for r in rows if isinstance(r.get(k), (int, float))]
        if vals:
            out[k] = statistics.median(vals)
    out["lost_each"] = [r.get("lost") for r in rows]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--amqp", default="amqp://guest:guest@127.0.0.1:5672/%2F")
    ap.add_argument("--rates", default="10000,20000,30000,50000")
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--long-rate", type=int, default=20000)
    ap.add_argument("--long-seconds", type=float, default=60)
    ap.add_argument("--no-long", action="store_true")
    ap.add_argument("--burst", type=int, default=1_000_000)
    ap.add_argument("--burst-rate", type=int, default=50000)
    ap.add_argument("--no-burst", action="store_true")
    ap.add_argument("--v3-rate", type=int, default=5000)
    ap.add_argument("--v3-seconds", type=float, default=60)
    ap.add_argument("--no-v3", action="store_true")
    ap.add_argument("--no-snmptrapd", action="store_true")
    ap.add_argument("--no-daemon", action="store_true")
    ap.add_argument("--daemon-setting", action="append", default=[],
                    help="an extra [traps] line for the daemon, e.g. 'journal_size = 0'")
    ap.add_argument("--keep", action="store_true", help="keep the daemon's folders")
    ap.add_argument("--json", help="write every trial to this file")
    args = ap.parse_args()

    f = V2cFactory()
    print(f"blaster: 136-byte v2c traps, unpaced {max_blast_rate():,}/s on this machine",
          flush=True)
    trials: list[dict] = []
    summary: list[tuple[str, dict]] = []

    def run(label, fn, *a):
        rows = []
        for i in range(args.runs if label.startswith("rate") else 1):
            r = fn(args, *a)
            r["set"] = label
            show(r)
            rows.append(r)
            trials.append(r)
        summary.append((label, median_row(rows)))

    for rate in [int(r) for r in args.rates.split(",") if r]:
        total = int(rate * args.seconds)
        print(f"{rate:,}/s for {args.seconds:g} s ({total:,} traps), {args.runs} runs", flush=True)
        if not args.no_daemon:
            run(f"rate {rate} daemon", daemon_trial, f.make, total, rate)
        if not args.no_snmptrapd:
            run(f"rate {rate} snmptrapd", snmptrapd_trial, f.make, total, rate)
    if not args.no_long:
        total = int(args.long_rate * args.long_seconds)
        print(f"long: {args.long_rate:,}/s for {args.long_seconds:g} s ({total:,} traps)", flush=True)
        if not args.no_daemon:
            run("long daemon", daemon_trial, f.make, total, args.long_rate)
        if not args.no_snmptrapd:
            run("long snmptrapd", snmptrapd_trial, f.make, total, args.long_rate)
    if not args.no_burst and not args.no_daemon:
        print(f"burst: {args.burst:,} traps at {args.burst_rate:,}/s", flush=True)
        run("burst daemon", daemon_trial, f.make, args.burst, args.burst_rate)
        if not args.no_snmptrapd:
            run("burst snmptrapd", snmptrapd_trial, f.make, args.burst, args.burst_rate)
    if not args.no_v3 and not args.no_daemon:
        total = int(args.v3_rate * args.v3_seconds)
        print(f"v3 authPriv SHA/AES: {args.v3_rate:,}/s for {args.v3_seconds:g} s "
              f"({total:,} traps; building them...)", flush=True)
        v3 = V3Factory(total)
        run("v3 daemon", lambda a, *x: daemon_trial(a, *x, v3=True), v3.make, total, args.v3_rate)

    print("\nsummary (median of the runs; lost = sent - distinct numbers received)")
    print("| set | sent | kernel drops | daemon drops | lost | repeats | drain s | CPU s | "
          "journal peak MiB |")
    print("| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |")
    for label, r in summary:
        print(f"| {label} | {r.get('sent', 0):,} | {r.get('kernel_drops')} | "
              f"{r.get('daemon_drops', '-')} | {r.get('lost')} {r.get('lost_each')} | "
              f"{r.get('repeats')} | {r.get('drain_seconds', '-')} | {r.get('cpu_seconds')} | "
              f"{round(r.get('journal_peak_bytes', 0) / 2**20, 1) if 'journal_peak_bytes' in r else '-'} |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(trials, fh, indent=1)


if __name__ == "__main__":
    main()
