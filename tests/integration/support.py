"""Helpers for integration tests against the real broker."""

from __future__ import annotations

import time
from collections.abc import Callable

import pika
from twisted.internet import defer, reactor, task, threads

from connector import messages
from connector.settings import load_settings
from tests.conftest import AMQP_URL, rabbitmqctl


def perf(i: int, host: str = "dev") -> messages.Perf:
    """A perf message carrying its sequence number ``i``."""
    return messages.Perf(
        source="test@testnode", host=f"{host}{i % 7}", address="127.0.0.1", device_type="test",
        metrics=[messages.Metric(name="seq", value=i, kind="gauge", oid="1.3.6.1.4.1.1")])


def seq_of(body: bytes) -> int:
    """The sequence number a ``perf`` body carries."""
    return int(messages.decode(body).metrics[0].value)


def declare_check_queue(prefix: str, msg_type: str = "perf") -> str:
    """A durable queue that receives every ``msg_type`` message of ``prefix``."""
    name = f"{prefix}.check"
    conn = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    ch = conn.channel()
    ch.exchange_declare(exchange=f"{prefix}.{msg_type}", exchange_type="topic", durable=True)
    ch.queue_declare(queue=name, durable=True)
    ch.queue_bind(queue=name, exchange=f"{prefix}.{msg_type}", routing_key="#")
    conn.close()
    return name


def drain(queue: str, idle: float = 1.0) -> list[tuple[bytes, dict]]:
    """Every message of ``queue`` (body, headers), acked, in delivery order."""
    conn = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    ch = conn.channel()
    out = []
    for method, props, body in ch.consume(queue, inactivity_timeout=idle):
        if method is None:
            break
        out.append((body, props))
        ch.basic_ack(method.delivery_tag)
    ch.cancel()
    conn.close()
    return out


def collect(queue: str, want: int, timeout: float = 30, settle: float = 1.0) -> list[tuple]:
    """(properties, body) of ``queue``'s messages: ``want`` of them, then ``settle`` s for extras.

    Returns what came by ``timeout`` if fewer did: the caller asserts on it.
    """
    conn = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    ch = conn.channel()
    got: list[tuple] = []
    deadline = time.monotonic() + timeout
    extra_until = None
    try:
        while True:
            method, props, body = ch.basic_get(queue, auto_ack=True)
            if method is not None:
                got.append((props, body))
                continue
            now = time.monotonic()
            if len(got) >= want:
                extra_until = extra_until or now + settle
                if now >= extra_until:
                    break
            elif now > deadline:
                break
            time.sleep(0.05)
    finally:
        conn.close()
    return got


def assert_all_in_order(seqs: list[int], n: int) -> None:
    """Every 0..n-1 arrived, and first arrivals are in publish order.

    Redeliveries after a failure are allowed (at-least-once); losses are not.
    """
    missing = sorted(set(range(n)) - set(seqs))
    assert not missing, f"{len(missing)} message(s) lost, e.g. {missing[:10]}"
    first = []
    seen = set()
    for s in seqs:
        if s not in seen:
            seen.add(s)
            first.append(s)
    out_of_order = [(a, b) for a, b in zip(first, first[1:]) if b < a]
    assert not out_of_order, f"first arrivals out of order, e.g. {out_of_order[:5]}"


async def sleep(seconds: float) -> None:
    await task.deferLater(reactor, seconds, lambda: None)


async def wait_until(predicate, timeout: float, what: str, step: float = 0.05) -> None:
    """Poll ``predicate`` until true; fail the test naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await sleep(step)


async def until_while_alive(daemons, predicate, what: str, timeout: float,
                            seen: Callable[[], object] = lambda: "") -> None:
    """Poll ``predicate`` while every daemon runs; fail naming ``what``, ``seen()`` and the last logs."""
    deadline = time.monotonic() + timeout
    while not predicate():
        for d in daemons:
            assert d.alive(), d.logs()[-3000:]
        assert time.monotonic() < deadline, \
            f"timed out waiting for {what}: {seen()}\n{daemons[-1].logs()[-3000:]}"
        await sleep(0.05)


async def ctl(*args: str) -> str:
    """rabbitmqctl, off the reactor thread."""
    return await threads.deferToThread(rabbitmqctl, *args)


async def start_bus(settings_path: str, app_id: str = "test"):
    """An AMQP bus service for ``settings_path``, started and connected."""
    from connector.amqp.bus import AMQPBus

    s = load_settings(settings_path)
    bus = AMQPBus(reactor, s.bus, s.buffer, app_id)
    await bus.startService()
    await wait_until(lambda: bus.connected, 20, "the bus to connect")
    return bus


async def publish_paced(publisher, n: int, rate: float, start: int = 0) -> list[defer.Deferred]:
    """Publish ``start``..``n-1`` at about ``rate`` messages/s; return their Deferreds."""
    ds = []
    chunk = max(1, int(rate / 50))
    t0 = time.monotonic()
    for i in range(start, n):
        ds.append(publisher.publish(perf(i)))
        if (i - start) % chunk == chunk - 1:
            ahead = (i - start + 1) / rate - (time.monotonic() - t0)
            await sleep(max(ahead, 0))
    return ds


async def settle(bus, timeout: float = 60) -> None:
    """Wait until the publisher has nothing buffered or in flight."""
    p = bus.publisher("test")
    await wait_until(lambda: p.backlog == 0 and p.in_flight == 0, timeout,
                     f"the publisher to drain (backlog {p.backlog}, in flight {p.in_flight})")


def declare_consumer_queues(prefix: str, *connectors: str, dead_letters: bool = False) -> None:
    """What ``centaure bus-config`` declares for these connectors: queues and bindings."""
    from connector.topology import connector_queue, dead_letter_queue

    specs = [connector_queue(prefix, name) for name in connectors]
    if dead_letters:
        specs.append(dead_letter_queue(prefix))
    declare_specs(specs)


def declare_specs(specs) -> None:
    """Declare these queues, their exchanges and bindings, as ``bus-config`` does."""
    conn = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    ch = conn.channel()
    for spec in specs:
        for b in spec.bindings:
            ch.exchange_declare(exchange=b.exchange, exchange_type="topic", durable=True)
        ch.queue_declare(queue=spec.name, durable=True, arguments=spec.arguments)
        for b in spec.bindings:
            ch.queue_bind(queue=spec.name, exchange=b.exchange, routing_key=b.pattern)
    conn.close()


def queue_depth(name: str) -> int:
    """Messages ready in queue ``name``."""
    conn = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    try:
        return conn.channel().queue_declare(queue=name, passive=True).method.message_count
    finally:
        conn.close()


def drop_prefixed_tables(url: str, table_prefix: str | tuple[str, ...]) -> None:
    """Drop every table whose name starts with ``table_prefix`` (test clean-up)."""
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    try:
        md = sa.MetaData()
        md.reflect(engine, only=lambda name, _md: name.startswith(table_prefix))
        md.drop_all(engine)
    finally:
        engine.dispose()
