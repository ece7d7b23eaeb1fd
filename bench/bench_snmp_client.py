#!/usr/bin/env python
"""Benchmark connector_snmp.client (v2c) against net-snmp's C tools and pysnmp.

Starts --agents net-snmp snmpd processes on loopback and polls --devices
logical devices spread over them (device i uses agent i % agents).  Polling a
device = GET of the 7 system scalars (sysDescr.0 .. sysServices.0) + a walk
of the 22 ifTable columns (1.3.6.1.2.1.2.2.1.1-22) together with GETBULK.
All devices of a cycle are polled concurrently; --cycles cycles per run,
after one warm-up cycle.

Reported, median of --runs runs (default 3):
  ours      varbinds returned to the caller per CPU-second of THIS process
            (time.process_time: user+sys of this process only, the agents
            excluded), wall time per cycle, and what the wire carried
            (GETBULK overshoot past the table end is received but not
            returned);
  C         net-snmp `snmpget` (the scalars) + `snmpbulkwalk` (ifTable) run
            as processes against one agent, --c-repeats times: varbinds per
            CPU-second of those processes (getrusage of the children, process
            start included: it dominates for a small table) and wall time;
  pysnmp    pysnmp 7 hlapi `get_cmd` + `bulk_walk_cmd` (lookupMib=False) for
            one device, repeated --pysnmp-repeats times, varbinds per
            CPU-second of this process;
and the ratios ours/C and ours/pysnmp.

Usage: .venv/bin/python bench/bench_snmp_client.py [--agents 4] [--devices 200]
       [--cycles 3] [--runs 3] [--max-repetitions 10] [--in-flight 4]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from twisted.internet import asyncioreactor  # noqa: E402

asyncioreactor.install()

import asyncio  # noqa: E402

from twisted.internet import defer, task  # noqa: E402

from connector_snmp.client import SnmpClient  # noqa: E402
from connector_snmp.model import SnmpTarget  # noqa: E402
from tests.snmp.snmpd import start_snmpd  # noqa: E402

SCALARS = [f"1.3.6.1.2.1.1.{i}.0" for i in range(1, 8)]
IF_TABLE = "1.3.6.1.2.1.2.2"
IF_COLUMNS = [f"{IF_TABLE}.1.{c}" for c in range(1, 23)]


async def poll(client: SnmpClient, target: SnmpTarget) -> int:
    scalars = await client.get(target, SCALARS)
    table = await client.walk(target, IF_COLUMNS)
    return len(scalars) + sum(len(rows) for rows in table.values())


async def cycle(client: SnmpClient, targets: list[SnmpTarget]) -> tuple[int, float, float]:
    """(varbinds, wall s, CPU s) of one concurrent poll of every target."""
    c0, w0 = time.process_time(), time.perf_counter()
    counts = await defer.gatherResults(
        [defer.ensureDeferred(poll(client, t)) for t in targets], consumeErrors=True)
    return sum(counts), time.perf_counter() - w0, time.process_time() - c0


def c_tools(agent, max_rep: int, repeats: int) -> tuple[int, float, float]:
    """(varbinds, wall s, children CPU s) of snmpget + snmpbulkwalk, repeated."""
    base = ["-v2c", "-c", "public", "-On", "-Oq", "-t", "2", "-r", "1"]
    peer = f"127.0.0.1:{agent.port}"
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    w0 = time.perf_counter()
    n = 0
    for _ in range(repeats):
        for cmd in (["snmpget", *base, peer, *SCALARS],
                    ["snmpbulkwalk", *base, f"-Cr{max_rep}", peer, IF_TABLE]):
            out = subprocess.run(cmd, capture_output=True, text=True, env=agent.env, check=True)
            n += sum(1 for line in out.stdout.splitlines() if line.startswith("."))
    wall = time.perf_counter() - w0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    return n, wall, cpu


async def pysnmp_poll(agent, max_rep: int, repeats: int) -> tuple[int, float, float]:
    """(varbinds, wall s, CPU s) of pysnmp hlapi polls of one device (asyncio)."""
    from pysnmp.hlapi.v3arch.asyncio import (CommunityData, ContextData, ObjectIdentity,
                                             ObjectType, SnmpEngine, UdpTransportTarget,
                                             bulk_walk_cmd, get_cmd)

    engine = SnmpEngine()
    transport = await UdpTransportTarget.create(("127.0.0.1", agent.port), timeout=2, retries=1)
    auth = CommunityData("public")
    ctx = ContextData()

    async def one() -> int:
        ei, es, ex, vbs = await get_cmd(engine, auth, transport, ctx,
                                        *[ObjectType(ObjectIdentity(o)) for o in SCALARS],
                                        lookupMib=False)
        assert not ei and not es, (ei, es)
        n = len(vbs)
        async for ei, es, ex, vbs in bulk_walk_cmd(
                engine, auth, transport, ctx, 0, max_rep, ObjectType(ObjectIdentity(IF_TABLE)),
                lookupMib=False, lexicographicMode=False):
            assert not ei and not es, (ei, es)
            n += len(vbs)
        return n

    await one()  # warm-up: MIB loading, engine start
    c0, w0 = time.process_time(), time.perf_counter()
    n = 0
    for _ in range(repeats):
        n += await one()
    result = n, time.perf_counter() - w0, time.process_time() - c0
    engine.close_dispatcher()
    return result


async def main(reactor, args) -> None:
    tmp = tempfile.mkdtemp(prefix="bench-snmp-")
    agents = [start_snmpd(os.path.join(tmp, f"agent{i}"), v3_users=())
              for i in range(args.agents)]
    client = SnmpClient(reactor, max_in_flight_per_agent=args.in_flight)
    client.start()
    try:
        targets = [SnmpTarget("127.0.0.1", agents[i % len(agents)].port, "v2c", timeout=2.0,
                              retries=1, max_repetitions=args.max_repetitions)
                   for i in range(args.devices)]
        print(f"{args.agents} snmpd agents, {args.devices} devices, {args.cycles} cycles/run, "
              f"max-repetitions {args.max_repetitions}, in-flight/agent {args.in_flight}, "
              f"SO_RCVBUF {client.rcvbuf}")
        await cycle(client, targets)  # warm-up (also warms the agents' caches)
        ours_rate, ours_wall, wire_ratio = [], [], []
        for run in range(args.runs):
            before = dict(client.counters)
            n = wall = cpu = 0.0
            for _ in range(args.cycles):
                vb, w, c = await cycle(client, targets)
                n += vb
                wall += w
                cpu += c
            wire = client.counters["varbinds"] - before["varbinds"]
            reqs = client.counters["requests"] - before["requests"]
            ours_rate.append(n / cpu)
            ours_wall.append(wall / args.cycles)
            wire_ratio.append(wire / n)
            print(f"  run {run + 1}: {n / args.cycles:.0f} varbinds/cycle, {reqs / args.cycles:.0f} "
                  f"requests/cycle, {wire / n:.2f} received per returned, "
                  f"{wall / args.cycles * 1000:.0f} ms wall/cycle, CPU {cpu / args.cycles * 1000:.0f} "
                  f"ms/cycle -> {n / cpu:,.0f} varbinds/CPU-s, {n / wall:,.0f} varbinds/wall-s")
        lost = client.counters["timeouts"] + client.counters["retries"]
        c_rates, c_walls = [], []
        for _ in range(args.runs):
            n, wall, cpu = c_tools(agents[0], args.max_repetitions, args.c_repeats)
            c_rates.append(n / cpu)
            c_walls.append(wall / args.c_repeats)
        p_rates = []
        for _ in range(args.runs):
            n, wall, cpu = await defer.Deferred.fromFuture(asyncio.ensure_future(
                pysnmp_poll(agents[0], args.max_repetitions, args.pysnmp_repeats)))
            p_rates.append(n / cpu)
        ours, c, p = (statistics.median(x) for x in (ours_rate, c_rates, p_rates))
        print()
        print(f"ours (v2c, this process):  {ours:>10,.0f} varbinds/CPU-s   "
              f"{statistics.median(ours_wall) * 1000:.0f} ms wall per cycle of {args.devices} devices"
              f"   (timeouts+retries: {lost})")
        print(f"net-snmp C tools, 1 agent: {c:>10,.0f} varbinds/CPU-s   "
              f"{statistics.median(c_walls) * 1000:.1f} ms wall per device (2 processes)")
        print(f"pysnmp 7 hlapi, 1 agent:   {p:>10,.0f} varbinds/CPU-s")
        print(f"ratios: ours/C = {ours / c:.2f}   ours/pysnmp = {ours / p:.1f}   "
              f"goal 100,000 varbinds/CPU-s: {'met' if ours >= 100_000 else 'NOT met'}")
    finally:
        await client.stop()
        for a in agents:
            a.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=4)
    parser.add_argument("--devices", type=int, default=200)
    parser.add_argument("--cycles", type=int, default=3)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--max-repetitions", type=int, default=10)
    parser.add_argument("--in-flight", type=int, default=4)
    parser.add_argument("--c-repeats", type=int, default=20)
    parser.add_argument("--pysnmp-repeats", type=int, default=20)
    args = parser.parse_args()
    task.react(lambda reactor: defer.ensureDeferred(main(reactor, args)))
