"""The product's publisher against a real RabbitMQ queue that refuses messages.

A durable queue holds 100 messages and refuses more (``x-overflow =
reject-publish``: the broker nacks them). 500 messages are published: while
the queue stays full the publisher keeps the refused ones in its buffer and
tries one again after a growing delay, not in a busy loop, and says so in one
warning line, not one per nack. Once a consumer makes room, every message
arrives. (Not necessarily in publish order: messages sent behind one the
queue refused are taken if a consumer made room meanwhile.)
"""

from __future__ import annotations

import time

import pika
import pytest
import pytest_twisted
from twisted.internet import defer, threads
from twisted.logger import LogLevel, formatEvent, globalLogPublisher

from tests.conftest import AMQP_URL
from tests.integration.support import (
    collect, perf, seq_of, settle, sleep, start_bus, wait_until)

pytestmark = pytest.mark.integration

N = 500
ROOM = 100
WINDOW = 3.0
NACK_LINE = "messages nacked by the broker"


def declare_refusing_queue(prefix: str) -> str:
    """A queue bound to the perf exchange that holds ``ROOM`` messages and nacks the rest."""
    name = f"{prefix}.check"
    conn = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    ch = conn.channel()
    ch.exchange_declare(exchange=f"{prefix}.perf", exchange_type="topic", durable=True)
    ch.queue_declare(queue=name, durable=True,
                     arguments={"x-max-length": ROOM, "x-overflow": "reject-publish"})
    ch.queue_bind(queue=name, exchange=f"{prefix}.perf", routing_key="#")
    conn.close()
    return name


@pytest_twisted.ensureDeferred
async def test_a_full_reject_publish_queue_is_retried_calmly_and_loses_nothing(
        prefix, write_settings):
    queue = declare_refusing_queue(prefix)
    warnings: list[str] = []

    def observe(event) -> None:
        if event.get("log_level") == LogLevel.warn:
            warnings.append(formatEvent(event))

    globalLogPublisher.addObserver(observe)
    bus = await start_bus(write_settings())
    try:
        publisher = bus.publisher("test")
        results = await defer.DeferredList([publisher.publish(perf(i)) for i in range(N)],
                                           consumeErrors=True)
        failed = [r for ok, r in results if not ok]
        assert not failed, f"{len(failed)} publish(es) were not accepted: {failed[0]}"
        await wait_until(lambda: bus.counters.get("nacked") >= N - ROOM, 30,
                         "the broker to nack what the full queue cannot take")

        # The queue stays full: the refused messages are tried again now and then.
        nacked, replayed = bus.counters.get("nacked"), bus.counters.get("replayed")
        cpu = time.process_time()
        await sleep(WINDOW)
        cpu = time.process_time() - cpu
        tries = bus.counters.get("nacked") - nacked
        print(f"{tries} message(s) tried again and nacked in {WINDOW:g} s, "
              f"{bus.counters.get('replayed') - replayed:.0f} replayed, {cpu:.3f} s of CPU")
        # One message at a time, after 0.1, 0.2, 0.4... up to 2 s: 6 tries in 3 s at most,
        # fewer on a slow machine (there were thousands).
        assert tries <= 6, tries
        assert bus.counters.get("replayed") - replayed <= 6
        assert publisher.backlog >= N - ROOM - 1  # kept in the buffer, not dropped
        told = [w for w in warnings if NACK_LINE in w]
        assert 1 <= len(told) <= 2, told[:5]  # the first at once, the next 10 s later
        assert f"first nacked: exchange {prefix}.perf, routing key 'perf.dev" in told[0]
        assert not [w for w in warnings if "nacked" in w and NACK_LINE not in w]

        # Room again: a consumer takes them, every message arrives.
        got = await threads.deferToThread(collect, queue, N, 60, 1.0)
        seqs = {seq_of(body) for _, body in got}
        missing = sorted(set(range(N)) - seqs)
        assert not missing, f"{len(missing)} message(s) lost, e.g. {missing[:10]}"
        await settle(bus)
    finally:
        await bus.stopService()
        globalLogPublisher.removeObserver(observe)
    # What was not told yet is told at stop: the last line holds the total.
    told = [w for w in warnings if NACK_LINE in w]
    assert f"(totals: nacked {bus.counters.get('nacked'):.0f})" in told[-1], told[-1]
