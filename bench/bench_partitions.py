"""Several nodes: routing by partition, and how fast ownership moves.

On the local RabbitMQ (127.0.0.1:5672):

- routing: the product's publisher sends 20,000 ``event`` messages
  (confirmed) for 1,000 hosts into (a) one quorum queue bound ``#`` (one
  node), (b) 64 quorum partition queues bound ``event.<p>.#`` (the partition
  in the routing key, what Centaure does), (c) 64 quorum queues behind
  RabbitMQ's bundled consistent-hash exchange (``x-consistent-hash``, bound
  from the topic exchange; enabled by this bench when it is not). The rate
  is from the first publish to the last confirm, median of ``--runs``;
- ownership: two token holders of 64 partitions: the time for a node that
  joins to get its fair share (balance every 1 s), and the time for the
  survivor to own every partition once the other's connection drops
  (aborted: the broker sees it at once; a host that vanishes is seen after
  the AMQP heartbeat instead), median of ``--runs``.

Usage: .venv/bin/python bench/bench_partitions.py [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from connector.reactor import install_asyncio_reactor  # noqa: E402

install_asyncio_reactor()

import pika  # noqa: E402
from twisted.internet import defer, reactor, task  # noqa: E402

from connector import messages  # noqa: E402
from connector.amqp.tokens import TokenHolder  # noqa: E402
from connector.metrics import Counters  # noqa: E402
from connector.topology import partition_queue  # noqa: E402
from tests.conftest import AMQP_URL, settings_text  # noqa: E402
from tests.integration.support import start_bus, wait_until  # noqa: E402

N = 20_000
P = 64
HOSTS = [f"sw{i:04d}.example.net" for i in range(1000)]


def _event(i: int) -> messages.Event:
    return messages.Event(
        source="traps@bench", host=HOSTS[i % len(HOSTS)], address="192.0.2.1",
        snmp_version="v2c", trap_oid="1.3.6.1.6.3.1.1.5.3", name="linkDown", severity="major",
        varbinds=[messages.Varbind(oid="1.3.6.1.2.1.2.2.1.1", type="Integer", value=i)],
        message=f"interface {i} down", action="raise", alarm="linkDown", key=str(i))


def _settings(tmp: Path, prefix: str, partitions: int) -> str:
    path = tmp / f"{prefix}-{partitions}.ini"
    path.write_text(settings_text(prefix, tmp, bus={"partitions": str(partitions)}))
    return str(path)


def _topology(prefix: str, layout: str) -> list[str]:
    """Declare the exchange and the queues of ``layout``; their names."""
    conn = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    ch = conn.channel()
    exchange = f"{prefix}.event"
    ch.exchange_declare(exchange=exchange, exchange_type="topic", durable=True)
    quorum = {"x-queue-type": "quorum"}
    names = []
    if layout == "one queue":
        names.append(f"{prefix}.q")
        ch.queue_declare(queue=names[0], durable=True, arguments=quorum)
        ch.queue_bind(queue=names[0], exchange=exchange, routing_key="#")
    elif layout == "partition in the key":
        for p in range(P):
            spec = partition_queue(prefix, "correlator", p)
            names.append(spec.name)
            ch.queue_declare(queue=spec.name, durable=True, arguments=quorum)
            ch.queue_bind(queue=spec.name, exchange=exchange, routing_key=f"event.{p}.#")
    else:
        ring = f"{prefix}.ring"
        ch.exchange_declare(exchange=ring, exchange_type="x-consistent-hash", durable=True)
        ch.exchange_bind(destination=ring, source=exchange, routing_key="#")
        for p in range(P):
            names.append(f"{prefix}.h{p}")
            ch.queue_declare(queue=names[-1], durable=True, arguments=quorum)
            ch.queue_bind(queue=names[-1], exchange=ring, routing_key="1")
    conn.close()
    return names


def _cleanup(prefix: str, names: list[str]) -> None:
    conn = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    ch = conn.channel()
    for name in names:
        ch.queue_delete(queue=name)
    for exchange in (f"{prefix}.event", f"{prefix}.ring"):
        ch.exchange_delete(exchange=exchange)
    conn.close()


def _depths(names: list[str]) -> list[int]:
    conn = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    ch = conn.channel()
    depths = [ch.queue_declare(queue=n, passive=True).method.message_count for n in names]
    conn.close()
    return depths


def _consistent_hash_enabled() -> bool:
    out = subprocess.run(["rabbitmq-plugins", "list", "-e", "-m"], capture_output=True,
                         text=True).stdout
    if "rabbitmq_consistent_hash_exchange" in out:
        return True
    done = subprocess.run(["rabbitmq-plugins", "enable", "rabbitmq_consistent_hash_exchange"],
                          capture_output=True, text=True)
    return done.returncode == 0


async def _route(tmp: Path, layout: str) -> tuple[float, list[int]]:
    prefix = f"b{uuid.uuid4().hex[:8]}"
    names = _topology(prefix, layout)
    partitions = P if layout == "partition in the key" else 0
    bus = await start_bus(_settings(tmp, prefix, partitions), app_id=f"bench-{prefix}")
    try:
        publisher = bus.publisher("bench")
        events = [_event(i) for i in range(N)]
        t0 = time.perf_counter()
        await defer.gatherResults([publisher.publish(e) for e in events])
        # Held is not confirmed: wait for the broker's last confirm.
        await wait_until(lambda: publisher.backlog == 0 and publisher.in_flight == 0, 300,
                         "every confirm", step=0.005)
        rate = N / (time.perf_counter() - t0)
    finally:
        await bus.stopService()
    # A quorum queue's count reaches declare-ok a moment after the confirms.
    deadline = time.monotonic() + 30
    depths = _depths(names)
    while sum(depths) < N and time.monotonic() < deadline:
        await task.deferLater(reactor, 0.5, lambda: None)
        depths = _depths(names)
    _cleanup(prefix, names)
    return rate, depths


async def _takeover(tmp: Path) -> tuple[float, float]:
    prefix = f"b{uuid.uuid4().hex[:8]}"
    path = _settings(tmp, prefix, 0)
    one_bus = await start_bus(path, app_id="one")
    one = TokenHolder("snmp", P, prefix, Counters("one"), reactor, balance_interval=1.0)
    one_bus.connection.add_subscriber(one)
    await wait_until(lambda: len(one.owned) == P, 60, "node one to own everything")
    two_bus = await start_bus(path, app_id="two")
    two = TokenHolder("snmp", P, prefix, Counters("two"), reactor, balance_interval=1.0)
    t0 = time.perf_counter()
    two_bus.connection.add_subscriber(two)
    await wait_until(lambda: len(two.owned) == P // 2 and len(one.owned) == P // 2, 120,
                     "the fair share")
    joined = time.perf_counter() - t0
    t0 = time.perf_counter()
    two_bus.connection.protocol.transport.abortConnection()
    await wait_until(lambda: len(one.owned) == P, 60, "node one to take everything back")
    took = time.perf_counter() - t0
    await two_bus.stopService()
    await one_bus.stopService()
    conn = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    ch = conn.channel()
    for p in range(P):
        ch.queue_delete(queue=f"{prefix}.token.snmp.{p}")
    ch.queue_delete(queue=f"{prefix}.members.snmp")
    ch.exchange_delete(exchange=f"{prefix}.token")
    conn.close()
    return joined, took


async def main(runs: int) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bench-partitions-"))
    layouts = ["one queue", "partition in the key"]
    if _consistent_hash_enabled():
        layouts.append("consistent-hash exchange")
    else:
        print("consistent-hash exchange: plugin not available, not measured")
    print(f"routing: {N} events for {len(HOSTS)} hosts, confirmed, quorum queues, "
          f"median of {runs}")
    base = None
    for layout in layouts:
        rates, spread = [], None
        for _ in range(runs):
            rate, depths = await _route(tmp, layout)
            assert sum(depths) == N, f"{layout}: {sum(depths)} routed of {N}"
            rates.append(rate)
            spread = (min(depths), max(depths))
        median = statistics.median(rates)
        base = base or median
        print(f"  {layout:26s} {median:9,.0f} msg/s  ({median / base:.2f}x one queue; "
              f"per queue {spread[0]}..{spread[1]})")
    joins, takes = [], []
    for _ in range(runs):
        joined, took = await _takeover(tmp)
        joins.append(joined)
        takes.append(took)
    print(f"ownership, {P} partitions, 2 nodes, median of {runs}:")
    print(f"  a joining node owns its fair share after {statistics.median(joins):.2f} s "
          f"(runs: {', '.join(f'{x:.2f}' for x in joins)})")
    print(f"  the survivor owns every partition {statistics.median(takes) * 1000:.0f} ms after "
          f"the other's connection dropped (runs: "
          f"{', '.join(f'{x * 1000:.0f}' for x in takes)})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    def run(_reactor):
        return defer.ensureDeferred(main(args.runs))

    task.react(run)
