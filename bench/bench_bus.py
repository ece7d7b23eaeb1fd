"""Publisher and consumer throughput against the real RabbitMQ of this machine.

Measures, in one run, on loopback with ~400-byte persistent ``perf`` messages
to a durable queue:

- raw txamqp: basic.publish on a confirm channel, waiting for every ack
  (the ceiling of the library);
- Centaure's publisher: ``publish()`` of message structs (encoding included),
  confirms, buffer spill when in-flight is full, replay, until all confirmed;
- Centaure's subscriber: decode + no-op handler + coalesced acks.

Each figure is the median of ``--runs`` runs. Usage:
    .venv/bin/python bench/bench_bus.py [--messages 20000] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from connector.reactor import install_asyncio_reactor  # noqa: E402

install_asyncio_reactor()

import pika  # noqa: E402
from twisted.internet import defer, reactor, task  # noqa: E402
from txamqp.content import Content  # noqa: E402

from connector import messages  # noqa: E402
from connector.amqp import oneshot  # noqa: E402
from connector.amqp.bus import AMQPBus  # noqa: E402
from connector.settings import settings_from_string  # noqa: E402
from connector.topology import QueueSpec, Binding  # noqa: E402

URL = os.environ.get("CENTAURE_BENCH_AMQP", "amqp://guest:guest@127.0.0.1:5672/%2F")


def perf(i: int) -> messages.Perf:
    return messages.Perf(
        source="bench@node", host=f"device-{i % 1000:04d}.example.net", address="10.0.0.1",
        device_type="switch",
        metrics=[messages.Metric(name="ifHCInOctets", index=str(k), value=i * 10 + k,
                                 kind="counter", oid=f"1.3.6.1.2.1.31.1.1.1.6.{k}")
                 for k in range(3)])


def settings_for(prefix: str, tmp: str):
    return settings_from_string(
        f"[bus]\nurl = {URL}\nexchange_prefix = {prefix}\n"
        f"[buffer]\npath = {tmp}/buffer-{{connector}}.sqlite3\n"
        "[connector]\nhttp_port = 0\n")


def admin(prefix: str, queue: str | None = None, delete: bool = False) -> None:
    conn = pika.BlockingConnection(pika.URLParameters(URL))
    ch = conn.channel()
    if delete:
        ch.queue_delete(queue=queue)
        ch.exchange_delete(exchange=f"{prefix}.perf")
    else:
        ch.exchange_declare(exchange=f"{prefix}.perf", exchange_type="topic", durable=True)
        ch.queue_declare(queue=queue, durable=True)
        ch.queue_bind(queue=queue, exchange=f"{prefix}.perf", routing_key="#")
    conn.close()


class _Acks:
    """Counts confirms for the raw txamqp run."""

    def __init__(self) -> None:
        self.acked = 0

    def confirmed(self, channel_id, tag, multiple, ack):
        self.acked = tag if multiple else max(self.acked, tag)

    def blocked(self, reason): ...
    def unblocked(self): ...
    def consumer_cancelled(self, tag): ...
    def connection_lost(self, protocol, reason): ...


async def raw_txamqp(n: int, settings, prefix: str) -> float:
    protocol, channel = await oneshot.connect(reactor, settings.bus)
    acks = _Acks()
    protocol.listener = acks
    await channel.confirm_select()
    bodies = [messages.encode(perf(i)) for i in range(n)]
    t0 = time.perf_counter()
    for i, body in enumerate(bodies):
        channel.basic_publish(exchange=f"{prefix}.perf", routing_key="perf.x",
                              content=Content(body, properties={"delivery-mode": 2,
                                                                "content-type": "application/json"}))
        if i % 500 == 499:
            await task.deferLater(reactor, 0, lambda: None)
    while acks.acked < n:
        await task.deferLater(reactor, 0.001, lambda: None)
    elapsed = time.perf_counter() - t0
    await oneshot.close(protocol)
    return n / elapsed


async def centaure_publisher(n: int, settings, tmp: str) -> float:
    bus = AMQPBus(reactor, settings.bus, settings.buffer, f"bench{uuid.uuid4().hex[:6]}")
    await bus.startService()
    while not bus.connected:
        await task.deferLater(reactor, 0.01, lambda: None)
    publisher = bus.publisher("bench")
    msgs = [perf(i) for i in range(n)]
    t0 = time.perf_counter()
    ds = []
    for i, m in enumerate(msgs):
        ds.append(publisher.publish(m))
        if i % 500 == 499:
            await task.deferLater(reactor, 0, lambda: None)
    await defer.gatherResults(ds)
    while publisher.backlog or publisher.in_flight:
        await task.deferLater(reactor, 0.001, lambda: None)
    elapsed = time.perf_counter() - t0
    await bus.stopService()
    return n / elapsed


class _Counting:
    def __init__(self) -> None:
        self.n = 0

    def handle(self, message, delivery):
        self.n += 1


async def centaure_consumer(n: int, settings, queue: str, prefix: str) -> float:
    bus = AMQPBus(reactor, settings.bus, settings.buffer, f"benchc{uuid.uuid4().hex[:6]}")
    handler = _Counting()
    spec = QueueSpec(name=queue, bindings=(Binding(f"{prefix}.perf"),))
    t0 = time.perf_counter()
    await bus.startService()
    bus.subscriber("bench").subscribe(spec, handler)
    while handler.n < n:
        await task.deferLater(reactor, 0.001, lambda: None)
    elapsed = time.perf_counter() - t0
    await bus.stopService()
    return n / elapsed


async def main(reactor, args) -> None:
    results = {"raw txamqp publish+confirm": [], "centaure publish+confirm": [],
               "centaure consume+ack": []}
    with tempfile.TemporaryDirectory() as tmp:
        for run in range(args.runs):
            prefix = f"bench{uuid.uuid4().hex[:8]}"
            queue = f"{prefix}.q"
            settings = settings_for(prefix, tmp)
            admin(prefix, queue)
            try:
                results["raw txamqp publish+confirm"].append(
                    await raw_txamqp(args.messages, settings, prefix))
                results["centaure publish+confirm"].append(
                    await centaure_publisher(args.messages, settings, tmp))
                # The queue now holds 2 x messages: consume them all.
                results["centaure consume+ack"].append(
                    await centaure_consumer(2 * args.messages, settings, queue, prefix))
            finally:
                admin(prefix, queue, delete=True)
            print(f"run {run + 1}: " + ", ".join(f"{k} {v[-1]:,.0f}/s" for k, v in results.items()),
                  flush=True)
    print(f"\nmedian of {args.runs} runs, {args.messages} messages of "
          f"{len(messages.encode(perf(1)))} bytes:")
    med = {k: statistics.median(v) for k, v in results.items()}
    for k, v in med.items():
        print(f"  {k:30s} {v:10,.0f} msg/s")
    ratio = med["centaure publish+confirm"] / med["raw txamqp publish+confirm"]
    print(f"  centaure publisher / raw txamqp: {ratio:.2f}")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--messages", type=int, default=20_000)
    p.add_argument("--runs", type=int, default=3)
    args = p.parse_args()
    task.react(lambda r: defer.ensureDeferred(main(r, args)))
