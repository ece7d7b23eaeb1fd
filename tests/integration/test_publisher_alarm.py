"""A publish never waits on a broker under a memory alarm.

Messages are published in bursts while the broker's memory alarm goes on:
the burst that meets the alarm leaves messages sent and unconfirmed (the
broker stops reading the connection), and every later one is published while
the broker is blocked. Every publish completes at once all the same; a
durable one within about ``confirm_timeout``; all are delivered once the alarm
ends. The alarm lasts a few seconds and is always lifted (``broker_guard``).
"""

from __future__ import annotations

import time

import pytest
import pytest_twisted
from twisted.internet import defer

from tests.integration.support import (
    assert_all_in_order, ctl, declare_check_queue, drain, perf, seq_of, settle, sleep, start_bus,
    wait_until)

pytestmark = pytest.mark.integration

BURST = 50
ALARM = 5.0          # seconds the broker stays blocked
CONFIRM_TIMEOUT = 1.0


@pytest_twisted.ensureDeferred
async def test_publish_completes_while_the_broker_is_blocked(prefix, write_settings, broker_guard):
    queue = declare_check_queue(prefix)
    bus = await start_bus(write_settings(bus={"confirm_timeout": f"{CONFIRM_TIMEOUT}s"}))
    publisher = bus.publisher("test")
    held: dict[int, float] = {}      # seq -> seconds its publish took
    durable: dict[int, float] = {}
    pending: list[defer.Deferred] = []
    n = 0

    def burst() -> None:
        # One reactor turn: the broker's connection.blocked cannot come in between.
        nonlocal n
        for _ in range(BURST):
            t0, i, is_durable = time.monotonic(), n, n % 5 == 0
            d = publisher.publish(perf(i), durable=is_durable)
            took = durable if is_durable else held
            d.addCallback(lambda _, i=i, t0=t0, took=took: took.__setitem__(
                i, time.monotonic() - t0))
            pending.append(d)
            n += 1

    connections = bus.connection.connections
    try:
        burst()
        await settle(bus)
        await ctl("set_vm_memory_high_watermark", "0.000001")
        alarm_on = time.monotonic()
        try:
            while not bus.health()["blocked"]:
                assert time.monotonic() - alarm_on < 30, "no connection.blocked from the broker"
                burst()
                await sleep(0.1)
            while time.monotonic() - alarm_on < ALARM:
                burst()
                await sleep(0.1)
            saved = bus.counters.get("saved_in_flight")
        finally:
            await ctl("set_vm_memory_high_watermark", "0.4")
        alarm_off = time.monotonic()
        await wait_until(lambda: not bus.health()["blocked"], 30, "connection.unblocked")
        burst()
        await defer.DeferredList(pending, fireOnOneErrback=True, consumeErrors=True)
        await settle(bus)
        seqs = [seq_of(body) for body, _ in drain(queue)]
    finally:
        await bus.stopService()

    assert len(held) + len(durable) == n
    slowest = max(held.values())
    assert slowest < 1.0, f"a publish took {slowest:.1f}s while the broker was blocked"
    slowest = max(durable.values())
    assert slowest < CONFIRM_TIMEOUT + 2.5 < alarm_off - alarm_on, \
        f"a durable publish took {slowest:.1f}s"
    assert saved >= 1, "no message was in flight when the broker blocked"
    assert_all_in_order(seqs, n)
    if bus.connection.connections == connections:
        # The connection outlived the alarm: the messages it held unconfirmed were
        # confirmed by the broker once unblocked, and their saved rows deleted.
        assert len(seqs) == n, f"{len(seqs) - n} duplicate(s) without a reconnection"
