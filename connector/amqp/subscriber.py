"""Consuming one queue over AMQP: declare, qos, consume, coalesced acks.

Each ``AMQPSubscriber`` owns one channel of the current connection. It
declares its queue and bindings (idempotent, like ``bus-config``), sets the
prefetch window, and feeds deliveries to a ``Consumer``. Acks are gathered
over a reactor turn: the longest run of finished deliveries from the oldest
one is acked with ``multiple=True``, the rest one by one.
"""

from __future__ import annotations

import itertools
from collections import deque

from twisted.internet import defer
from twisted.logger import Logger
from txamqp.queue import Closed as QueueClosed
from zope.interface import implementer

from connector.consumer import Consumer, Delivery
from connector.interfaces import ISubscriber
from connector.topology import QueueSpec

_channel_ids = itertools.count(2)  # channel 1 is the publisher's


async def declare_queue(channel, spec: QueueSpec) -> None:
    """Declare ``spec``'s queue, its exchanges and bindings (idempotent)."""
    for binding in spec.bindings:
        await channel.exchange_declare(exchange=binding.exchange, type="topic", durable=True)
    await channel.queue_declare(queue=spec.name, durable=True, arguments=spec.arguments)
    for binding in spec.bindings:
        await channel.queue_bind(queue=spec.name, exchange=binding.exchange,
                                 routing_key=binding.pattern)


@implementer(ISubscriber)
class AMQPSubscriber:
    """Consumes one queue on its own channel, across reconnections."""

    log = Logger()

    def __init__(self, spec: QueueSpec, consumer: Consumer, prefetch: int, clock) -> None:
        self.spec = spec
        self.consumer = consumer
        self.prefetch = prefetch
        self.clock = clock
        self.channel_id = next(_channel_ids)
        self.consumer_tag = f"{spec.name}.{self.channel_id}"
        self._channel = None
        self._protocol = None
        self._outstanding: deque[int] = deque()
        self._done: set[int] = set()
        self._flush_call = None

    def attach(self, protocol) -> defer.Deferred:
        """Start consuming on ``protocol`` (a fresh connection)."""
        return defer.ensureDeferred(self._attach(protocol))

    async def _attach(self, protocol) -> None:
        channel = await protocol.channel(self.channel_id)
        await channel.channel_open()
        await declare_queue(channel, self.spec)
        await channel.basic_qos(prefetch_count=self.prefetch)
        await channel.basic_consume(queue=self.spec.name, consumer_tag=self.consumer_tag,
                                    no_ack=False)
        self._protocol, self._channel = protocol, channel
        self._outstanding.clear()
        self._done.clear()
        queue = await protocol.queue(self.consumer_tag)
        self.log.info("consuming {queue}", queue=self.spec.name)
        defer.ensureDeferred(self._read(protocol, channel, queue))

    async def _read(self, protocol, channel, queue) -> None:
        while self._protocol is protocol:
            try:
                msg = await queue.get()
            except QueueClosed:
                return
            content = msg.content
            body = content.body if isinstance(content.body, bytes) else content.body.encode()
            props = content.properties
            delivery = Delivery(
                body=body,
                exchange=msg.exchange,
                routing_key=msg.routing_key,
                message_id=props.get("message-id"),
                msg_type=props.get("type"),
                redelivered=bool(msg.redelivered),
                headers=props.get("headers") or {},
                tag=msg.delivery_tag,
            )
            tag = msg.delivery_tag
            self._outstanding.append(tag)
            self.consumer.deliver(
                delivery,
                ack=lambda tag=tag, ch=channel: self._ack(ch, tag),
                requeue=lambda tag=tag, ch=channel: self._requeue(ch, tag),
            )

    def detach(self, protocol, clean: bool) -> defer.Deferred:
        """Stop consuming: the broker redelivers whatever was not acked."""
        if self._protocol is not protocol:
            return defer.succeed(None)
        channel = self._channel
        self._protocol = self._channel = None
        if clean and channel is not None:
            self._flush(channel)
            d = channel.basic_cancel(consumer_tag=self.consumer_tag)
            d.addErrback(lambda f: None)
            return d
        return defer.succeed(None)

    def _ack(self, channel, tag: int) -> None:
        if channel is not self._channel:
            return  # that channel is gone: the broker will redeliver
        self._done.add(tag)
        if self._flush_call is None or not self._flush_call.active():
            self._flush_call = self.clock.callLater(0, self._flush, channel)

    def _requeue(self, channel, tag: int) -> None:
        if channel is not self._channel:
            return
        try:
            self._outstanding.remove(tag)
        except ValueError:
            pass
        channel.basic_reject(delivery_tag=tag, requeue=True)

    def _flush(self, channel) -> None:
        if channel is not self._channel or not self._done:
            return
        done, outstanding = self._done, self._outstanding
        last = None
        while outstanding and outstanding[0] in done:
            last = outstanding.popleft()
            done.discard(last)
        if last is not None:
            channel.basic_ack(delivery_tag=last, multiple=True)
        for tag in sorted(done):
            channel.basic_ack(delivery_tag=tag, multiple=False)
            try:
                outstanding.remove(tag)
            except ValueError:
                pass
        done.clear()
