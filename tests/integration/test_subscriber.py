"""The subscriber against the real broker: acks, retries, dead letters, x-death."""

from __future__ import annotations

from decimal import Decimal

import pika
import pytest
import pytest_twisted
from twisted.internet import defer

from connector import messages
from connector.consumer import QUEUE_HEADER, REASON_HEADER
from connector.topology import connector_queue, dead_letter_queue
from tests.conftest import AMQP_URL
from tests.integration.support import drain, perf, settle, start_bus, wait_until

pytestmark = pytest.mark.integration


class Recorder:
    """A handler that records what it is given; fails on demand."""

    def __init__(self, fail_seq: set[int] = frozenset()) -> None:
        self.seen: list[int] = []
        self.deliveries = []
        self.fail_seq = fail_seq
        self.attempts: dict[int, int] = {}

    def handle(self, message, delivery):
        seq = int(message.metrics[0].value)
        self.attempts[seq] = self.attempts.get(seq, 0) + 1
        if seq in self.fail_seq:
            raise RuntimeError(f"cannot handle {seq}")
        self.seen.append(seq)
        self.deliveries.append(delivery)


def _declare_dead_queue(prefix: str) -> str:
    spec = dead_letter_queue(prefix)
    conn = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    ch = conn.channel()
    ch.exchange_declare(exchange=f"{prefix}.dead", exchange_type="topic", durable=True)
    ch.queue_declare(queue=spec.name, durable=True)
    ch.queue_bind(queue=spec.name, exchange=f"{prefix}.dead", routing_key="#")
    conn.close()
    return spec.name


def _raw_publish(exchange: str, routing_key: str, body: bytes, **props) -> None:
    conn = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    ch = conn.channel()
    ch.confirm_delivery()
    ch.basic_publish(exchange, routing_key, body, pika.BasicProperties(delivery_mode=2, **props))
    conn.close()


@pytest_twisted.ensureDeferred
async def test_consume_acks_everything_once(prefix, write_settings):
    bus = await start_bus(write_settings())
    handler = Recorder()
    spec = connector_queue(prefix, "alerter")
    sub = bus.subscriber("alerter").subscribe(spec, handler)
    try:
        await wait_until(lambda: sub.consuming, 10, "the consumer")
        ds = [bus.publisher("test").publish(perf(i)) for i in range(3000)]
        await defer.gatherResults(ds)
        await wait_until(lambda: len(handler.seen) >= 3000, 30, "3000 messages handled")
        assert handler.seen == list(range(3000))
        d0 = handler.deliveries[0]
        assert d0.exchange == f"{prefix}.perf" and d0.routing_key == "perf.dev0"
        assert d0.msg_type == "perf" and d0.message_id
    finally:
        await bus.stopService()
    # Everything was acked: nothing is left in the queue.
    assert drain(spec.name, idle=0.5) == []


@pytest_twisted.ensureDeferred
async def test_malformed_message_is_dead_lettered_and_next_is_processed(prefix, write_settings):
    dead = _declare_dead_queue(prefix)
    bus = await start_bus(write_settings())
    handler = Recorder()
    spec = connector_queue(prefix, "alerter")
    sub = bus.subscriber("alerter").subscribe(spec, handler)
    try:
        await wait_until(lambda: sub.consuming, 10, "the consumer")
        await defer.gatherResults([bus.publisher("test").publish(perf(0))])
        await wait_until(lambda: handler.seen == [0], 10, "first message")
        _raw_publish(f"{prefix}.perf", "perf.broken", b'{"type": "perf", "v": 1, "host": 3')
        _raw_publish(f"{prefix}.perf", "perf.v2", messages.encode(perf(1)).replace(b'"v":1', b'"v":2'))
        await defer.gatherResults([bus.publisher("test").publish(perf(2))])
        await wait_until(lambda: handler.seen == [0, 2], 10, "the good message after the bad ones")
        await wait_until(lambda: bus.counters.get("dead_lettered") == 2, 10, "2 dead letters")
        await settle(bus)
    finally:
        await bus.stopService()
    letters = drain(dead)
    assert len(letters) == 2
    reasons = [props.headers[REASON_HEADER] for _, props in letters]
    assert reasons[0].startswith("invalid message:")
    assert "v=2" in reasons[1] or "version" in reasons[1]
    assert all(props.headers[QUEUE_HEADER] == spec.name for _, props in letters)
    assert letters[0][0] == b'{"type": "perf", "v": 1, "host": 3'


@pytest_twisted.ensureDeferred
async def test_failing_handler_is_retried_then_dead_lettered(prefix, write_settings):
    dead = _declare_dead_queue(prefix)
    bus = await start_bus(write_settings())  # retry_limit = 2
    handler = Recorder(fail_seq={1})
    spec = connector_queue(prefix, "alerter")
    sub = bus.subscriber("alerter").subscribe(spec, handler)
    try:
        await wait_until(lambda: sub.consuming, 10, "the consumer")
        await defer.gatherResults([bus.publisher("test").publish(perf(i)) for i in range(3)])
        await wait_until(lambda: bus.counters.get("dead_lettered") == 1, 20, "the dead letter")
        assert sorted(handler.seen) == [0, 2]
        assert handler.attempts[1] == 3  # first try + 2 retries
        await settle(bus)
    finally:
        await bus.stopService()
    letters = drain(dead)
    assert len(letters) == 1
    assert messages.decode(letters[0][0]).metrics[0].value == 1
    assert "handler failed 3 times: cannot handle 1" in letters[0][1].headers[REASON_HEADER]


@pytest_twisted.ensureDeferred
async def test_dead_lettered_message_with_x_death_is_consumed(prefix, write_settings):
    """A message RabbitMQ dead-lettered carries x-death (arrays, longs, timestamps).

    txamqp alone drops the connection on such headers; ours decodes them.
    """
    bus = await start_bus(write_settings())
    handler = Recorder()
    spec = connector_queue(prefix, "alerter")
    sub = bus.subscriber("alerter").subscribe(spec, handler)
    await wait_until(lambda: sub.consuming, 10, "the consumer")
    conn = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    ch = conn.channel()
    # A parking queue whose expired messages are dead-lettered into centaure.perf.
    parking = f"{prefix}.parking"
    ch.queue_declare(queue=parking, durable=True, arguments={
        "x-dead-letter-exchange": f"{prefix}.perf", "x-dead-letter-routing-key": "perf.expired",
        "x-message-ttl": 50})
    ch.basic_publish("", parking, messages.encode(perf(7)),
                     pika.BasicProperties(delivery_mode=2, headers={"x-note": Decimal("1.5"), "x-flag": True, "x-big": 2**40}))
    conn.close()
    try:
        await wait_until(lambda: handler.seen == [7], 15, "the dead-lettered message")
        headers = handler.deliveries[0].headers
        death = headers["x-death"][0]
        assert death["reason"] == "expired" and death["count"] == 1
        assert death["queue"] == parking
        assert headers["x-note"] == Decimal("1.5") and headers["x-flag"] is True
        assert headers["x-big"] == 2**40
        assert bus.connection.connections == 1, "the connection dropped on the headers"
    finally:
        await bus.stopService()
