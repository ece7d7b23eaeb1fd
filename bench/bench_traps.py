#!/usr/bin/env python
"""Benchmark the trap receiver: the highest v2c (or v3) trap rate with zero loss.

Goals of the product: >= 20,000 v2c traps/s and >= 5,000 SNMPv3 authPriv
traps/s with zero loss on one core.

What runs
    A receiver PROCESS (this script with ``--role receiver``): a
    ``connector_traps.receiver.TrapReceiver`` on 127.0.0.1 under Twisted's
    asyncio reactor (as the product runs; ``--reactor epoll`` to compare),
    the product's defaults (16 MiB receive buffer asked, queue of 100,000,
    slices of 2,000 datagrams / 20 ms), and a sink that does what the
    service's publishing costs: it builds a ``connector.messages.Event``
    (varbinds through ``convert.varbind_to_json``) and encodes it with
    ``messages.encode`` (no bus, no classification).
    The SENDER is this process: it replays pre-encoded SNMPv2-Trap datagrams
    (``ber.encode_trap_v2``: 6 varbinds -- sysUpTime.0, snmpTrapOID.0
    linkDown, ifIndex, ifDescr, ifAdminStatus, ifOperStatus; 1,000 variants
    with different values and request-ids, ~110 bytes) at a fixed rate
    (paced every 0.5 ms) for --seconds on loopback.

What is counted
    sent (sender), datagrams the receiver saw, events built, the receiver's
    drop counters (``dropped_queue_full``, malformed...), the kernel's drop
    counter of the receiving socket (/proc/net/udp, last column), the
    receiver's CPU seconds (``time.process_time``) and the lag: how long
    after the last datagram was sent the last event was built.

    Each rate is run --runs times (3) with a fresh receiver; a rate is
    "zero loss" when the median loss is 0 (the figures of every run are
    printed).  Rates default to 5k, 10k, 20k, 30k, 40k traps/s.

--v3: SNMPv3 authPriv (SHA/AES-128)
    The sender pre-encodes 1,000 SNMPv3 SNMPv2-Traps with
    ``usm.encode_notification`` (the same 6 varbinds as the v2c ones, varying
    values, msgID and request-id, a fresh salt each) from --engines (100)
    sender engine IDs, all with the user name "bench" and one password (for
    both authentication and privacy).  The receiver process builds the
    matching ``UserTable`` (one trap user per sender engine ID; keys derived
    with ``UserTable.warm`` before it reports ready) and a ``V3Receiver``
    with the service's defaults, and passes ``v3_handler`` to the
    ``TrapReceiver`` as ``connector_traps.service`` does (``handle``, refusal
    reasons counted as ``v3_<reason>``, ``(response, trap)`` returned); the
    sink is the v2c one (Event built and encoded).  The V3Receiver's own
    counters are checked: every datagram must be ``accepted``.  Rates
    default to 2k, 5k, 8k, 10k traps/s, and a summary table ends the output.

Usage
    .venv/bin/python bench/bench_traps.py [--rates 5000,10000,20000,30000]
        [--seconds 5] [--runs 3] [--reactor asyncio|epoll]
        [--v3 [--engines 100]]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

SYS_UPTIME_0 = "1.3.6.1.2.1.1.3.0"
SNMP_TRAP_OID_0 = "1.3.6.1.6.3.1.1.4.1.0"
LINK_DOWN = "1.3.6.1.6.3.1.1.5.3"
IF_ENTRY = "1.3.6.1.2.1.2.2.1"


def build_datagrams(n: int = 1000) -> list[bytes]:
    """``n`` v2c linkDown traps with 6 varbinds, values varying."""
    from snmpwire import ber

    out = []
    for i in range(n):
        idx = 1 + i % 48
        out.append(ber.encode_trap_v2(b"public", 1000 + i, [
            (SYS_UPTIME_0, ber.TIMETICKS, 123456 + i * 7),
            (SNMP_TRAP_OID_0, ber.OBJECT_IDENTIFIER, LINK_DOWN),
            (f"{IF_ENTRY}.1.{idx}", ber.INTEGER, idx),
            (f"{IF_ENTRY}.2.{idx}", ber.OCTET_STRING, f"GigabitEthernet0/{idx}".encode()),
            (f"{IF_ENTRY}.7.{idx}", ber.INTEGER, 1),
            (f"{IF_ENTRY}.8.{idx}", ber.INTEGER, 2),
        ]))
    return out


V3_USER = "bench"
V3_PASSWORD = "bench-v3-password"
V3_RECEIVER_ENGINE = bytes.fromhex("8000000005") + b"centaure-rx"


def v3_engine_ids(n: int) -> list[bytes]:
    """``n`` sender engine IDs (RFC 3411 format 5, octets)."""
    return [bytes.fromhex("8000000005") + b"bench-tx-" + i.to_bytes(2, "big") for i in range(n)]


def v3_users(engines: int):
    """One authPriv SHA/AES trap user "bench" per sender engine ID, one password."""
    from snmpwire.usm import UsmUser

    return [UsmUser(V3_USER, "SHA", V3_PASSWORD, "AES", V3_PASSWORD, engine_id=e)
            for e in v3_engine_ids(engines)]


def build_v3_datagrams(n: int = 1000, engines: int = 100) -> list[bytes]:
    """``n`` SNMPv3 authPriv (SHA/AES) linkDown traps, 6 varbinds, values varying,
    from ``engines`` sender engine IDs in turn."""
    from snmpwire import ber
    from snmpwire.usm import encode_notification, localized_keys

    users = v3_users(engines)
    ku: dict = {}
    keys = [localized_keys(u, u.engine_id, ku) for u in users]
    out = []
    for i in range(n):
        idx = 1 + i % 48
        k = i % engines
        out.append(encode_notification(
            keys[k], engine_id=users[k].engine_id, user=V3_USER, trap_oid=LINK_DOWN,
            varbinds=[
                (f"{IF_ENTRY}.1.{idx}", ber.INTEGER, idx),
                (f"{IF_ENTRY}.2.{idx}", ber.OCTET_STRING, f"GigabitEthernet0/{idx}".encode()),
                (f"{IF_ENTRY}.7.{idx}", ber.INTEGER, 1),
                (f"{IF_ENTRY}.8.{idx}", ber.INTEGER, 2),
            ],
            uptime=123456 + i * 7, boots=1, time=1000 + i, msg_id=5000 + i,
            request_id=1000 + i))
    return out


def kernel_drops(port: int) -> dict[str, int] | None:
    """rx_queue and drops of the UDP socket bound to ``port`` (/proc/net/udp{,6})."""
    for name in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            with open(name) as f:
                lines = f.readlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local = fields[1]
            if int(local.rsplit(":", 1)[1], 16) == port:
                rx_queue = int(fields[4].split(":")[1], 16)
                return {"drops": int(fields[-1]), "rx_queue": rx_queue}
    return None


# --------------------------------------------------------------------------
# The receiver process


def run_receiver(args: argparse.Namespace) -> None:
    if args.reactor == "asyncio":
        from twisted.internet import asyncioreactor

        asyncioreactor.install()
    else:
        from twisted.internet import epollreactor

        epollreactor.install()
    from twisted.internet import reactor, task

    from connector import messages
    from connector.metrics import Counters
    from connector_traps.convert import varbind_to_json
    from connector_traps.receiver import listen

    counters = Counters("traps")
    state = {"events": 0, "bytes": 0, "last": 0.0, "first": 0.0}
    Event, Varbind, encode = messages.Event, messages.Varbind, messages.encode

    def sink(trap) -> None:
        event = Event(
            source="traps@bench", host=trap.source[0], address=trap.agent_address,
            snmp_version=trap.version, trap_oid=trap.trap_oid, name="linkDown",
            severity="major",
            varbinds=[Varbind(oid=o, type=t, value=v)
                      for o, t, v in (varbind_to_json(*vb) for vb in trap.varbinds)],
            action="raise", alarm="linkDown", key="1")
        state["bytes"] += len(encode(event))
        state["events"] += 1
        now = time.time()
        if not state["first"]:
            state["first"] = now
        state["last"] = now

    v3 = None
    extra = {}
    warm = 0.0
    if args.v3:
        from connector_traps.usm import UserTable, V3Receiver

        table = UserTable(v3_users(args.engines))
        t0 = time.perf_counter()
        table.warm(V3_RECEIVER_ENGINE)
        warm = time.perf_counter() - t0
        # The same 1,000 datagrams go round: without the time window and the replay
        # memory, which would refuse the second round (the daemon bench keeps them).
        v3 = V3Receiver(table, V3_RECEIVER_ENGINE, trap_time_window=None, replay_entries=0)

        def v3_handler(data: bytes, source: tuple[str, int]):
            # As connector_traps.service.TrapService._v3.
            result = v3.handle(data, source)
            if result.error:
                counters.inc(f"v3_{result.error}")
            return (result.response, result.trap)

        extra["v3_handler"] = v3_handler

    lport, receiver = listen(reactor, "127.0.0.1", 0, sink, counters,
                             queue_size=args.queue_size, recv_buffer=args.recv_buffer, **extra)
    port = lport.getHost().port
    cpu0 = time.process_time()
    print(json.dumps({"port": port, "recv_buffer": receiver.recv_buffer_granted,
                      "warm": warm}), flush=True)
    started = time.time()

    def check() -> None:
        seen = counters.get("datagrams_received") + counters.get("dropped_queue_full")
        idle = time.time() - max(state["last"], started)
        if (seen and idle > 1.0 and not receiver.queue) or time.time() - started > args.max_wait:
            report = {
                "datagrams": counters.get("datagrams_received"),
                "events": state["events"],
                "bytes": state["bytes"],
                "cpu": time.process_time() - cpu0,
                "first": state["first"],
                "last": state["last"],
                "kernel": kernel_drops(port),
                "counters": counters.snapshot(),
                "high_water": receiver.high_water,
                "v3": {k: n for k, n in v3.counters.items() if n} if v3 is not None else None,
            }
            print(json.dumps(report), flush=True)
            loop.stop()
            reactor.stop()

    loop = task.LoopingCall(check)
    loop.start(0.2, now=False)
    reactor.run()


# --------------------------------------------------------------------------
# The sender (this process)


def send(port: int, datagrams: list[bytes], rate: int, seconds: float) -> tuple[int, float, float]:
    """Send at ``rate`` per second for ``seconds``; (sent, t_first, t_last)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * 1024 * 1024)
    sock.connect(("127.0.0.1", port))
    total = int(rate * seconds)
    n = len(datagrams)
    sent = 0
    errors = 0
    sendd = sock.send
    perf = time.perf_counter
    t_first = time.time()
    start = perf()
    while sent < total:
        target = min(total, int((perf() - start) * rate) + 1)
        while sent < target:
            try:
                sendd(datagrams[sent % n])
            except OSError:  # ENOBUFS: count as sent and lost
                errors += 1
            sent += 1
        time.sleep(0.0005)
    t_last = time.time()
    sock.close()
    if errors:
        print(f"  sender: {errors} send errors", file=sys.stderr)
    return sent, t_first, t_last


def trial(args: argparse.Namespace, rate: int, datagrams: list[bytes]) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--role", "receiver",
           "--reactor", args.reactor, "--queue-size", str(args.queue_size),
           "--recv-buffer", str(args.recv_buffer), "--max-wait", str(args.seconds + 60)]
    if args.v3:
        cmd += ["--v3", "--engines", str(args.engines)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        hello = json.loads(proc.stdout.readline())
        time.sleep(0.3)
        sent, t_first, t_last = send(hello["port"], datagrams, rate, args.seconds)
        report = json.loads(proc.stdout.readline())
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    c = report["counters"]
    lost = sent - report["events"]
    return {
        "rate": rate, "sent": sent, "send_seconds": t_last - t_first,
        "received": report["datagrams"], "events": report["events"], "lost": lost,
        "loss_pct": 100.0 * lost / sent if sent else 0.0,
        "queue_full": int(c.get("dropped_queue_full", 0)),
        "kernel_drops": (report["kernel"] or {}).get("drops"),
        "cpu": report["cpu"], "cpu_us_per_trap": 1e6 * report["cpu"] / max(1, report["events"]),
        "lag": max(0.0, report["last"] - t_last), "high_water": report["high_water"],
        "recv_buffer": hello["recv_buffer"], "bytes": report["bytes"],
        "warm": hello.get("warm", 0.0), "v3": report.get("v3"),
        "other": {k: v for k, v in c.items() if k not in (
            "datagrams_received", "traps_delivered", "queue_depth", "queue_high_water",
            "recv_buffer_bytes", "dropped_queue_full")},
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--role", choices=["sender", "receiver"], default="sender",
                   help=argparse.SUPPRESS)
    p.add_argument("--rates", default=None,
                   help="comma-separated traps/s to try (default: 5000,10000,20000,30000,40000; "
                        "with --v3: 2000,5000,8000,10000)")
    p.add_argument("--seconds", type=float, default=5.0, help="sending time per run")
    p.add_argument("--runs", type=int, default=3, help="runs per rate (median)")
    p.add_argument("--reactor", choices=["asyncio", "epoll"], default="asyncio")
    p.add_argument("--queue-size", type=int, default=100_000)
    p.add_argument("--recv-buffer", type=int, default=16 * 1024 * 1024)
    p.add_argument("--max-wait", type=float, default=120.0, help=argparse.SUPPRESS)
    p.add_argument("--json", action="store_true", help="also print every run as JSON")
    p.add_argument("--v3", action="store_true",
                   help="SNMPv3 authPriv (SHA/AES) traps through V3Receiver instead of v2c")
    p.add_argument("--engines", type=int, default=100,
                   help="with --v3: sender engine IDs (one trap user each)")
    args = p.parse_args()
    if args.rates is None:
        args.rates = "2000,5000,8000,10000" if args.v3 else "5000,10000,20000,30000,40000"
    if args.role == "receiver":
        run_receiver(args)
        return
    if args.v3:
        main_v3(args)
        return

    datagrams = build_datagrams()
    sizes = [len(d) for d in datagrams]
    print(f"trap receiver benchmark: {len(datagrams)} pre-encoded v2c traps, 6 varbinds, "
          f"{min(sizes)}-{max(sizes)} bytes; {args.seconds:g} s per run, {args.runs} runs "
          f"per rate, reactor {args.reactor}, queue {args.queue_size}, "
          f"receive buffer asked {args.recv_buffer}; {os.cpu_count()} CPUs")
    best = None
    for rate in [int(r) for r in args.rates.split(",")]:
        runs = [trial(args, rate, datagrams) for _ in range(args.runs)]
        if args.json:
            for r in runs:
                print(json.dumps(r))
        med = lambda key: statistics.median(r[key] for r in runs)  # noqa: E731
        ok = med("lost") == 0
        if ok:
            best = rate
        print(f"\n{rate:>6} traps/s: sent {med('sent'):.0f}, events median {med('events'):.0f}, "
              f"lost median {med('lost'):.0f} ({med('loss_pct'):.3f}%) "
              f"-> {'ZERO LOSS' if ok else 'LOSS'}")
        print(f"        receive buffer granted {runs[0]['recv_buffer']} bytes; "
              f"receiver CPU {med('cpu'):.2f} s median = {med('cpu_us_per_trap'):.1f} us/trap "
              f"({med('cpu') / args.seconds * 100:.0f}% of a core while sending)")
        for i, r in enumerate(runs, 1):
            print(f"        run {i}: sent {r['sent']} in {r['send_seconds']:.2f} s, "
                  f"received {r['received']:.0f}, events {r['events']}, lost {r['lost']}, "
                  f"kernel drops {r['kernel_drops']}, queue-full drops {r['queue_full']}, "
                  f"queue high water {r['high_water']}, lag {r['lag'] * 1000:.0f} ms, "
                  f"cpu {r['cpu']:.2f} s"
                  + (f", other {r['other']}" if r["other"] else ""))
    print(f"\nhighest rate with zero loss (median of {args.runs}): "
          f"{best if best is not None else 'none'} traps/s")


def main_v3(args: argparse.Namespace) -> None:
    t0 = time.perf_counter()
    datagrams = build_v3_datagrams(engines=args.engines)
    built = time.perf_counter() - t0
    sizes = [len(d) for d in datagrams]
    print(f"trap receiver benchmark, SNMPv3 authPriv SHA/AES-128: {len(datagrams)} pre-encoded "
          f"SNMPv2-Traps (user {V3_USER!r}, {args.engines} sender engine IDs, one password), "
          f"6 varbinds, {min(sizes)}-{max(sizes)} bytes (encoded in {built:.2f} s); "
          f"{args.seconds:g} s per run, {args.runs} runs per rate, reactor {args.reactor}, "
          f"queue {args.queue_size}, receive buffer asked {args.recv_buffer}; "
          f"{os.cpu_count()} CPUs; load average at start {os.getloadavg()[0]:.2f}")
    best = None
    rows = []
    for rate in [int(r) for r in args.rates.split(",")]:
        runs = [trial(args, rate, datagrams) for _ in range(args.runs)]
        if args.json:
            for r in runs:
                print(json.dumps(r))
        med = lambda key: statistics.median(r[key] for r in runs)  # noqa: E731
        ok = med("lost") == 0
        if ok and (best is None or rate > best):
            best = rate
        not_accepted = [r for r in runs
                        if (r["v3"] or {}).get("accepted", 0) != r["received"]
                        or set(r["v3"] or {}) - {"accepted"}]
        print(f"\n{rate:>6} traps/s: sent {med('sent'):.0f}, events median {med('events'):.0f}, "
              f"lost median {med('lost'):.0f} ({med('loss_pct'):.3f}%) "
              f"-> {'ZERO LOSS' if ok else 'LOSS'}")
        print(f"        receive buffer granted {runs[0]['recv_buffer']} bytes; keys for "
              f"{args.engines} users derived in {runs[0]['warm'] * 1000:.0f} ms at start; "
              f"receiver CPU {med('cpu'):.2f} s median = {med('cpu_us_per_trap'):.1f} us/trap "
              f"({med('cpu') / args.seconds * 100:.0f}% of a core while sending)")
        for i, r in enumerate(runs, 1):
            print(f"        run {i}: sent {r['sent']} in {r['send_seconds']:.2f} s, "
                  f"received {r['received']:.0f}, events {r['events']}, lost {r['lost']}, "
                  f"kernel drops {r['kernel_drops']}, queue-full drops {r['queue_full']}, "
                  f"queue high water {r['high_water']}, lag {r['lag'] * 1000:.0f} ms, "
                  f"cpu {r['cpu']:.2f} s, V3Receiver {r['v3']}"
                  + (f", other {r['other']}" if r["other"] else ""))
        if not_accepted:
            print(f"        WARNING: {len(not_accepted)} run(s) with datagrams not accepted "
                  f"by the V3Receiver (see its counters above)")
        rows.append({
            "rate": rate, "sent": med("sent"), "events": med("events"), "lost": med("lost"),
            "loss_pct": med("loss_pct"),
            "kernel": "/".join(str(r["kernel_drops"]) for r in runs),
            "queue_full": "/".join(str(r["queue_full"]) for r in runs),
            "high_water": med("high_water"), "high_water_max": max(r["high_water"] for r in runs),
            "us": med("cpu_us_per_trap"), "core": med("cpu") / args.seconds * 100,
            "lag": med("lag") * 1000, "ok": ok and not not_accepted,
        })

    print(f"\nsummary: SNMPv3 authPriv SHA/AES-128 traps, {args.seconds:g} s per run, "
          f"median of {args.runs} runs (kernel and queue-full drops: every run)")
    head = (f"{'rate/s':>7} {'sent':>7} {'events':>7} {'lost':>6} {'loss %':>7} "
            f"{'kernel drops':>14} {'queue-full':>12} {'q high water':>13} "
            f"{'us/trap':>8} {'core %':>7} {'lag ms':>7}  result")
    print(head)
    print("-" * len(head))
    for w in rows:
        print(f"{w['rate']:>7} {w['sent']:>7.0f} {w['events']:>7.0f} {w['lost']:>6.0f} "
              f"{w['loss_pct']:>7.3f} {w['kernel']:>14} {w['queue_full']:>12} "
              f"{w['high_water']:>6.0f} ({w['high_water_max']:>4}) "
              f"{w['us']:>8.1f} {w['core']:>7.0f} {w['lag']:>7.0f}  "
              f"{'ZERO LOSS' if w['ok'] else 'LOSS'}")
    print(f"\nhighest v3 authPriv rate with zero loss (median of {args.runs}): "
          f"{best if best is not None else 'none'} traps/s (goal: >= 5,000/s); "
          f"load average at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
