"""Failover time on a 3-node RabbitMQ cluster, and publish rate into quorum vs classic queues.

Starts a throw-away 3-node cluster (``tests/cluster.py``), then:

- failover: the bus (heartbeat 5 s) publishes steadily to node 1; node 1 is
  killed (-9), or frozen (SIGSTOP); the time from the fault to the bus being
  connected to another node, median of 3 of each (the node is brought back
  between runs);
- publish rate with confirms of the product's publisher: 20,000 messages into
  a quorum queue on the cluster and into a classic queue on one node of it;
  beside it, raw pika (``BlockingConnection``, ``confirm_delivery()``, one
  confirm awaited per message) publishing the same messages, with the same
  properties, into the same kind of queue on the same node; median of
  ``--runs`` of each (a fresh queue every run, deleted afterwards).

Usage: .venv/bin/python bench/bench_failover.py [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from connector.reactor import install_asyncio_reactor  # noqa: E402

install_asyncio_reactor()

import pika  # noqa: E402
from twisted.internet import defer, task, threads  # noqa: E402

from connector import messages  # noqa: E402

from tests.cluster import Cluster  # noqa: E402
from tests.conftest import settings_text  # noqa: E402
from tests.integration.support import perf, publish_paced, settle, sleep, start_bus, wait_until  # noqa: E402

HEARTBEAT = 5
N = 20_000


def _settings(tmp: Path, prefix: str, urls: list[str]) -> str:
    path = tmp / f"{prefix}.ini"
    path.write_text(settings_text(prefix, tmp, url=",".join(urls), bus={
        "heartbeat": f"{HEARTBEAT}s", "connect_timeout": "3s", "confirm_timeout": "5s",
        "backoff_initial": "0.2s", "backoff_max": "2s"}))
    return str(path)


def _queue(url: str, prefix: str, kind: str) -> None:
    conn = pika.BlockingConnection(pika.URLParameters(url))
    ch = conn.channel()
    ch.exchange_declare(exchange=f"{prefix}.perf", exchange_type="topic", durable=True)
    ch.queue_declare(queue=f"{prefix}.q", durable=True, arguments={
        "x-queue-type": kind, **({"x-queue-leader-locator": "client-local"} if kind == "quorum" else {})})
    ch.queue_bind(queue=f"{prefix}.q", exchange=f"{prefix}.perf", routing_key="#")
    conn.close()


async def failover(reactor, cluster: Cluster, tmp: Path, how: str, run: int) -> float:
    node = cluster.nodes[0]
    prefix = f"fo{how}{run}"
    _queue(node.url, prefix, "quorum")
    bus = await start_bus(_settings(tmp, prefix, cluster.urls), app_id=prefix)
    publishing = defer.ensureDeferred(publish_paced(bus.publisher(prefix), 4000, 500))
    await sleep(1.0)
    t0 = reactor.seconds()
    if how == "dead":
        node.kill()
    else:
        node.freeze()
    await wait_until(lambda: bus.connected and bus.connection.broker.port != node.port
                     and bus.connection.connected_at > t0, 60, "failover")
    took = bus.connection.connected_at - t0
    if how == "dead":
        await threads.deferToThread(node.start)
        await threads.deferToThread(node.wait_up)
    else:
        node.thaw()
    await threads.deferToThread(cluster.wait_running)
    await publishing
    await settle(bus, timeout=120)
    await bus.stopService()
    return took


def _delete_queue(url: str, prefix: str) -> None:
    conn = pika.BlockingConnection(pika.URLParameters(url))
    ch = conn.channel()
    ch.queue_delete(queue=f"{prefix}.q")
    ch.exchange_delete(exchange=f"{prefix}.perf")
    conn.close()


async def rate(cluster: Cluster, tmp: Path, kind: str, run: int) -> float:
    """The product's publisher: msg/s with confirms, ``N`` messages published at once."""
    prefix = f"rate{kind}{run}"
    _queue(cluster.nodes[0].url, prefix, kind)
    urls = cluster.urls if kind == "quorum" else cluster.urls[:1]
    bus = await start_bus(_settings(tmp, prefix, urls), app_id=prefix)
    publisher = bus.publisher(prefix)
    t0 = time.perf_counter()
    ds = [publisher.publish(perf(i)) for i in range(N)]
    await defer.gatherResults(ds)
    await settle(bus, timeout=120)
    took = time.perf_counter() - t0
    await bus.stopService()
    _delete_queue(cluster.nodes[0].url, prefix)
    return N / took


def raw_pika_rate(cluster: Cluster, kind: str, run: int) -> float:
    """Raw pika to node 1: msg/s with confirms, each ``basic_publish`` awaiting its confirm."""
    prefix = f"raw{kind}{run}"
    url = cluster.nodes[0].url
    _queue(url, prefix, kind)
    bodies = [(messages.encode(m), m) for m in (perf(i) for i in range(N))]
    conn = pika.BlockingConnection(pika.URLParameters(url))
    ch = conn.channel()
    ch.confirm_delivery()
    t0 = time.perf_counter()
    for i, (body, m) in enumerate(bodies):
        ch.basic_publish(f"{prefix}.perf", messages.routing_key(m), body, pika.BasicProperties(
            content_type="application/json", delivery_mode=2, message_id=f"{prefix}-{i}",
            timestamp=int(m.ts), type=m.msg_type, app_id=prefix, user_id="guest"))
    took = time.perf_counter() - t0
    conn.close()
    _delete_queue(url, prefix)
    return N / took


async def main(reactor, runs: int) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bench-failover-"))
    cluster = Cluster(Path(tempfile.mkdtemp(prefix="centaure-cluster-")))
    try:
        t0 = time.monotonic()
        await threads.deferToThread(cluster.start)
        print(f"3-node cluster up in {time.monotonic() - t0:.0f}s", flush=True)
        for how in ("dead", "hung"):
            times = [await failover(reactor, cluster, tmp, how, run) for run in range(3)]
            print(f"failover, {how} node (heartbeat {HEARTBEAT}s): median "
                  f"{statistics.median(times):.2f}s of {[round(t, 2) for t in times]}", flush=True)
        for kind in ("quorum", "classic"):
            ours, raw = [], []
            for run in range(runs):
                ours.append(await rate(cluster, tmp, kind, run))
                raw.append(await threads.deferToThread(raw_pika_rate, cluster, kind, run))
            for who, rates in (("Centaure publisher", ours), ("raw pika", raw)):
                print(f"publish with confirms, {N} messages, {kind} queue, {who}: median "
                      f"{statistics.median(rates):,.0f} msg/s of {[round(r) for r in rates]}",
                      flush=True)
    finally:
        cluster.destroy()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1,
                        help="publish-rate runs of each kind; the median is printed")
    options = parser.parse_args()
    task.react(lambda r: defer.ensureDeferred(main(r, options.runs)))
