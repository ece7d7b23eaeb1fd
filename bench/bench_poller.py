#!/usr/bin/env python
"""Benchmark the whole poller path: a fleet of snmpd agents, v2c and v3.

Goals: >= 100,000 varbinds per CPU-second of the poller process
for v2c, >= 30,000 for v3 authPriv, poller RSS < 300 MB with 10,000 devices
in the inventory; measured beside net-snmp's C tools and pysnmp's hlapi
walking the same OIDs in the same run.

What runs
    --agents net-snmp snmpd processes on loopback (tests/snmp/snmpd.py: v2c
    community ``public`` and its v3 users).  An inventory of --devices
    devices of type ``switch`` (profiles mib2-system + if-mib: 5 system
    scalars and 14 ifTable/ifXTable columns), device i on agent i % agents:
    many inventory devices per agent, told apart by name only.
    inventory.yaml, credentials.yaml and settings.ini are written into a
    temporary folder and loaded through the product's code path
    (``load_config(settings, build_registry(snmp))``): profiles, credentials,
    operators and poll plans are the product's; the profiles folder is the
    shipped one.

What a cycle is
    Every device of the inventory polled once with the product's
    ``DevicePoller`` and ``SnmpClient`` (settings' max_in_flight_per_agent,
    recv_buffer), at most ``[snmp] max_concurrent_polls`` polls at once
    through a ``DeferredSemaphore`` as the scheduler does, every ``perf``
    (and ``alarm_snapshot``, if any) message encoded with
    ``connector.messages.encode`` (the bus itself is left out).  The whole
    fleet is started at once (the scheduler spreads it over the interval):
    this measures how fast a cycle can go.  Per cycle: varbinds returned
    to the poller, CPU seconds of THIS process (``time.process_time``,
    user+sys; the agents are other processes), wall seconds.  One warm-up
    cycle first (it also teaches the client the tables' sizes); then
    --runs runs of --cycles cycles, median of the runs.

References, in the same run, same agents, same OIDs
    net-snmp C, per device: ``snmpget`` of the scalars and one
    ``snmpbulkwalk`` per column (snmpbulkwalk walks one OID), for --c-sample
    devices: CPU of those children (getrusage RUSAGE_CHILDREN), PROCESS START
    INCLUDED (it dominates: 15 processes per device); also the two table
    subtrees walked whole (3 processes per device, more varbinds), and one
    long walk of 1.3.6.1.2.1 (5,864 varbinds from snmpd: the C tools' rate
    on it is taken as the "physical limit" of an SNMP manager on this
    machine).  pysnmp 7 hlapi (asyncio, one SnmpEngine, lookupMib=False):
    ``get_cmd`` of the scalars and one ``bulk_walk_cmd`` per column
    (lexicographicMode=False), for --pysnmp-sample devices, one after the
    other.  References use max-repetitions = rows per table + 1 (what the
    product's client asks once it knows the table), unless --ref-max-repetitions.

RSS
    A separate process (this script with --rss-child) loads an inventory of
    --rss-devices devices on the same agents, runs one full v2c cycle and
    reports its peak RSS (``ru_maxrss``) and VmRSS.

Usage: .venv/bin/python bench/bench_poller.py [--agents 4] [--devices 1000]
       [--v3-devices 1000] [--runs 3] [--cycles 2] [--rss-devices 10000]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)

from twisted.internet import asyncioreactor  # noqa: E402

asyncioreactor.install()

import asyncio  # noqa: E402

from twisted.internet import defer, task  # noqa: E402

from connector import messages  # noqa: E402
from connector.settings import load_settings  # noqa: E402
from centaure_shared import operators as ops  # noqa: E402
from connector_snmp.client import SnmpClient  # noqa: E402
from connector_snmp.poller import DevicePoller  # noqa: E402
from connector_snmp.service import build_registry, load_config  # noqa: E402

V3_USER = "u_sha_aes"  # tests/snmp/snmpd.py: SHA / AES-128
LONG_WALK = "1.3.6.1.2.1"
IF_TABLE, IF_X_TABLE = "1.3.6.1.2.1.2.2", "1.3.6.1.2.1.31.1.1"


# ------------------------------------------------------------------ helpers

def vm_rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def peak_rss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux


def write_config(d: str, n: int, ports: list[int], version: str, max_concurrent: int,
                 name_prefix: str = "dev") -> str:
    """inventory.yaml, credentials.yaml, settings.ini in ``d``; returns settings.ini."""
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "inventory.yaml"), "w") as f:
        f.write("devices:\n")
        for i in range(n):
            f.write(f"  - {{name: {name_prefix}{i:05d}, address: 127.0.0.1, "
                    f"port: {ports[i % len(ports)]}, device_type: switch, id: \"{i}\"}}\n")
    from tests.snmp.snmpd import AUTH_KEY, PRIV_KEY

    with open(os.path.join(d, "credentials.yaml"), "w") as f:
        if version == "v3":
            f.write(f"default:\n  version: v3\n  user: {V3_USER}\n  auth_protocol: SHA\n"
                    f"  auth_key: {AUTH_KEY}\n  priv_protocol: AES\n  priv_key: {PRIV_KEY}\n")
        else:
            f.write("default:\n  version: v2c\n  community: public\n")
    path = os.path.join(d, "settings.ini")
    with open(path, "w") as f:
        f.write("[inventory]\nsource = yaml\npath = inventory.yaml\nport_column = port\n"
                "reload_interval = 0\n\n"
                f"[snmp]\nprofiles = shipped\ncredentials = credentials.yaml\n"
                f"max_concurrent_polls = {max_concurrent}\n")
    return path


class Fleet:
    """A loaded configuration with its client, poller and semaphore (the product's parts)."""

    def __init__(self, reactor, settings_path: str) -> None:
        t0 = time.perf_counter()
        self.settings = load_settings(settings_path)
        self.snmp = self.settings.section("snmp")
        self.config = load_config(self.settings, build_registry(self.snmp))
        self.load_seconds = time.perf_counter() - t0
        if self.config.skipped:
            raise SystemExit(f"devices skipped: {list(self.config.skipped.items())[:3]}")
        self.client = SnmpClient(reactor, self.snmp.max_in_flight_per_agent,
                                 self.snmp.recv_buffer)
        self.client.start()
        self.poller = DevicePoller(self.client, "snmp@bench", ops.StateStore())
        self.semaphore = defer.DeferredSemaphore(self.snmp.max_concurrent_polls)
        self.names = list(self.config.plans)

    async def poll_one(self, name: str, totals: dict) -> None:
        cfg = self.config
        outcome = await self.poller.poll(cfg.devices[name], cfg.targets[name], cfg.plans[name])
        totals["varbinds"] += outcome.varbinds
        if not outcome.reachable:
            totals["unreachable"] += 1
        for m in (outcome.perf, outcome.snapshot):
            if m is not None:
                totals["bytes"] += len(messages.encode(m))  # what the publisher sends
                totals["messages"] += 1

    async def cycle(self) -> dict:
        """Poll every device once; varbinds, CPU s, wall s, messages, bytes."""
        totals = dict.fromkeys(("varbinds", "unreachable", "bytes", "messages"), 0)
        run = self.semaphore.run
        c0, w0 = time.process_time(), time.perf_counter()
        await defer.gatherResults(
            [run(lambda n: defer.ensureDeferred(self.poll_one(n, totals)), name)
             for name in self.names], consumeErrors=True)
        totals["wall"] = time.perf_counter() - w0
        totals["cpu"] = time.process_time() - c0
        return totals

    async def stop(self) -> None:
        await self.client.stop()


async def measure_fleet(fleet: Fleet, label: str, runs: int, cycles: int) -> dict:
    c0 = dict(fleet.client.counters)
    warm = await fleet.cycle()
    print(f"  {label} warm-up cycle: {warm['varbinds']:,} varbinds, {warm['wall']:.2f} s wall, "
          f"{warm['cpu']:.2f} s CPU, unreachable {warm['unreachable']}")
    rates, walls, cpus, vbs = [], [], [], []
    for r in range(runs):
        tot = dict.fromkeys(("varbinds", "unreachable", "bytes", "messages", "wall", "cpu"), 0)
        for _ in range(cycles):
            one = await fleet.cycle()
            for k in tot:
                tot[k] += one[k]
        rates.append(tot["varbinds"] / tot["cpu"])
        walls.append(tot["wall"] / cycles)
        cpus.append(tot["cpu"] / cycles)
        vbs.append(tot["varbinds"] / cycles)
        print(f"  {label} run {r + 1}: {tot['varbinds'] / cycles:,.0f} varbinds/cycle, "
              f"{tot['messages'] / cycles:,.0f} messages ({tot['bytes'] / cycles / 1e6:.1f} MB "
              f"JSON)/cycle, {tot['wall'] / cycles:.2f} s wall/cycle, {tot['cpu'] / cycles:.2f} s "
              f"CPU/cycle -> {rates[-1]:,.0f} varbinds/CPU-s; unreachable "
              f"{tot['unreachable'] / cycles:.0f}/cycle")
    c1 = fleet.client.counters
    lost = {k: c1[k] - c0[k] for k in ("timeouts", "retries", "bad_packets")}
    return {"rate": statistics.median(rates), "wall": statistics.median(walls),
            "cpu": statistics.median(cpus), "varbinds": statistics.median(vbs),
            "devices": len(fleet.names), "lost": lost,
            "requests_per_device": (c1["requests"] - c0["requests"])
            / ((runs * cycles + 1) * len(fleet.names))}


# --------------------------------------------------------------- net-snmp C

def net_snmp_args(version: str, agent) -> list[str]:
    if version == "v3":
        return agent.user(V3_USER).snmpget_args()
    return ["-v2c", "-c", "public"]


def run_tools(cmds: list[list[str]], env) -> tuple[int, float, float]:
    """(varbinds printed, wall s, children CPU s) of these commands, in turn."""
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    w0 = time.perf_counter()
    n = 0
    for cmd in cmds:
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
        n += sum(1 for line in out.stdout.splitlines() if line.startswith(".1."))
    wall = time.perf_counter() - w0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return n, wall, (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)


def c_device_cmds(agent, version: str, scalars, columns, reps: int, whole_tables: bool):
    base = [*net_snmp_args(version, agent), "-On", "-Oq", "-t", "2", "-r", "1"]
    peer = f"127.0.0.1:{agent.port}"
    cmds = [["snmpget", *base, peer, *scalars]]
    walks = [IF_TABLE, IF_X_TABLE] if whole_tables else columns
    cmds += [["snmpbulkwalk", *base, f"-Cr{reps}", peer, oid] for oid in walks]
    return cmds


def c_reference(agents, version, scalars, columns, reps, sample, whole_tables):
    cmds = []
    for i in range(sample):
        cmds += c_device_cmds(agents[i % len(agents)], version, scalars, columns, reps,
                              whole_tables)
    n, wall, cpu = run_tools(cmds, agents[0].env)
    return {"rate": n / cpu, "wall_per_device": wall / sample, "varbinds": n / sample,
            "processes": len(cmds) / sample}


def c_long_walk(agent, version, reps):
    cmd = ["snmpbulkwalk", *net_snmp_args(version, agent), "-On", "-Oq", f"-Cr{reps}",
           f"127.0.0.1:{agent.port}", LONG_WALK]
    n, wall, cpu = run_tools([cmd], agent.env)
    return {"rate": n / cpu, "wall": wall, "varbinds": n, "wall_rate": n / wall}


# ---------------------------------------------------------------- pysnmp hlapi

async def pysnmp_reference(agents, version, scalars, columns, reps, sample) -> dict:
    from pysnmp.hlapi.v3arch.asyncio import (CommunityData, ContextData, ObjectIdentity,
                                             ObjectType, SnmpEngine, UdpTransportTarget,
                                             UsmUserData, bulk_walk_cmd, get_cmd,
                                             usmAesCfb128Protocol, usmHMACSHAAuthProtocol)
    from tests.snmp.snmpd import AUTH_KEY, PRIV_KEY

    engine = SnmpEngine()
    if version == "v3":
        auth = UsmUserData(V3_USER, AUTH_KEY, PRIV_KEY, authProtocol=usmHMACSHAAuthProtocol,
                           privProtocol=usmAesCfb128Protocol)
    else:
        auth = CommunityData("public")
    ctx = ContextData()
    tts = [await UdpTransportTarget.create(("127.0.0.1", a.port), timeout=2, retries=1)
           for a in agents]

    async def one(tt) -> int:
        ei, es, ex, vbs = await get_cmd(engine, auth, tt, ctx,
                                        *[ObjectType(ObjectIdentity(o)) for o in scalars],
                                        lookupMib=False)
        assert not ei and not es, (ei, es)
        n = len(vbs)
        for col in columns:
            async for ei, es, ex, vbs in bulk_walk_cmd(
                    engine, auth, tt, ctx, 0, reps, ObjectType(ObjectIdentity(col)),
                    lookupMib=False, lexicographicMode=False):
                assert not ei and not es, (ei, es)
                n += len(vbs)
        return n

    for tt in tts:  # warm-up: engine discovery (v3), imports, caches
        await one(tt)
    c0, w0 = time.process_time(), time.perf_counter()
    n = 0
    for i in range(sample):
        n += await one(tts[i % len(tts)])
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    # the long walk of 1.3.6.1.2.1: big responses, per-request costs amortized
    c0, w0 = time.process_time(), time.perf_counter()
    n_long = 0
    async for ei, es, ex, vbs in bulk_walk_cmd(
            engine, auth, tts[0], ctx, 0, 25, ObjectType(ObjectIdentity(LONG_WALK)),
            lookupMib=False, lexicographicMode=False):
        assert not ei and not es, (ei, es)
        n_long += len(vbs)
    long_wall, long_cpu = time.perf_counter() - w0, time.process_time() - c0
    engine.close_dispatcher()
    return {"rate": n / cpu, "wall_per_device": wall / sample, "varbinds": n / sample,
            "long_rate": n_long / long_cpu, "long_varbinds": n_long, "long_wall": long_wall}


def as_deferred(coro):
    return defer.Deferred.fromFuture(asyncio.ensure_future(coro))


def med(results: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in results)


# ----------------------------------------------------------------- RSS child

async def rss_child(reactor, settings_path: str) -> None:
    before = vm_rss_kib()
    fleet = Fleet(reactor, settings_path)
    loaded = vm_rss_kib()
    try:
        cyc = await fleet.cycle()
    finally:
        await fleet.stop()
    print("RSS " + json.dumps({
        "devices": len(fleet.names), "rss_start_kib": before, "rss_loaded_kib": loaded,
        "load_s": fleet.load_seconds, "vm_rss_kib": vm_rss_kib(), "peak_kib": peak_rss_kib(),
        "pysnmp_imported": "pysnmp" in sys.modules, **cyc}), flush=True)


def run_rss_phase(tmp: str, ports: list[int], n: int, max_concurrent: int) -> dict:
    path = write_config(os.path.join(tmp, "rss"), n, ports, "v2c", max_concurrent)
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--rss-child", path],
                         capture_output=True, text=True, timeout=600)
    for line in out.stdout.splitlines():
        if line.startswith("RSS "):
            return json.loads(line[4:])
    raise RuntimeError(f"RSS child failed ({out.returncode}):\n{out.stdout[-2000:]}"
                       f"\n{out.stderr[-3000:]}")


# ---------------------------------------------------------------------- main

async def main(reactor, args) -> None:
    from tests.snmp.snmpd import start_snmpd

    t_start = time.perf_counter()
    tmp = tempfile.mkdtemp(prefix="bench-poller-")
    agents = []
    fleets: list[Fleet] = []
    try:
        for i in range(args.agents):
            agents.append(start_snmpd(os.path.join(tmp, f"agent{i}")))
        if V3_USER in agents[0].refused:
            raise SystemExit(agents[0].refused[V3_USER])
        ports = [a.port for a in agents]
        print(f"{args.agents} snmpd agents on 127.0.0.1 (ports {', '.join(map(str, ports))}), "
              f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}, load average "
              f"{os.getloadavg()[0]:.2f} (other jobs on this machine inflate every figure)")

        # ---- v2c fleet, through the product's configuration path
        v2 = Fleet(reactor, write_config(os.path.join(tmp, "v2c"), args.devices, ports, "v2c",
                                         args.max_concurrent))
        fleets.append(v2)
        snmp = v2.snmp
        print(f"inventory of {len(v2.names):,} devices loaded by load_config in "
              f"{v2.load_seconds:.2f} s; [snmp] max_concurrent_polls {snmp.max_concurrent_polls}, "
              f"max_in_flight_per_agent {snmp.max_in_flight_per_agent}, max_repetitions "
              f"{snmp.max_repetitions}, recv_buffer {snmp.recv_buffer}; SO_RCVBUF {v2.client.rcvbuf}")

        # ---- what one device yields
        first = v2.names[0]
        plan = v2.config.plans[first]
        probe = await v2.poller.poll(v2.config.devices[first], v2.config.targets[first], plan,
                                     with_rows=True)
        if not probe.reachable:
            raise SystemExit(f"{first} did not answer: {probe.error}")
        scalars, columns = plan.scalar_oids, plan.column_oids
        rows = max((sum(1 for r in probe.rows if r[5].startswith(c + ".")) for c in columns),
                   default=0)
        reps = args.ref_max_repetitions or rows + 1
        per_device = probe.varbinds
        print(f"one device (profiles mib2-system + if-mib): {len(scalars)} scalars + "
              f"{len(columns)} columns x {rows} interfaces = {per_device} varbinds, "
              f"{len(probe.perf.metrics)} metrics, perf message {len(messages.encode(probe.perf))} "
              f"bytes of JSON")

        # ---- v2c cycles
        print(f"\nv2c: {args.devices:,} devices, {args.runs} runs x {args.cycles} cycles")
        r_v2 = await measure_fleet(v2, "v2c", args.runs, args.cycles)
        await v2.stop()

        # ---- v3 cycles
        print(f"\nv3 authPriv ({V3_USER}, SHA/AES-128): {args.v3_devices:,} devices, "
              f"{args.runs} runs x {args.v3_cycles} cycles")
        v3 = Fleet(reactor, write_config(os.path.join(tmp, "v3"), args.v3_devices, ports, "v3",
                                         args.max_concurrent))
        fleets.append(v3)
        r_v3 = await measure_fleet(v3, "v3", args.runs, args.v3_cycles)
        await v3.stop()

        # ---- references
        print(f"\nreferences: same agents and OIDs, max-repetitions {reps} "
              f"({'given' if args.ref_max_repetitions else 'rows + 1'})")
        ref: dict[str, dict[str, list]] = {}
        for version in ("v2c", "v3"):
            r = ref[version] = {"c": [], "c_tables": [], "c_long": [], "py": []}
            for _ in range(args.runs):
                r["c"].append(c_reference(agents, version, scalars, columns, reps,
                                          args.c_sample, whole_tables=False))
                r["c_tables"].append(c_reference(agents, version, scalars, columns, 25,
                                                 args.c_sample, whole_tables=True))
                r["c_long"].append(c_long_walk(agents[0], version, 25))
                r["py"].append(await as_deferred(pysnmp_reference(
                    agents, version, scalars, columns, reps, args.pysnmp_sample)))
            c, ct, cl, py = r["c"], r["c_tables"], r["c_long"], r["py"]
            print(f"  {version} net-snmp C per device ({c[0]['processes']:.0f} processes, "
                  f"{c[0]['varbinds']:.0f} varbinds): {med(c, 'rate'):,.0f} varbinds/CPU-s, "
                  f"{med(c, 'wall_per_device') * 1000:.1f} ms wall/device "
                  f"[{args.c_sample} devices, process start included]")
            print(f"  {version} net-snmp C, tables whole ({ct[0]['processes']:.0f} processes, "
                  f"{ct[0]['varbinds']:.0f} varbinds, -Cr25): {med(ct, 'rate'):,.0f} "
                  f"varbinds/CPU-s, {med(ct, 'wall_per_device') * 1000:.1f} ms wall/device")
            print(f"  {version} net-snmp C, one walk of {LONG_WALK} ({cl[0]['varbinds']} "
                  f"varbinds, -Cr25): {med(cl, 'rate'):,.0f} varbinds/CPU-s, "
                  f"{med(cl, 'wall') * 1000:.0f} ms wall, {med(cl, 'wall_rate'):,.0f} varbinds/wall-s")
            print(f"  {version} pysnmp hlapi ({py[0]['varbinds']:.0f} varbinds/device, "
                  f"{args.pysnmp_sample} devices in turn): {med(py, 'rate'):,.0f} varbinds/CPU-s, "
                  f"{med(py, 'wall_per_device') * 1000:.1f} ms wall/device")
            print(f"  {version} pysnmp hlapi, one walk of {LONG_WALK} ({py[0]['long_varbinds']} "
                  f"varbinds, max-repetitions 25): {med(py, 'long_rate'):,.0f} varbinds/CPU-s, "
                  f"{med(py, 'long_wall') * 1000:.0f} ms wall")

        # ---- RSS
        rss = None
        if args.rss_devices:
            print(f"\nRSS: a separate poller process, {args.rss_devices:,} devices, one v2c cycle")
            rss = run_rss_phase(tmp, ports, args.rss_devices, args.max_concurrent)
            print(f"  VmRSS after imports {rss['rss_start_kib'] / 1024:.0f} MiB, after load_config "
                  f"{rss['rss_loaded_kib'] / 1024:.0f} MiB (load {rss['load_s']:.1f} s), after the "
                  f"cycle {rss['vm_rss_kib'] / 1024:.0f} MiB; peak (ru_maxrss) "
                  f"{rss['peak_kib'] / 1024:.0f} MiB; cycle {rss['varbinds']:,} varbinds, "
                  f"{rss['wall']:.1f} s wall, {rss['cpu']:.1f} s CPU "
                  f"({rss['varbinds'] / rss['cpu']:,.0f} varbinds/CPU-s, first cycle), "
                  f"unreachable {rss['unreachable']}; pysnmp imported: {rss['pysnmp_imported']}")

        # ---- summary
        def goal(value, target):
            return "met" if value >= target else "NOT met"

        print("\n## Poller benchmark (median of %d runs)\n" % args.runs)
        print(f"{args.agents} snmpd agents on loopback; {per_device} varbinds per device "
              f"({len(scalars)} scalars + {len(columns)} columns x {rows} rows); "
              f"{os.cpu_count()} CPUs.\n")
        print("| path | devices | varbinds/CPU-s | cycle wall | cycle CPU | goal |")
        print("|---|---:|---:|---:|---:|---|")
        for name, r, target in (("centaure poller v2c", r_v2, 100_000),
                                ("centaure poller v3 authPriv SHA/AES", r_v3, 30_000)):
            print(f"| {name} | {r['devices']:,} | {r['rate']:,.0f} | {r['wall']:.2f} s | "
                  f"{r['cpu']:.2f} s | >= {target:,}: {goal(r['rate'], target)} |")
        for version, r_ours in (("v2c", r_v2), ("v3", r_v3)):
            r = ref[version]
            ours = r_ours["rate"]
            c, ct, cl, py = (med(r[k], "rate") for k in ("c", "c_tables", "c_long", "py"))
            print(f"| net-snmp C {version}, same OIDs, 15 processes/device (start incl.) | "
                  f"{args.c_sample} | {c:,.0f} | | | ours/C = {ours / c:.1f} |")
            print(f"| net-snmp C {version}, ifTable+ifXTable whole, 3 processes/device | "
                  f"{args.c_sample} | {ct:,.0f} | | | ours/C = {ours / ct:.2f} |")
            print(f"| net-snmp C {version}, one walk of {LONG_WALK} (physical limit) | 1 | "
                  f"{cl:,.0f} | | | ours/C = {ours / cl:.2f} |")
            pl = med(r["py"], "long_rate")
            print(f"| pysnmp 7 hlapi {version}, same OIDs (15 requests/device) | "
                  f"{args.pysnmp_sample} | {py:,.0f} | | | ours/pysnmp = {ours / py:.1f} |")
            print(f"| pysnmp 7 hlapi {version}, one walk of {LONG_WALK} | 1 | {pl:,.0f} | | | "
                  f"ours/pysnmp = {ours / pl:.1f} |")
        if rss:
            print(f"| RSS, v2c poller process, one cycle | {rss['devices']:,} | "
                  f"{rss['varbinds'] / rss['cpu']:,.0f} | {rss['wall']:.1f} s | {rss['cpu']:.1f} s | "
                  f"peak {rss['peak_kib'] / 1024:.0f} MiB (VmRSS {rss['vm_rss_kib'] / 1024:.0f} MiB)"
                  f" < 300 MB: {'met' if rss['peak_kib'] * 1024 < 300e6 else 'NOT met'} |")
        print(f"\nlost on the wire during measured cycles: v2c {r_v2['lost']}, v3 {r_v3['lost']}; "
              f"requests/device: v2c {r_v2['requests_per_device']:.2f}, "
              f"v3 {r_v3['requests_per_device']:.2f}")
        print(f"total bench time {time.perf_counter() - t_start:.0f} s; load average at the end "
              f"{os.getloadavg()[0]:.2f}")
    finally:
        for f in fleets:
            if f.client._running:
                await f.client.stop()
        for a in agents:
            a.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=4, help="snmpd processes (default 4)")
    parser.add_argument("--devices", type=int, default=1000, help="v2c inventory size")
    parser.add_argument("--v3-devices", type=int, default=1000, help="v3 inventory size")
    parser.add_argument("--runs", type=int, default=3, help="runs; the median is reported")
    parser.add_argument("--cycles", type=int, default=2, help="v2c cycles per run")
    parser.add_argument("--v3-cycles", type=int, default=1, help="v3 cycles per run")
    parser.add_argument("--max-concurrent", type=int, default=200,
                        help="[snmp] max_concurrent_polls written to settings.ini")
    parser.add_argument("--c-sample", type=int, default=20, help="devices walked by net-snmp")
    parser.add_argument("--pysnmp-sample", type=int, default=50, help="devices walked by pysnmp")
    parser.add_argument("--ref-max-repetitions", type=int, default=0,
                        help="references' max-repetitions (0: rows per table + 1)")
    parser.add_argument("--rss-devices", type=int, default=10_000,
                        help="inventory of the RSS phase (0: skip it)")
    parser.add_argument("--rss-child", metavar="SETTINGS", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child:
        task.react(lambda reactor: defer.ensureDeferred(rss_child(reactor, args.rss_child)))
    else:
        task.react(lambda reactor: defer.ensureDeferred(main(reactor, args)))
