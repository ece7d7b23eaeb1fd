"""The embedded bus tells its consumers' dead letters in one line, and the rest at stop.

Malformed messages routed to two connectors' queues are one warning line at
once for both consumers, then nothing until 10 s have passed; what was not
told yet is told when the bus stops (the process is going away), counted in
the bus counters the process serves on /metrics. The bus runs on a test clock.
"""

from __future__ import annotations

import pytest
from twisted.internet import task
from twisted.logger import LogLevel, formatEvent, globalLogPublisher

from connector.embedded import EmbeddedBus
from connector.metrics import Counters
from connector.topology import connector_queue


@pytest.fixture
def warnings():
    """The consumers' warning lines while the test runs."""
    lines: list[str] = []

    def observer(event: dict) -> None:
        if event.get("log_level") == LogLevel.warn and \
                event.get("log_namespace", "").startswith("connector.consumer"):
            lines.append(formatEvent(event))

    globalLogPublisher.addObserver(observer)
    yield lines
    globalLogPublisher.removeObserver(observer)


class Handler:
    def handle(self, message, delivery):
        raise AssertionError("a malformed message reached the handler")


def test_dead_letters_of_every_consumer_share_one_line_told_at_stop(warnings):
    clock, counters = task.Clock(), Counters("bus")
    bus = EmbeddedBus(clock, counters=counters)
    bus.startService()
    bus.subscriber("db").subscribe(connector_queue("centaure", "db"), Handler())
    bus.subscriber("alerter").subscribe(connector_queue("centaure", "alerter"), Handler())
    publisher = bus.publisher("snmp")
    for i in range(5):  # each to both queues
        publisher.publish_raw("centaure.perf", f"perf.h{i}", b"not json", {})
        clock.advance(0)
    clock.advance(0)
    assert len(bus.queues["centaure.dead"].ready) == 10
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith("messages dead-lettered: 1 invalid (totals: invalid 1)")
    clock.advance(5)
    assert len(warnings) == 1
    bus.stopService()
    assert len(warnings) == 2, warnings
    assert warnings[1].startswith("messages dead-lettered: 9 invalid (totals: invalid 10)")
    assert counters.get("invalid") == 10
    clock.advance(60)
    assert len(warnings) == 2  # nothing left to tell, nothing scheduled
