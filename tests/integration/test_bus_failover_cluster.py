"""Failover of the product's publisher across a real 3-node RabbitMQ cluster.

The bus lists the three nodes in ``[bus] url`` (heartbeat 5 s) and publishes
sequence-numbered messages into a quorum queue whose leader is on the node
it connects to first, from 2 s before the fault until 2 s after it is over
(the node back in the cluster): while that node is killed (-9) and started
again, frozen (SIGSTOP) for 15 s (three heartbeats), or while every node is
restarted in turn. Then the queue is read back: every message must be there,
first arrivals in publish order. Duplicates are counted: a message in flight when a connection drops
goes back to the on-disk buffer and is published again, even if the broker
had stored it before the drop (at-least-once).
"""

from __future__ import annotations

import os
import signal
import time

import pika
import pytest
import pytest_twisted
from twisted.internet import defer, reactor, threads
from twisted.logger import globalLogPublisher

from tests.conftest import settings_text
from tests.integration.support import perf, seq_of, settle, sleep, start_bus, wait_until

pytestmark = pytest.mark.integration

HEARTBEAT = 5.0
#: Three heartbeats: the bus must leave the node and stay away while it is frozen.
FREEZE = 15.0
#: Publishing goes on this long before the fault and after it is over.
MARGIN = 2.0


def _settings(tmp_path, prefix: str, cluster) -> str:
    path = tmp_path / "settings.ini"
    path.write_text(settings_text(prefix, tmp_path, url=",".join(cluster.urls), bus={
        "heartbeat": f"{HEARTBEAT:g}s", "connect_timeout": "3s", "confirm_timeout": "5s",
        "queue_type": "quorum", "backoff_initial": "0.2s", "backoff_max": "2s"}))
    return str(path)


def _channel(cluster):
    """A pika channel on the first node that answers."""
    last = None
    for node in cluster.nodes:
        if node.frozen:
            continue
        try:
            conn = pika.BlockingConnection(pika.URLParameters(node.url))
            return conn, conn.channel()
        except pika.exceptions.AMQPError as e:
            last = e
    raise AssertionError(f"no cluster node accepts connections: {last}")


def _declare_quorum_queue(cluster, prefix: str) -> str:
    """A quorum queue on every node, its leader on node 1, bound to the perf exchange."""
    name = f"{prefix}.check"
    conn = pika.BlockingConnection(pika.URLParameters(cluster.nodes[0].url))
    ch = conn.channel()
    ch.exchange_declare(exchange=f"{prefix}.perf", exchange_type="topic", durable=True)
    ch.queue_declare(queue=name, durable=True, arguments={
        "x-queue-type": "quorum", "x-queue-leader-locator": "client-local"})
    ch.queue_bind(queue=name, exchange=f"{prefix}.perf", routing_key="#")
    conn.close()
    return name


def _drain(cluster, queue: str, want: int, timeout: float = 120) -> list[int]:
    """The sequence numbers in ``queue``, in delivery order (acked): at least ``want`` of
    them, until the queue has none left ready."""
    conn, ch = _channel(cluster)
    ch.basic_qos(prefetch_count=1000)
    seqs: list[int] = []
    deadline = time.monotonic() + timeout
    try:
        for method, _props, body in ch.consume(queue, inactivity_timeout=0.5):
            if method is None:
                if time.monotonic() > deadline:
                    break
                if len(seqs) >= want and ch.queue_declare(
                        queue=queue, passive=True).method.message_count == 0:
                    break
                continue
            seqs.append(seq_of(body))
            ch.basic_ack(method.delivery_tag, multiple=False)
        ch.cancel()
        ch.queue_delete(queue=queue)
        ch.exchange_delete(exchange=f"{queue.rsplit('.', 1)[0]}.perf")
    finally:
        conn.close()
    return seqs


async def _publish_until(publisher, done: defer.Deferred, rate: float) -> list[defer.Deferred]:
    """Publish perf messages 0, 1, 2... at about ``rate`` per second until ``MARGIN`` s
    after ``done`` fired; return their Deferreds."""
    over_at: list[float] = []
    done.addBoth(lambda result: over_at.append(time.monotonic()) or result)
    ds: list[defer.Deferred] = []
    chunk = max(1, int(rate / 50))
    t0 = time.monotonic()
    while not over_at or time.monotonic() < over_at[0] + MARGIN:
        for _ in range(chunk):
            ds.append(publisher.publish(perf(len(ds))))
        await sleep(max(len(ds) / rate - (time.monotonic() - t0), 0))
    return ds


async def _publish_through(cluster, tmp_path, prefix, fault, rate: float) -> tuple[object, list[int]]:
    queue = _declare_quorum_queue(cluster, prefix)
    # Tracebacks logged meanwhile (the reconnection machinery must log one line per event).
    failures: list[str] = []

    def observe(event) -> None:
        if "log_failure" in event:
            failures.append(event["log_failure"].getTraceback())

    globalLogPublisher.addObserver(observe)
    bus = await start_bus(_settings(tmp_path, prefix, cluster))
    try:
        assert bus.connection.broker.port == cluster.nodes[0].port
        faulted = defer.Deferred()
        publishing = defer.ensureDeferred(_publish_until(bus.publisher("test"), faulted, rate))
        await sleep(MARGIN)
        try:
            await fault(bus)
        finally:
            faulted.callback(None)
        ds = await publishing
        results = await defer.DeferredList(ds, consumeErrors=True)
        failed = [r for ok, r in results if not ok]
        assert not failed, f"{len(failed)} publish(es) were not accepted: {failed[0]}"
        await settle(bus, timeout=150)
    finally:
        await bus.stopService()
        globalLogPublisher.removeObserver(observe)
    assert not failures, f"{len(failures)} traceback(s) logged, the first:\n{failures[0]}"
    n = len(ds)
    seqs = await threads.deferToThread(_drain, cluster, queue, n)
    missing = sorted(set(range(n)) - set(seqs))
    assert not missing, f"{len(missing)} message(s) lost of {n}, e.g. {missing[:10]}"
    return bus, seqs


def _first_arrivals_out_of_order(seqs: list[int]) -> list[tuple[int, int]]:
    """Pairs of consecutive first arrivals where the second was published before the first."""
    first = list(dict.fromkeys(seqs))
    return [(a, b) for a, b in zip(first, first[1:]) if b < a]


def _assert_publish_order(seqs: list[int]) -> None:
    """First arrivals in publish order (copies sent again after a fault aside)."""
    out_of_order = _first_arrivals_out_of_order(seqs)
    assert not out_of_order, f"first arrivals out of order, e.g. {out_of_order[:3]}"


async def _failed_over_from(bus, node, t0: float | None = None) -> float:
    """Seconds from ``t0`` (the fault; default now) until the bus is on another node."""
    t0 = reactor.seconds() if t0 is None else t0
    await wait_until(lambda: bus.connected and bus.connection.broker.port != node.port
                     and bus.connection.connected_at > t0, 60,
                     f"the bus to leave {node.name}")
    return bus.connection.connected_at - t0


async def _restart(cluster, node) -> None:
    """Start ``node`` again and wait until the cluster runs all three nodes."""
    await threads.deferToThread(node.start)
    await threads.deferToThread(node.wait_up)
    await threads.deferToThread(cluster.wait_running)


@pytest_twisted.ensureDeferred
async def test_connected_node_killed(rabbit_cluster, tmp_path, prefix):
    node = rabbit_cluster.nodes[0]
    took = []

    async def fault(bus):
        node_pid = node.vm_pid
        os.kill(node_pid, signal.SIGKILL)
        took.append(await _failed_over_from(bus, node))
        await threads.deferToThread(node.proc.wait, 30)
        await _restart(rabbit_cluster, node)

    bus, seqs = await _publish_through(rabbit_cluster, tmp_path, prefix, fault, rate=1000)
    print(f"failover {took[0]:.2f}s, {len(seqs)} messages read, "
          f"{len(seqs) - len(set(seqs))} duplicate(s)")
    assert took[0] <= 2 * HEARTBEAT, f"failover took {took[0]:.1f}s"
    # Every copy beyond the first is a message in flight at the kill, sent again.
    assert len(seqs) - len(set(seqs)) <= \
        bus.publisher("test").max_in_flight * bus.connection.suspected
    # The new node nacks until the queue has a leader again: still publish order.
    _assert_publish_order(seqs)


@pytest_twisted.ensureDeferred
async def test_connected_node_frozen_for_15_seconds(rabbit_cluster, tmp_path, prefix):
    node = rabbit_cluster.nodes[0]
    took = []

    async def fault(bus):
        node.freeze()
        try:
            took.append(await _failed_over_from(bus, node))
            # The frozen node is never the one the bus stays on meanwhile.
            await sleep(FREEZE - took[0])
            assert bus.connection.broker is None or bus.connection.broker.port != node.port
        finally:
            node.thaw()
        await threads.deferToThread(rabbit_cluster.wait_running)

    bus, seqs = await _publish_through(rabbit_cluster, tmp_path, prefix, fault, rate=1000)
    print(f"failover {took[0]:.2f}s, {len(seqs)} messages read, "
          f"{len(seqs) - len(set(seqs))} duplicate(s)")
    assert took[0] <= 2 * HEARTBEAT, f"failover took {took[0]:.1f}s"
    assert len(seqs) - len(set(seqs)) <= \
        bus.publisher("test").max_in_flight * bus.connection.suspected
    _assert_publish_order(seqs)


@pytest_twisted.ensureDeferred
async def test_rolling_restart_of_every_node(rabbit_cluster, tmp_path, prefix):
    took = []

    async def fault(bus):
        for node in rabbit_cluster.nodes:
            # As an operator would: stop a node only while its queues keep a quorum without it.
            await threads.deferToThread(_wait_not_quorum_critical, node)
            connected_here = bus.connected and bus.connection.broker.port == node.port
            t0 = reactor.seconds()
            await threads.deferToThread(node.stop)
            if connected_here:
                took.append(await _failed_over_from(bus, node, t0))
            await _restart(rabbit_cluster, node)

    bus, seqs = await _publish_through(rabbit_cluster, tmp_path, prefix, fault, rate=400)
    print(f"failovers {[round(t, 2) for t in took]}s, {len(seqs)} messages read, "
          f"{len(seqs) - len(set(seqs))} duplicate(s)")
    assert took, "the bus was never on a node being restarted"
    assert max(took) <= 2 * HEARTBEAT, f"failovers took {took}"
    assert len(seqs) - len(set(seqs)) <= \
        bus.publisher("test").max_in_flight * bus.connection.suspected
    _assert_publish_order(seqs)


def _wait_not_quorum_critical(node, timeout: float = 120) -> None:
    import subprocess

    deadline = time.monotonic() + timeout
    while True:
        r = subprocess.run(["rabbitmq-queues", "-q", "-n", node.name,
                            "check_if_node_is_quorum_critical"], capture_output=True, text=True,
                           timeout=60)
        if r.returncode == 0:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{node.name} still quorum-critical: {r.stdout}{r.stderr}")
        time.sleep(1)
