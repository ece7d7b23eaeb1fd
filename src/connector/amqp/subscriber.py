"""Consuming one queue over AMQP: declare, qos, consume, coalesced acks.

Each ``AMQPSubscriber`` owns one channel of the current connection. It
declares its queue and bindings (idempotent, like ``bus-config``), sets the
prefetch window, and feeds deliveries to a ``Consumer``. Acks are gathered
over a reactor turn: the longest run of finished deliveries from the oldest
one is acked with ``multiple=True``, the rest one by one.
"""

from __future__ import annotations

import heapq
from collections import deque

from twisted.internet import defer
from twisted.logger import Logger
from txamqp.client import Closed

from connector.amqp import fastpath
from connector.consumer import Consumer, Delivery
from connector.topology import QueueSpec

class ChannelIds:
    """Channel numbers of the process's bus connection, the lowest free one first.

    RabbitMQ allows 2,047 channels per connection. Partition queues come and
    go as ownership moves, so their numbers are given back and used again
    instead of counting up for ever. Channel 1 is the publisher's.
    """

    def __init__(self, first: int = 2, last: int = 2047) -> None:
        self._next = first
        self._last = last
        self._free: list[int] = []

    def take(self) -> int:
        """A channel number nobody in this process uses."""
        if self._free:
            return heapq.heappop(self._free)
        if self._next > self._last:
            raise RuntimeError(f"no AMQP channel left: all {self._last} in use")
        self._next += 1
        return self._next - 1

    def give_back(self, channel_id: int) -> None:
        """``channel_id``'s channel is closed for good: it may be used again."""
        heapq.heappush(self._free, channel_id)


#: The channel numbers of this process (one bus connection per process).
channel_ids = ChannelIds()

#: AMQP reply code of a declaration that contradicts what exists.
PRECONDITION_FAILED = 406


class QueueMismatch(Exception):
    """A queue exists on the broker with other arguments than the ones declared.

    RabbitMQ never changes an existing queue's arguments: it refuses the
    declaration (PRECONDITION_FAILED) and closes the channel. ``str()`` names
    the queue, the broker's reason and what the operator can do.
    """

    def __init__(self, queue: str, reason: str) -> None:
        self.queue = queue
        self.reason = reason
        super().__init__(
            f"queue {queue} exists on the broker with other arguments than Centaure declares "
            f"(broker: {reason}). RabbitMQ cannot change a queue's arguments: either set "
            f"[bus] queue_type back to the type the queue has, or stop its consumers, let "
            f"the queue empty, delete it (rabbitmqctl delete_queue {queue}) and run "
            f"'centaure bus-config' again")


def broker_refusal(error: BaseException) -> tuple[int, str] | None:
    """``(reply code, reply text)`` when ``error`` is a channel the broker closed."""
    if not isinstance(error, Closed) or not error.args:
        return None
    fields = getattr(error.args[0], "fields", None)
    if not fields or len(fields) < 2 or not isinstance(fields[0], int):
        return None
    text = fields[1].decode() if isinstance(fields[1], bytes) else str(fields[1])
    return fields[0], text


def _forget_channel(protocol, channel_id: int) -> None:
    """``channel_id``'s channel is closed: drop txamqp's object, let the number be used again."""
    protocol.channels.pop(channel_id, None)
    channel_ids.give_back(channel_id)


class QueueDeclarer:
    """Declares one queue and its bindings at every connection, consuming nothing.

    For a queue that must exist before any node consumes it, so that what
    is published to it meanwhile waits there.
    """

    log = Logger()

    def __init__(self, spec: QueueSpec, clock) -> None:
        self.spec = spec
        self.clock = clock

    def attach(self, protocol) -> defer.Deferred:
        d = defer.ensureDeferred(self._attach(protocol))
        d.addErrback(lambda f: self.log.failure("cannot declare {queue}", f,
                                                queue=self.spec.name))
        return d

    async def _attach(self, protocol) -> None:
        channel_id = channel_ids.take()
        try:
            channel = await protocol.channel(channel_id)
            await channel.channel_open()
            await declare_queue(channel, self.spec)
            await channel.channel_close(reply_code=200, reply_text="declared", class_id=0,
                                        method_id=0)
        finally:
            self.clock.callLater(0, _forget_channel, protocol, channel_id)

    def detach(self, protocol, clean: bool) -> defer.Deferred:
        return defer.succeed(None)


async def declare_queue(channel, spec: QueueSpec) -> None:
    """Declare ``spec``'s queue, its exchanges and bindings (idempotent).

    Raises :class:`QueueMismatch` (the channel is then closed) when the queue
    exists with other arguments.
    """
    for binding in spec.bindings:
        await channel.exchange_declare(exchange=binding.exchange, type="topic", durable=True)
    try:
        await channel.queue_declare(queue=spec.name, durable=True, arguments=spec.arguments)
    except Closed as e:
        refusal = broker_refusal(e)
        if refusal is None or refusal[0] != PRECONDITION_FAILED:
            raise
        raise QueueMismatch(spec.name, refusal[1]) from None
    for binding in spec.bindings:
        await channel.queue_bind(queue=spec.name, exchange=binding.exchange,
                                 routing_key=binding.pattern)


class AMQPSubscriber:
    """Consumes one queue on its own channel, across reconnections.

    Not an ``ISubscriber``: the bus's subscriber (``connector.amqp.bus``)
    provides that and makes one of these per subscribed queue.
    """

    log = Logger()

    def __init__(self, spec: QueueSpec, consumer: Consumer, prefetch: int, clock) -> None:
        self.spec = spec
        self.consumer = consumer
        self.prefetch = prefetch
        self.clock = clock
        self.channel_id = channel_ids.take()
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
        self._protocol, self._channel = protocol, channel
        self._outstanding.clear()
        self._done.clear()
        # Deliveries arrive through the protocol's fast path from now on.
        protocol.consumers[self.consumer_tag] = self._on_deliver
        await channel.basic_consume(queue=self.spec.name, consumer_tag=self.consumer_tag,
                                    no_ack=False)
        self.log.info("consuming {queue}", queue=self.spec.name)

    @property
    def consuming(self) -> bool:
        """True while this subscriber has a live consumer on the broker."""
        return self._protocol is not None and self._protocol.consumers.get(self.consumer_tag) is not None

    def _on_deliver(self, channel_id: int, deliver: fastpath.Deliver) -> None:
        channel = self._channel
        if channel is None or channel_id != channel.id:
            return
        props = deliver.properties or {}
        tag = deliver.delivery_tag
        self._outstanding.append(tag)
        self.consumer.deliver(
            Delivery(
                body=deliver.body,
                exchange=deliver.exchange,
                routing_key=deliver.routing_key,
                message_id=props.get("message-id"),
                msg_type=props.get("type"),
                redelivered=deliver.redelivered,
                headers=props.get("headers") or {},
                tag=tag,
                user_id=props.get("user-id"),
            ),
            ack=lambda: self._ack(channel, tag),
            requeue=lambda: self._requeue(channel, tag),
        )

    def detach(self, protocol, clean: bool) -> defer.Deferred:
        """Stop consuming: the broker redelivers whatever was not acked."""
        if self._protocol is not protocol:
            return defer.succeed(None)
        protocol.consumers.pop(self.consumer_tag, None)
        channel = self._channel
        if clean and channel is not None:
            # Ack what the handler finished before the channel is let go:
            # otherwise the broker redelivers work that was already done.
            self._flush(channel, protocol)
        self._protocol = self._channel = None
        if clean and channel is not None:
            d = channel.basic_cancel(consumer_tag=self.consumer_tag)
            d.addErrback(lambda f: None)
            return d
        return defer.succeed(None)

    def cancel(self) -> defer.Deferred:
        """Ask for no more deliveries; those already here are still handled and acked."""
        channel = self._channel
        if channel is None or channel.closed:
            return defer.succeed(None)
        d = channel.basic_cancel(consumer_tag=self.consumer_tag)
        d.addErrback(lambda f: None)
        return d

    def close(self) -> defer.Deferred:
        """Ack what is done and close the channel: the broker takes back what is not.

        After :meth:`cancel` and once the handler has finished what it could,
        this lets the queue go without leaving a delivery unacked for ever.
        """
        channel, protocol = self._channel, self._protocol
        if channel is None:
            # Detached already (the connection went): nothing open to close.
            channel_ids.give_back(self.channel_id)
            return defer.succeed(None)
        self._flush(channel, protocol)
        protocol.consumers.pop(self.consumer_tag, None)
        self._protocol = self._channel = None
        if channel.closed:
            self._release(protocol)
            return defer.succeed(None)
        # The connection may be gone already (a lost connection closes it all).
        d = defer.maybeDeferred(channel.channel_close, reply_code=200,
                                reply_text="partition handed on", class_id=0, method_id=0)
        d.addErrback(lambda f: None)
        d.addCallback(lambda _: self._release(protocol))
        return d

    def _release(self, protocol) -> None:
        # txamqp keeps channel objects by number: a closed one must not be
        # handed to the next user of the number. Later, not now: this may run
        # inside txamqp's loop over its channels, closing them all.
        self.clock.callLater(0, _forget_channel, protocol, self.channel_id)

    def _ack(self, channel, tag: int) -> None:
        if channel is not self._channel:
            return  # that channel is gone: the broker will redeliver
        self._done.add(tag)
        if self._flush_call is None or not self._flush_call.active():
            self._flush_call = self.clock.callLater(0, self._flush, channel, self._protocol)

    def _requeue(self, channel, tag: int) -> None:
        if channel is not self._channel:
            return
        try:
            self._outstanding.remove(tag)
        except ValueError:
            pass
        channel.basic_reject(delivery_tag=tag, requeue=True)

    def _flush(self, channel, protocol) -> None:
        if channel is not self._channel or not self._done or channel.closed:
            return
        done, outstanding = self._done, self._outstanding
        last = None
        while outstanding and outstanding[0] in done:
            last = outstanding.popleft()
            done.discard(last)
        if last is not None:
            protocol.fast_ack(channel.id, last, True)
        for tag in sorted(done):
            protocol.fast_ack(channel.id, tag, False)
            try:
                outstanding.remove(tag)
            except ValueError:
                pass
        done.clear()
