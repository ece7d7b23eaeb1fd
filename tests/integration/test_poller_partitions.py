"""Two pollers share one fleet by the ``snmp`` ownership tokens, and take over from each other.

Two ``twistd centaure-snmp`` daemons (nodes ``alpha`` and ``beta``) read the
same inventory of twenty devices (twenty real snmpd agents), with ``[bus]
partitions = 16`` on the main broker. Every ``perf`` they publish is read
back from a check queue: its ``source`` (``snmp@<node>``) says who polled.

- Balanced (8 partitions each), within polling rounds every device is polled
  by exactly one node, and both nodes poll some.
- One poller killed (kill -9) or stopped (SIGTERM): the survivor polls every
  device within ``TAKEOVER`` seconds, and no device goes unpolled for more
  than ``2 * INTERVAL + TAKEOVER`` (its first poll on the new owner comes
  within one interval, its spread offset, of the takeover).
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import pytest
import yaml

from connector import messages
from tests.cluster import free_port
from tests.conftest import AMQP_URL, settings_text
from tests.integration.daemons import TwistdDaemon
from tests.integration.support import declare_check_queue
from tests.integration.test_poller import PROFILES
from tests.integration.test_poller_alarm import device_names, inventory, take

pytestmark = pytest.mark.integration

INTERVAL = 1.0
HEARTBEAT = 2.0
PARTITIONS = 16
#: From the kill (or stop) to the token on the survivor: at once for a closed
#: connection, at most two heartbeats for a silent one; plus the 0.2 s the
#: holder gathers a burst of tokens and up to one interval to the first poll.
TAKEOVER = 2 * HEARTBEAT + INTERVAL
#: The longest a device may go unpolled across a takeover.
MAX_GAP = 2 * INTERVAL + TAKEOVER


def _setup(tmp_path: Path, prefix: str, agents, node: str, url: str = AMQP_URL,
           **bus: str) -> tuple[Path, int]:
    folder = tmp_path / node
    folder.mkdir()
    (folder / "inventory.yaml").write_text(yaml.safe_dump({"devices": inventory(agents)}))
    (folder / "credentials.yaml").write_text(yaml.safe_dump(
        {"default": {"version": "v2c", "community": "public"}}))
    port = free_port()
    path = folder / "settings.ini"
    path.write_text(settings_text(
        prefix, folder, url=url,
        bus={"heartbeat": f"{HEARTBEAT:g}s", "partitions": str(PARTITIONS),
             "balance_interval": "1s", **bus},
        connector={"http_port": str(port), "node": node},
        inventory={"path": "inventory.yaml", "port_column": "port", "reload_interval": "0"},
        snmp={"profiles": PROFILES, "credentials": "credentials.yaml",
              "interval": f"{INTERVAL:g}s", "timeout": "0.5s", "retries": "0"}))
    return path, port


class Samples:
    """Every ``perf`` read back: (host, node, ts)."""

    def __init__(self, queue: str, url: str = AMQP_URL) -> None:
        self.queue = queue
        self.url = url
        self.rows: list[tuple[str, str, float]] = []

    def read(self) -> None:
        for body in take(self.url, self.queue, longest=1.0):
            m = messages.decode(body)
            self.rows.append((m.host, m.source.split("@", 1)[1], m.ts))

    def read_until(self, predicate, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        self.read()
        while not predicate():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            self.read()

    def pollers(self, start: float, end: float) -> dict[str, set[str]]:
        """Device -> the nodes that polled it between ``start`` and ``end``."""
        out: dict[str, set[str]] = {}
        for host, node, ts in self.rows:
            if start <= ts <= end:
                out.setdefault(host, set()).add(node)
        return out

    def first_by(self, node: str, after: float) -> dict[str, float]:
        """Device -> its first poll by ``node`` after ``after``."""
        out: dict[str, float] = {}
        for host, n, ts in self.rows:
            if n == node and ts > after:
                out[host] = min(ts, out.get(host, ts))
        return out

    def longest_gaps(self, after: float) -> dict[str, float]:
        """Device -> its longest time without a poll (by anyone) from ``after`` on."""
        gaps: dict[str, float] = {}
        by_host: dict[str, list[float]] = {}
        for host, _node, ts in self.rows:
            if ts >= after:
                by_host.setdefault(host, []).append(ts)
        for host, ts in by_host.items():
            ts.sort()
            gaps[host] = max((b - a for a, b in itertools.pairwise(ts)), default=0.0)
        return gaps


def _owned(daemon: TwistdDaemon) -> set[int] | None:
    _, body = daemon.health()
    owned = body.get("ownership", {}).get("snmp", {}).get("owned")
    return set(owned) if owned is not None else None


def _wait_balanced(alpha: TwistdDaemon, beta: TwistdDaemon, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        for d in (alpha, beta):
            assert d.alive(), d.logs()[-3000:]
        a, b = _owned(alpha), _owned(beta)
        if a is not None and b is not None and len(a) == len(b) == PARTITIONS // 2 \
                and a | b == set(range(PARTITIONS)):
            return
        assert time.monotonic() < deadline, f"not balanced: alpha {a}, beta {b}"
        time.sleep(0.1)


def _shared_then_taken_over(snmpd_agents, tmp_path, prefix, end) -> float:
    """Both up and balanced, then ``end(beta)``: returns the takeover time (s)."""
    devices = device_names(snmpd_agents)
    samples = Samples(declare_check_queue(prefix, "perf"))
    a_path, a_port = _setup(tmp_path, prefix, snmpd_agents, "alpha")
    b_path, b_port = _setup(tmp_path, prefix, snmpd_agents, "beta")
    alpha = TwistdDaemon("centaure-snmp", a_path, http_port=a_port)
    beta = TwistdDaemon("centaure-snmp", b_path, http_port=b_port)
    try:
        _wait_balanced(alpha, beta)
        balanced = time.time()
        # Three polling rounds once balanced: each device polled by one node only.
        samples.read_until(lambda: time.time() > balanced + 3 * INTERVAL + 1, 15,
                           "three polling rounds")
        shared = samples.pollers(balanced, balanced + 3 * INTERVAL)
        assert sorted(shared) == devices, f"devices not polled: {set(devices) - set(shared)}"
        twice = {d: nodes for d, nodes in shared.items() if len(nodes) > 1}
        assert not twice, f"polled by both nodes: {twice}"
        by_node = {n: sorted(d for d, nodes in shared.items() if n in nodes)
                   for n in ("alpha", "beta")}
        assert by_node["alpha"] and by_node["beta"], by_node
        assert alpha.health()[1]["connectors"]["snmp"]["devices"] == len(by_node["alpha"])
        assert beta.health()[1]["connectors"]["snmp"]["devices"] == len(by_node["beta"])

        ended = time.time()
        end(beta)
        samples.read_until(lambda: set(samples.first_by("alpha", ended)) == set(devices),
                           TAKEOVER + 10, "alpha to poll every device")
        firsts = samples.first_by("alpha", ended)
        takeover = max(firsts[d] for d in by_node["beta"]) - ended
        # A few more rounds, to see every device keep its interval on alpha.
        samples.read_until(lambda: time.time() > ended + TAKEOVER + 3 * INTERVAL, 30,
                           "more rounds")
        owned = _owned(alpha)
        log = alpha.logs()
    finally:
        alpha.stop()
        beta.stop()

    print(f"takeover {takeover:.2f}s for {len(by_node['beta'])} devices; "
          f"alpha {len(by_node['alpha'])}, beta {len(by_node['beta'])} before")
    assert takeover <= TAKEOVER, f"takeover took {takeover:.1f}s"
    gaps = {d: round(g, 1) for d, g in samples.longest_gaps(balanced).items() if g > MAX_GAP}
    assert not gaps, f"devices unpolled for more than {MAX_GAP}s: {gaps}"
    assert owned == set(range(PARTITIONS))
    assert "still running after" not in log, "a poll was skipped (overrun)"
    return takeover


def test_two_pollers_share_the_fleet_and_one_takes_over_after_kill_9(snmpd_agents, tmp_path,
                                                                     prefix):
    _shared_then_taken_over(snmpd_agents, tmp_path, prefix, TwistdDaemon.kill)


def test_a_stopped_poller_hands_its_devices_on(snmpd_agents, tmp_path, prefix):
    _shared_then_taken_over(snmpd_agents, tmp_path, prefix, TwistdDaemon.stop)
