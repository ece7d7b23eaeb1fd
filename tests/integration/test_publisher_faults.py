"""The publisher against a real RabbitMQ that fails in every way it can.

Each test publishes 20,000 messages while the broker misbehaves, then reads
the queue back: every message must be there, first arrivals in publish
order. Broker settings changed by a test are restored even when it fails.
"""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import defer

from tests.integration.support import (
    assert_all_in_order, ctl, declare_check_queue, drain, publish_paced, seq_of, settle, sleep,
    start_bus, wait_until)

N = 20_000
pytestmark = pytest.mark.integration


async def _publish_through(bus, queue, fault, rate=4000):
    publisher = bus.publisher("test")
    publishing = defer.ensureDeferred(publish_paced(publisher, N, rate))
    await fault()
    ds = await publishing
    results = await defer.DeferredList(ds, consumeErrors=True)
    failed = [r for ok, r in results if not ok]
    assert not failed, f"{len(failed)} publish(es) were not accepted: {failed[0]}"
    await settle(bus)
    seqs = [seq_of(body) for body, _ in drain(queue)]
    assert_all_in_order(seqs, N)
    return seqs


@pytest_twisted.ensureDeferred
async def test_server_closes_all_connections_twice(prefix, write_settings, broker_guard):
    queue = declare_check_queue(prefix)
    bus = await start_bus(write_settings())

    async def fault():
        for _ in range(2):
            await sleep(1.0)
            before = bus.connection.connections
            await ctl("close_all_connections", "centaure test: connection closed by test")
            await wait_until(lambda: bus.connection.connections > before and bus.connected, 30,
                             "reconnection")

    try:
        await _publish_through(bus, queue, fault)
        assert bus.connection.connections >= 3
        assert bus.counters.get("spilled") + bus.counters.get("messages_buffered") > 0
    finally:
        await bus.stopService()


@pytest_twisted.ensureDeferred
async def test_broker_app_stopped_for_ten_seconds(prefix, write_settings, broker_guard):
    queue = declare_check_queue(prefix)
    bus = await start_bus(write_settings())

    async def fault():
        await sleep(1.0)
        await ctl("stop_app")
        await sleep(2.0)
        await wait_until(lambda: not bus.connected, 30, "the bus to see the broker gone")
        await wait_until(lambda: bus.health()["degraded"], 30, "/health to say degraded")
        await sleep(8.0)
        await ctl("start_app")
        await wait_until(lambda: bus.connected, 60, "reconnection after start_app")

    try:
        await _publish_through(bus, queue, fault, rate=2000)
        assert bus.counters.get("messages_buffered") > 0, "nothing went through the buffer"
    finally:
        await bus.stopService()


@pytest_twisted.ensureDeferred
async def test_memory_alarm_blocks_publishers(prefix, write_settings, broker_guard):
    queue = declare_check_queue(prefix)
    bus = await start_bus(write_settings())
    seen_blocked = []

    async def fault():
        await sleep(1.0)
        await ctl("set_vm_memory_high_watermark", "0.000001")
        await wait_until(lambda: bus.health()["blocked"], 30, "connection.blocked from the broker")
        seen_blocked.append(bus.health())
        await sleep(3.0)
        await ctl("set_vm_memory_high_watermark", "0.4")
        await wait_until(lambda: not bus.health()["blocked"], 30, "connection.unblocked")

    try:
        await _publish_through(bus, queue, fault)
        assert seen_blocked and seen_blocked[0]["degraded"]
        assert bus.counters.get("blocked") >= 1
    finally:
        await bus.stopService()


@pytest_twisted.ensureDeferred
async def test_failover_to_second_broker(prefix, tmp_path, write_settings):
    queue = declare_check_queue(prefix)
    url = "amqp://guest:guest@127.0.0.1:1/%2F, amqp://guest:guest@127.0.0.1:5672/%2F"
    bus = await start_bus(write_settings(bus={"url": url}))
    try:
        assert bus.connection.broker.port == 5672
        ds = await publish_paced(bus.publisher("test"), 1000, 10_000)
        await defer.gatherResults(ds)
        await settle(bus)
        assert_all_in_order([seq_of(b) for b, _ in drain(queue)], 1000)
    finally:
        await bus.stopService()
