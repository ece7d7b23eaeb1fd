"""``counter_rate`` on a real Counter64: net-snmp snmpd's loopback ifHCInOctets.

``twistd centaure-snmp`` polls snmpd with a profile that publishes the same
column twice: raw (``ifHCInOctets``) and through ``counter_rate``
(``ifHCInOctetsRate``). The poller stamps a perf message with the time its
rates are computed at, so two consecutive perf messages give an exact check:
rate == (raw2 - raw1) / (ts2 - ts1), up to float rounding. UDP packets sent
to 127.0.0.1 during the test make the loopback counter move; ``snmpget``
before and after brackets the raw values, read independently of the poller.
"""

from __future__ import annotations

import socket
import subprocess
import threading
import time

import pytest
import yaml

from connector import messages
from tests.conftest import settings_text
from tests.integration.daemons import TwistdDaemon
from tests.integration.support import declare_check_queue, drain

pytestmark = pytest.mark.integration

HC_IN = "1.3.6.1.2.1.31.1.1.1.6"
IF_DESCR = "1.3.6.1.2.1.2.2.1.2"
# Above net-snmp's interface cache (a few seconds): each poll sees a fresh counter.
INTERVAL = 4.0

PROFILE = {
    "name": "lo-rates",
    "device_types": ["server"],
    "tables": [{"name": "ifXTable", "columns": [
        {"name": "ifHCInOctets", "oid": HC_IN, "kind": "counter", "unit": "octets"},
        {"name": "ifHCInOctetsRate", "oid": HC_IN, "kind": "gauge", "unit": "octets/s",
         "operators": [{"counter_rate": {"bits": 64}}]},
    ]}],
}


def snmp(agent, command: str, oid: str) -> list[tuple[str, str]]:
    out = subprocess.run([command, "-v2c", "-c", "public", "-On", "-Oq", f"127.0.0.1:{agent.port}",
                          oid], capture_output=True, text=True, env=agent.env, timeout=10,
                         check=True).stdout
    return [tuple(line.split(" ", 1)) for line in out.strip().splitlines()]


def loopback_index(agent) -> str:
    for oid, descr in snmp(agent, "snmpbulkwalk", IF_DESCR):
        if descr.strip('"') == "lo":
            return oid.rsplit(".", 1)[1]
    raise AssertionError("snmpd reports no 'lo' interface")


def loopback_octets(agent, index: str) -> int:
    ((_, value),) = snmp(agent, "snmpget", f"{HC_IN}.{index}")
    return int(value)


class Traffic(threading.Thread):
    """UDP datagrams to 127.0.0.1 (discard port) until stopped: the loopback counter moves."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.stopping = threading.Event()

    def run(self) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            while not self.stopping.wait(0.01):
                for _ in range(20):
                    s.sendto(b"x" * 1000, ("127.0.0.1", 9))


def test_published_rate_is_the_counter_difference_over_the_poll_interval(
        snmpd_agent, tmp_path, prefix):
    index = loopback_index(snmpd_agent)
    perf_q = declare_check_queue(prefix, "perf")
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "lo-rates.yaml").write_text(yaml.safe_dump(PROFILE))
    (tmp_path / "inventory.yaml").write_text(yaml.safe_dump({"devices": [
        {"name": "srv1", "address": "127.0.0.1", "port": snmpd_agent.port,
         "device_type": "server"}]}))
    (tmp_path / "credentials.yaml").write_text(yaml.safe_dump(
        {"default": {"version": "v2c", "community": "public"}}))
    settings = tmp_path / "settings.ini"
    settings.write_text(settings_text(
        prefix, tmp_path, inventory={"path": "inventory.yaml", "reload_interval": "0"},
        snmp={"profiles": "profiles", "credentials": "credentials.yaml",
              "interval": f"{INTERVAL}s", "timeout": "2s", "retries": "1"}))

    traffic = Traffic()
    traffic.start()
    before_value, before_time = loopback_octets(snmpd_agent, index), time.time()
    daemon = TwistdDaemon("centaure-snmp", settings)
    polls: list[messages.Perf] = []
    try:
        deadline = time.monotonic() + 60
        while len(polls) < 3:
            assert time.monotonic() < deadline, f"only {len(polls)} polls; {daemon.logs()[-2000:]}"
            polls.extend(m for m in (messages.decode(b) for b, _ in drain(perf_q, idle=0.5))
                         if m.host == "srv1")
    finally:
        daemon.stop()
        traffic.stopping.set()
        traffic.join(5)
    after_value, after_time = loopback_octets(snmpd_agent, index), time.time()

    def metric(perf: messages.Perf, name: str) -> messages.Metric | None:
        found = [m for m in perf.metrics if m.name == name and m.index == index]
        assert len(found) <= 1
        return found[0] if found else None

    raws = [metric(p, "ifHCInOctets").value for p in polls]
    # The first poll only primes the rate; every later one has it.
    assert metric(polls[0], "ifHCInOctetsRate") is None
    # The raw values are the agent's: between two independent reads, never going back.
    assert before_value <= raws[0] and raws == sorted(raws) and raws[-1] <= after_value
    assert before_time <= polls[0].ts and polls[-1].ts <= after_time
    moved = False
    for p1, p2 in zip(polls, polls[1:]):
        elapsed = p2.ts - p1.ts
        assert INTERVAL * 0.5 < elapsed < INTERVAL * 2.5, elapsed  # consecutive polls
        rate = metric(p2, "ifHCInOctetsRate")
        assert rate is not None and rate.kind == "gauge" and rate.unit == "octets/s"
        delta = metric(p2, "ifHCInOctets").value - metric(p1, "ifHCInOctets").value
        # Exact up to float rounding: the rate times the interval is the counter's increase.
        assert rate.value * elapsed == pytest.approx(delta, rel=1e-9, abs=1e-6)
        assert rate.value == pytest.approx(delta / elapsed, rel=1e-12)
        moved |= delta > 0
    assert moved, f"the loopback counter never moved: {raws}"
