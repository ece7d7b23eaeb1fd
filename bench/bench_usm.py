#!/usr/bin/env python
"""Benchmark connector_traps.usm: SNMPv3 traps through V3Receiver.handle.

Pre-encodes --messages SNMPv3 SNMPv2-Traps (sysUpTime.0, snmpTrapOID.0 and 5
varbinds, every message with its own msgID, request-id and salt) from
--engines sender engine IDs sharing one user name, with our own encoder,
then measures V3Receiver.handle (parse, HMAC verify, decrypt, decode, Trap)
per CPU-second (time.process_time), median of --runs (default 3).  Keys are
localized before the timing (the receiver caches them; the cold derivation
cost is printed separately).  Variants: SHA/AES (the headline),
SHA-512/AES-256, MD5/DES, SHA-256 authNoPriv, noAuthNoPriv, and SHA/AES
InformRequests (each answered with an encrypted, authenticated Response).

Usage: .venv/bin/python bench/bench_usm.py [--messages 5000] [--engines 100] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from snmpwire import ber  # noqa: E402
from connector_traps.usm import UserTable, V3Receiver  # noqa: E402
from snmpwire.usm import UsmUser, encode_notification, localized_keys  # noqa: E402

OURS = bytes.fromhex("80001f8804") + b"bench-rx"
VARBINDS = [
    ("1.3.6.1.2.1.2.2.1.1.12", ber.INTEGER, 12),
    ("1.3.6.1.2.1.2.2.1.2.12", ber.OCTET_STRING, b"GigabitEthernet0/12"),
    ("1.3.6.1.2.1.2.2.1.7.12", ber.INTEGER, 1),
    ("1.3.6.1.2.1.2.2.1.8.12", ber.INTEGER, 2),
    ("1.3.6.1.2.1.31.1.1.1.18.12", ber.OCTET_STRING, b"uplink to core-2"),
]
TRAP_OID = "1.3.6.1.6.3.1.1.5.3"  # linkDown

VARIANTS = [
    ("SHA/AES traps", "SHA", "AES", False),
    ("SHA-512/AES-256 traps", "SHA512", "AES256", False),
    ("MD5/DES traps", "MD5", "DES", False),
    ("SHA-256 authNoPriv traps", "SHA256", "none", False),
    ("noAuthNoPriv traps", "none", "none", False),
    ("SHA/AES informs (+Response)", "SHA", "AES", True),
]


def build(auth: str, priv: str, inform: bool, n: int, engines: int):
    def mk(eid: bytes | None) -> UsmUser:
        return UsmUser("bench", auth, "bench-auth-pass" if auth != "none" else None, priv,
                       "bench-priv-pass" if priv != "none" else None, eid)

    if inform:
        users = [mk(None)]
        eids = [OURS]
    else:
        eids = [bytes.fromhex("800007e580") + i.to_bytes(4, "big") for i in range(engines)]
        users = [mk(e) for e in eids]
    table = UserTable(users)
    t0 = time.perf_counter()
    table.warm(OURS)
    warm = time.perf_counter() - t0
    keys = {e: localized_keys(users[0] if inform else users[i], e) for i, e in enumerate(eids)}
    msgs = []
    for i in range(n):
        e = eids[i % len(eids)]
        msgs.append(encode_notification(
            keys[e], engine_id=e, user="bench", trap_oid=TRAP_OID, varbinds=VARBINDS,
            uptime=100 * i, inform=inform, boots=1, time=0, msg_id=i + 1, request_id=i + 1))
    return table, msgs, warm


def measure(table: UserTable, msgs: list[bytes], runs: int) -> tuple[float, dict]:
    rates = []
    counters: dict = {}
    for _ in range(runs):
        rx = V3Receiver(table, OURS)
        src = ("192.0.2.1", 162)
        handle = rx.handle
        t0 = time.process_time()
        for m in msgs:
            handle(m, src)
        dt = time.process_time() - t0
        rates.append(len(msgs) / dt)
        counters = rx.counters
    return statistics.median(rates), counters


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--messages", type=int, default=5000)
    ap.add_argument("--engines", type=int, default=100)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    print(f"{args.messages} messages, {args.engines} sender engines, median of {args.runs} runs (per CPU-second)")
    for label, auth, priv, inform in VARIANTS:
        table, msgs, warm = build(auth, priv, inform, args.messages, args.engines)
        rate, counters = measure(table, msgs, args.runs)
        ok = counters["accepted"] == len(msgs)
        size = sum(map(len, msgs)) // len(msgs)
        print(f"  {label:30s} {rate:10,.0f} msg/s  ({1e6 / rate:6.1f} us/msg, {size} B, "
              f"keys for {len(table)} users in {warm * 1000:.0f} ms){'' if ok else '  NOT ALL ACCEPTED: ' + str(counters)}")


if __name__ == "__main__":
    main()
