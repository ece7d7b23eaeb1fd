"""The poller keeps its schedule while the broker is under a memory alarm.

``twistd centaure-snmp`` polls twenty devices (twenty real snmpd agents, one
per device, on distinct ports) every 2 s while RabbitMQ blocks publishers for
12 s (six intervals, longer than two AMQP heartbeats and than the confirm
timeout, 5 s each). Read back from the queue afterwards, each device's samples
have no gap above 1.5 intervals: no poll was skipped, and every sample taken
during the alarm was delivered (from the publisher's buffer) once it ended. The
alarm is always lifted (``broker_guard``).
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import pika
import pytest

from connector import messages
from tests.conftest import AMQP_URL, rabbitmqctl
from tests.integration.daemons import TwistdDaemon
from tests.integration.support import declare_check_queue
from tests.integration.test_poller import write_setup

pytestmark = pytest.mark.integration

INTERVAL = 2.0
#: Six intervals; more than two heartbeats and the confirm timeout of ``settings_text``.
ALARM = 12.0


def device_names(agents) -> list[str]:
    return [f"dev{i:02d}" for i in range(1, len(agents) + 1)]


def inventory(agents) -> list[dict]:
    """One inventory device per agent, each polled on its own agent's port."""
    return [{"name": name, "address": "127.0.0.1", "port": agent.port, "device_type": "server"}
            for name, agent in zip(device_names(agents), agents)]


def take(url: str, queue: str, longest: float = 1.0) -> list[bytes]:
    """The bodies waiting in ``queue`` (acked): until it is idle for 0.5 s or for at most
    ``longest`` seconds, since twenty devices keep it from ever being idle for long."""
    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        ch = conn.channel()
        ch.basic_qos(prefetch_count=500)
        out: list[bytes] = []
        stop = time.monotonic() + longest
        for method, _props, body in ch.consume(queue, inactivity_timeout=0.5):
            if method is None:
                break
            out.append(body)
            ch.basic_ack(method.delivery_tag)
            if time.monotonic() > stop:
                break
        ch.cancel()
    finally:
        conn.close()
    return out


def add_samples(bodies, samples: dict[str, set[float]]) -> int:
    """Add the ``perf`` timestamps of ``bodies`` to ``samples``; return how many were already there."""
    duplicates = 0
    for body in bodies:
        m = messages.decode(body)
        seen = samples.setdefault(m.host, set())
        duplicates += m.ts in seen
        seen.add(m.ts)
    return duplicates


def read_until(read, devices: list[str], samples: dict[str, set[float]], after: float,
               timeout: float) -> None:
    """Call ``read`` until every device has a sample taken after ``after``."""
    deadline = time.monotonic() + timeout
    while not all(max(samples.get(d, {0.0})) > after for d in devices):
        assert time.monotonic() < deadline, \
            f"no sample after {after:.0f} from every device: " \
            f"{ {d: round(max(samples.get(d, {0.0})) - after, 1) for d in devices} }"
        read()


def assert_no_poll_missed(devices: list[str], samples: dict[str, set[float]], fault_on: float,
                          fault_off: float) -> None:
    """No gap above 1.5 intervals for any device from just before the fault on, and a
    sample for (nearly) every interval of the fault."""
    for name in devices:
        ts = sorted(t for t in samples[name] if t >= fault_on - 2 * INTERVAL)
        gaps = [(round(a - fault_on, 1), round(b - a, 1)) for a, b in itertools.pairwise(ts)
                if b - a > 1.5 * INTERVAL]
        assert not gaps, f"{name}: samples missing (seconds after the fault, gap): {gaps}"
        during = [t for t in ts if fault_on <= t <= fault_off]
        assert len(during) >= int((fault_off - fault_on) / INTERVAL) - 1, \
            f"{name}: {len(during)} samples in {fault_off - fault_on:.0f}s of fault"


def test_no_poll_missed_during_a_memory_alarm(snmpd_agents, tmp_path, prefix, broker_guard):
    devices = device_names(snmpd_agents)
    queue = declare_check_queue(prefix, "perf")
    settings = write_setup(tmp_path, prefix, inventory(snmpd_agents), interval=f"{INTERVAL:g}s")
    daemon = TwistdDaemon("centaure-snmp", Path(settings))
    samples: dict[str, set[float]] = {}

    def read() -> None:
        add_samples(take(AMQP_URL, queue), samples)

    try:
        read_until(read, devices, samples, 0.0, 60)
        rabbitmqctl("set_vm_memory_high_watermark", "0.000001")
        alarm_on = time.time()
        try:
            daemon.wait_log("broker blocked publishing", timeout=30)
            time.sleep(max(0.0, alarm_on + ALARM - time.time()))
        finally:
            rabbitmqctl("set_vm_memory_high_watermark", "0.4")
        alarm_off = time.time()
        daemon.wait_log("broker unblocked publishing", timeout=30)
        read_until(read, devices, samples, alarm_off + 2 * INTERVAL, 90)
        log = daemon.logs()
    finally:
        daemon.stop()

    assert_no_poll_missed(devices, samples, alarm_on, alarm_off)
    assert "still running after" not in log, "a poll was skipped (overrun)"
