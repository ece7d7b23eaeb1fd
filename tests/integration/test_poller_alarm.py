"""The poller keeps its schedule while the broker is under a memory alarm.

``twistd centaure-snmp`` polls four devices (one real snmpd, told apart by
name) every 2 s while RabbitMQ blocks publishers for 10 s. Read back from the
queue afterwards, each device's samples have no gap above 1.5 intervals: no
poll was skipped, and every sample taken during the alarm was delivered (from
the publisher's buffer) once it ended. The alarm is always lifted
(``broker_guard``).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from connector import messages
from tests.conftest import rabbitmqctl
from tests.integration.daemons import TwistdDaemon
from tests.integration.support import declare_check_queue, drain
from tests.integration.test_poller import write_setup

pytestmark = pytest.mark.integration

DEVICES = [f"dev{i}" for i in range(1, 5)]
INTERVAL = 2.0
ALARM = 10.0


def _read(queue: str, samples: dict[str, set[float]]) -> None:
    """Add the ``perf`` timestamps waiting in ``queue`` (duplicates collapse)."""
    for body, _ in drain(queue, idle=0.5):
        m = messages.decode(body)
        samples.setdefault(m.host, set()).add(m.ts)


def _read_until(queue: str, samples: dict[str, set[float]], after: float, timeout: float) -> None:
    """Read until every device has a sample taken after ``after``."""
    deadline = time.monotonic() + timeout
    while not all(max(samples.get(d, {0.0})) > after for d in DEVICES):
        assert time.monotonic() < deadline, \
            f"no sample after {after:.0f} from every device: " \
            f"{ {d: max(samples.get(d, {0.0})) for d in DEVICES} }"
        _read(queue, samples)


def test_no_poll_missed_during_a_memory_alarm(snmpd_agent, tmp_path, prefix, broker_guard):
    queue = declare_check_queue(prefix, "perf")
    settings = write_setup(tmp_path, prefix, [
        {"name": name, "address": "127.0.0.1", "port": snmpd_agent.port, "device_type": "server"}
        for name in DEVICES], interval=f"{INTERVAL:g}s")
    daemon = TwistdDaemon("centaure-snmp", Path(settings))
    samples: dict[str, set[float]] = {}
    try:
        _read_until(queue, samples, 0.0, 60)
        rabbitmqctl("set_vm_memory_high_watermark", "0.000001")
        alarm_on = time.time()
        try:
            daemon.wait_log("broker blocked publishing", timeout=30)
            time.sleep(max(0.0, alarm_on + ALARM - time.time()))
        finally:
            rabbitmqctl("set_vm_memory_high_watermark", "0.4")
        alarm_off = time.time()
        daemon.wait_log("broker unblocked publishing", timeout=30)
        _read_until(queue, samples, alarm_off + 2 * INTERVAL, 60)
        log = daemon.logs()
    finally:
        daemon.stop()

    for name in DEVICES:
        ts = sorted(t for t in samples[name] if t >= alarm_on - 2 * INTERVAL)
        gaps = [(round(a - alarm_on, 1), round(b - a, 1)) for a, b in zip(ts, ts[1:])
                if b - a > 1.5 * INTERVAL]
        assert not gaps, f"{name}: samples missing (seconds after the alarm, gap): {gaps}"
        during = [t for t in ts if alarm_on <= t <= alarm_off]
        assert len(during) >= ALARM / INTERVAL - 1, f"{name}: {len(during)} samples during the alarm"
    assert "still running after" not in log, "a poll was skipped (overrun)"
