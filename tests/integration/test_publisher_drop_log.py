"""``twistd centaure-traps`` with its broker unreachable and a 10-message buffer refusing the
newest: thousands of messages refused, told by one warning line every 10 s at most (the
publisher's, and the status heartbeats'), never a line per batch; the daemon keeps running.
"""

from __future__ import annotations

import re
import socket
import time
import urllib.request
from datetime import datetime

import pytest

from tests.conftest import AMQP_URL
from tests.integration.test_traps_journal import blast, make_daemon

pytestmark = pytest.mark.integration

PUBLISHER_LINE = "messages dropped by the publisher buffer"
STATUS_LINE = "status heartbeats dropped (connector traps, max_messages reached)"


def closed_port() -> int:
    """A TCP port on loopback that nothing listens on."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def bus_metrics(http_port: int) -> dict[str, float]:
    """The bus's numbers on /metrics (the publisher counts there)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("#") or 'connector="bus"' not in line:
            continue
        name, _, value = line.rpartition(" ")
        out[name.split("{")[0].removeprefix("centaure_").removesuffix("_total")] = float(value)
    return out


def lines_with(logs: str, text: str) -> list[tuple[datetime, str]]:
    """(time, line) of the log lines holding ``text``; twistd stamps them to the second."""
    return [(datetime.strptime(line[:24], "%Y-%m-%dT%H:%M:%S%z"), line)
            for line in logs.splitlines() if text in line]


def assert_one_per_10_s(lines: list[tuple[datetime, str]]) -> None:
    # The log's stamps are cut to the second: 10 s apart can read 9.
    for (before, _), (after, line) in zip(lines, lines[1:]):
        assert (after - before).total_seconds() >= 9, line


def test_refusals_under_an_outage_are_logged_once_per_10_s(tmp_path, prefix):
    url = AMQP_URL.replace("127.0.0.1:5672", f"127.0.0.1:{closed_port()}")
    daemon, port, http_port = make_daemon(
        tmp_path, prefix, url=url, buffer={"max_messages": "10", "policy": "refuse_newest"})
    try:
        blast(port, range(2_000), rate=4_000)
        # The trap processing publishes, is refused, reads its journal again every
        # second and is refused again; heartbeats every second are refused too.
        deadline = time.monotonic() + 60
        while len(lines_with(daemon.logs(), PUBLISHER_LINE)) < 2:
            assert daemon.alive(), daemon.logs()[-3000:]
            assert time.monotonic() < deadline, daemon.logs()[-3000:]
            time.sleep(0.2)
        m = bus_metrics(http_port)
        logs = daemon.logs()
        told = lines_with(logs, PUBLISHER_LINE)
        print(f"{len(told)} lines for {m['dropped_refused']:.0f} messages refused")
        assert m["dropped_refused"] >= 2_000, m
        assert m["dropped"] == m["dropped_refused"]
        assert_one_per_10_s(told)
        assert "(policy refuse_newest, max_messages=10 reached): " in told[0][1]
        assert re.search(r"\): \d+ refused \(totals: dropped_refused \d+\); next report in 10 s",
                         told[1][1]), told[1][1]
        heartbeats = lines_with(logs, STATUS_LINE)
        assert heartbeats, logs[-3000:]
        assert_one_per_10_s(heartbeats)
        # No other line about the full buffer (there was one per batch).
        assert "[connector.buffer#warn]" not in logs
        assert logs.count("[connector.publisher.ReliablePublisher#warn]") == len(told)
        assert daemon.alive()
        status, body = daemon.health()
        assert body.get("process") == "traps", (status, body)
        refused_before_stop = bus_metrics(http_port)["dropped_refused"]
    finally:
        daemon.stop()
    # The counts not told yet are told as the daemon stops: the last line's total is at
    # least what /metrics counted just before, and every refusal is in some line.
    logs = daemon.logs()
    told = [line for _, line in lines_with(logs, PUBLISHER_LINE)]
    total = int(re.search(r"totals: dropped_refused (\d+)", told[-1])[1])
    assert total >= refused_before_stop
    assert sum(int(re.search(r"\): (\d+) refused", line)[1]) for line in told) == total
    assert logs.index(told[-1]) > logs.index("Received SIGTERM")
