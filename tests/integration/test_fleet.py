"""The simulated SNMP fleet (snmpsim serving ``fleet/``), checked with net-snmp's tools.

Each device answers its system group, its tables have the expected rows,
counters grow between polls, ``slow`` times out a 1 s client, ``toobig``
answers tooBig, and one snmpsim process serves 1,000 devices.
"""

from __future__ import annotations

import os
import random
import subprocess
import time

import pytest

from tests.snmp.fleet import device_name, start_fleet
from tests.snmp.simfixtures import FLEET_DIR
from tests.snmp.snmpsim import snmpget, start_snmpsim

pytestmark = pytest.mark.integration

SYS = "1.3.6.1.2.1.1"
IF = "1.3.6.1.2.1.2.2.1"
IFX = "1.3.6.1.2.1.31.1.1.1"
HR = "1.3.6.1.2.1.25"
UPS = "1.3.6.1.2.1.33.1"

DEVICES = ["switch01", "router01", "server01", "ups01", "huawei01", "eltek01", "vertiv01",
           "toobig"]


def walk(endpoint: str, community: str, oid: str, timeout: float = 2.0
         ) -> dict[str, str]:
    """``snmpbulkwalk`` of ``oid``: {numeric OID without leading dot: value text}."""
    r = subprocess.run(["snmpbulkwalk", "-v2c", "-c", community, "-t", str(timeout), "-r", "1",
                        "-On", "-OQ", "-Ot", endpoint, oid],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    out = {}
    for line in r.stdout.splitlines():
        if line.startswith(".") and " = " in line:
            k, v = line.split(" = ", 1)
            out[k[1:]] = v.strip().strip('"')
    return out


def get_values(endpoint: str, community: str, *oids: str) -> list[str]:
    r = snmpget(endpoint, community, *oids, timeout=2, retries=1, extra=("-OQv", "-Ot"))
    assert r.returncode == 0, r.stderr
    return [v.strip().strip('"') for v in r.stdout.splitlines()]


def rows(varbinds: dict[str, str], column_oid: str) -> list[str]:
    """The row indexes of one column."""
    p = column_oid + "."
    return [k[len(p):] for k in varbinds if k.startswith(p)]


# --- every device ------------------------------------------------------------------------

@pytest.mark.parametrize("device", DEVICES)
def test_system_group(snmpsim_fleet, device):
    if device == "toobig":   # a bulk walk of its system group runs into the ifTable: tooBig
        oids = [f"{SYS}.{i}.0" for i in range(1, 8)]
        sysgroup = dict(zip(oids, get_values(snmpsim_fleet.endpoint, device, *oids)))
    else:
        sysgroup = walk(snmpsim_fleet.endpoint, device, SYS)
    assert set(sysgroup) == {f"{SYS}.{i}.0" for i in range(1, 8)}
    assert sysgroup[f"{SYS}.5.0"] == device
    assert sysgroup[f"{SYS}.2.0"].startswith(".1.3.6.1.")


def test_every_recording_is_served(snmpsim_fleet):
    assert sorted(snmpsim_fleet.communities) == sorted(DEVICES + ["slow"])


def test_unknown_community_gets_no_answer(snmpsim_fleet):
    r = snmpget(snmpsim_fleet.endpoint, "nosuchdevice", f"{SYS}.1.0", timeout=0.5)
    assert r.returncode != 0 and "Timeout" in r.stderr


# --- tables ------------------------------------------------------------------------------

@pytest.mark.parametrize("device, n_if", [("switch01", 24), ("router01", 8), ("server01", 2)])
def test_interface_tables(snmpsim_fleet, device, n_if):
    ep = snmpsim_fleet.endpoint
    iftable = walk(ep, device, "1.3.6.1.2.1.2.2")
    assert len(iftable) == 22 * n_if
    for col in range(1, 23):
        assert len(rows(iftable, f"{IF}.{col}")) == n_if, col
    assert rows(iftable, f"{IF}.1") == [str(i) for i in range(1, n_if + 1)]
    assert get_values(ep, device, "1.3.6.1.2.1.2.1.0") == [str(n_if)]  # ifNumber
    ifx = walk(ep, device, "1.3.6.1.2.1.31.1.1")
    assert len(ifx) == 5 * n_if
    for col in (1, 6, 10, 15, 18):
        assert len(rows(ifx, f"{IFX}.{col}")) == n_if, col


def test_server_host_resources(snmpsim_fleet):
    ep = snmpsim_fleet.endpoint
    storage = walk(ep, "server01", f"{HR}.2.3")
    assert len(storage) == 6 * 6
    assert rows(storage, f"{HR}.2.3.1.3") == ["1", "3", "6", "7", "31", "36"]
    assert storage[f"{HR}.2.3.1.3.31"] == "/"
    cpus = walk(ep, "server01", f"{HR}.3.3.1.2")
    assert len(cpus) == 4 and all(0 <= int(v) <= 100 for v in cpus.values())
    assert int(get_values(ep, "server01", f"{HR}.1.1.0")[0]) > 0


def test_ups_mib(snmpsim_fleet):
    ep = snmpsim_fleet.endpoint
    ups = walk(ep, "ups01", UPS)
    assert len(rows(ups, f"{UPS}.1")) == 6                      # upsIdent
    assert ups[f"{UPS}.2.1.0"] == "2"                           # batteryNormal
    assert len(rows(ups, f"{UPS}.3.3.1.3")) == 3                # input lines
    assert len(rows(ups, f"{UPS}.4.4.1.5")) == 3                # output lines
    assert ups[f"{UPS}.6.1.0"] == "2"                           # upsAlarmsPresent
    alarms = walk(ep, "ups01", f"{UPS}.6.2")
    assert len(alarms) == 2 * 3
    assert sorted(v for k, v in alarms.items() if k.startswith(f"{UPS}.6.2.1.2.")) == [
        f".{UPS}.6.3.16", f".{UPS}.6.3.5"]                      # fanFailure, tempBad


@pytest.mark.parametrize("device, scalars, alarm_table, n_alarms", [
    ("huawei01", "1.3.6.1.4.1.2011.6.164.1.1.2", "1.3.6.1.4.1.2011.6.164.1.20.1", 2),
    ("eltek01", "1.3.6.1.4.1.12148.10.10", "1.3.6.1.4.1.12148.10.13.8.2.1", 1),
    ("vertiv01", "1.3.6.1.4.1.6302.2.1.2", "1.3.6.1.4.1.6302.2.1.4.1", 2),
])
def test_power_shelves(snmpsim_fleet, device, scalars, alarm_table, n_alarms):
    ep = snmpsim_fleet.endpoint
    sc = walk(ep, device, scalars)
    assert sorted(sc) == sorted(f"{scalars}.{i}.0" for i in range(1, 9))
    assert 4000 <= int(sc[f"{scalars}.1.0"]) <= 6000           # DC bus voltage, 0.01 V
    alarms = walk(ep, device, alarm_table)
    assert len(alarms) == 4 * n_alarms
    for col in (1, 2, 3, 4):
        assert rows(alarms, f"{alarm_table}.{col}") == [str(i) for i in range(1, n_alarms + 1)]
    assert all(1 <= int(alarms[f"{alarm_table}.3.{i}"]) <= 4 for i in range(1, n_alarms + 1))


# --- counters ----------------------------------------------------------------------------

def test_counters_grow_between_polls(snmpsim_fleet):
    ep = snmpsim_fleet.endpoint
    oids = [f"{SYS}.3.0", f"{IF}.10.1", f"{IF}.16.1", f"{IFX}.6.1", f"{IFX}.10.1",
            f"{IF}.10.24", f"{IFX}.6.24"]                       # port 24 is down
    first = [int(v) for v in get_values(ep, "switch01", *oids)]
    time.sleep(1.2)
    second = [int(v) for v in get_values(ep, "switch01", *oids)]
    assert second[0] - first[0] >= 100                          # sysUpTime: 100 ticks/s
    assert all(b > a for a, b in zip(first[1:5], second[1:5])), (first, second)
    assert second[5:] == first[5:]                              # down port does not count


def test_hc_counters_of_up_ports_grow_in_a_walk(snmpsim_fleet):
    ep = snmpsim_fleet.endpoint
    a = walk(ep, "switch01", f"{IFX}.6")
    time.sleep(1.1)
    b = walk(ep, "switch01", f"{IFX}.6")
    grew = [k.rsplit(".", 1)[1] for k in a if int(b[k]) > int(a[k])]
    assert grew == [str(i) for i in range(1, 21)]               # ports 1-20 up, 21-24 down


# --- faults ------------------------------------------------------------------------------

def test_toobig(snmpsim_fleet):
    ep = snmpsim_fleet.endpoint
    assert get_values(ep, "toobig", f"{SYS}.5.0") == ["toobig"]
    r = snmpget(ep, "toobig", f"{IF}.2.1", timeout=2)
    assert r.returncode != 0 and "tooBig" in r.stderr + r.stdout
    r = subprocess.run(["snmpbulkwalk", "-v2c", "-c", "toobig", "-t", "2", "-r", "0", ep,
                        "1.3.6.1.2.1.2.2"], capture_output=True, text=True, timeout=30)
    assert "tooBig" in r.stderr + r.stdout
    # a GETBULK that starts in the system group fails too, once it reaches the ifTable
    r = subprocess.run(["snmpbulkwalk", "-v2c", "-c", "toobig", "-t", "2", "-r", "0", ep,
                        SYS], capture_output=True, text=True, timeout=30)
    assert "tooBig" in r.stderr + r.stdout
    r = snmpget(ep, "toobig", f"{IF}.2.1", timeout=2, version="1")
    assert r.returncode != 0 and "tooBig" in r.stderr + r.stdout


@pytest.fixture(scope="module")
def slow_sim(tmp_path_factory):
    """``slow`` on its own process: its delays stall every device of the process."""
    sim = start_snmpsim(FLEET_DIR, only=["slow", "switch01"],
                        tmp_dir=str(tmp_path_factory.mktemp("snmpsim-slow")))
    yield sim
    sim.stop()


def test_slow_times_out_a_1s_client_and_answers_a_patient_one(slow_sim):
    ep = slow_sim.endpoint
    t0 = time.monotonic()
    r = snmpget(ep, "slow", f"{SYS}.5.0", timeout=1, retries=0)
    assert r.returncode != 0 and "Timeout" in r.stderr
    assert time.monotonic() - t0 < 1.5
    time.sleep(1.0)                                             # let the agent wake up
    t0 = time.monotonic()
    r = snmpget(ep, "slow", f"{SYS}.5.0", timeout=4, retries=0)
    took = time.monotonic() - t0
    assert r.returncode == 0 and '"slow"' in r.stdout, r.stderr
    assert 1.4 <= took < 3.5


def test_slow_device_stalls_its_whole_process(slow_sim):
    """snmpsim's delay variation sleeps in the only thread: a fact to design tests around."""
    ep = slow_sim.endpoint
    bg = subprocess.Popen(["snmpget", "-v2c", "-c", "slow", "-t", "4", "-r", "0", ep,
                           f"{SYS}.5.0"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.3)
        t0 = time.monotonic()
        r = snmpget(ep, "switch01", f"{SYS}.5.0", timeout=4, retries=0)
        took = time.monotonic() - t0
    finally:
        bg.wait(10)
    assert r.returncode == 0
    assert took > 0.8, f"switch01 answered in {took:.2f}s while slow was sleeping"


# --- scale -------------------------------------------------------------------------------

def test_one_process_serves_1000_devices(tmp_path):
    t0 = time.monotonic()
    sim, devices = start_fleet(str(tmp_path), 1000)
    startup = time.monotonic() - t0
    try:
        assert len(devices) == 1000 and len(sim.communities) == 1000
        assert {p for _, p in devices} == {sim.port}
        sample = [1, 2, 500, 999, 1000] + random.Random(7).sample(range(3, 999), 5)
        for i in sample:
            name = device_name(i)
            assert get_values(sim.endpoint, name, f"{SYS}.5.0", f"{IF}.2.24") == [
                name, "GigabitEthernet1/0/24"]
        t1 = time.monotonic()
        n = 0
        for i in range(1, 1001, 10):
            n += len(walk(sim.endpoint, device_name(i), "1.3.6.1.2.1.2.2.1.10"))
        walks = time.monotonic() - t1
        assert n == 100 * 24
        rss = sim.rss_kib()
        report = (f"snmpsim serving 1000 devices: startup {startup:.1f}s, "
                  f"RSS {rss / 1024:.0f} MiB, 100 ifInOctets walks in {walks:.2f}s")
        print(report)
        with open(os.path.join(str(tmp_path), "report.txt"), "w") as f:
            f.write(report + "\n")
        assert rss < 2 * 1024 * 1024                            # sanity: under 2 GiB
    finally:
        sim.stop()
