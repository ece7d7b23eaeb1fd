"""An in-process bus with the same publisher and subscriber seams.

For ``[bus] url = embedded`` (the all-in-one process, the demo) and tests:
topic exchanges, queues with prefetch, acks, requeue and dead letters, all in
memory. It is not a broker: a message in it lives as long as the process.
"""

from __future__ import annotations

import uuid
from collections import deque

from twisted.application import service
from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from connector import messages
from connector.consumer import Consumer, DeadLetterLog, Delivery
from connector.interfaces import IBus, IPublisher, ISubscriber
from connector.metrics import Counters
from connector.topology import QueueSpec, dead_letter_exchange, dead_letter_queue, topic_matches


class _Queue:
    """Messages waiting for the one consumer of a queue."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.ready: deque[Delivery] = deque()
        self.consumer: Consumer | None = None
        self.prefetch = 0
        self.unacked = 0
        self._tags = 0

    def next_tag(self) -> int:
        self._tags += 1
        return self._tags


@implementer(IBus)
class EmbeddedBus(service.Service):
    """Topic routing and queues inside this process."""

    log = Logger()
    connected = True

    def __init__(self, clock, exchange_prefix: str = "centaure", prefetch: int = 500,
                 retry_limit: int = 5, retry_delay: float = 1.0,
                 counters: Counters | None = None) -> None:
        self.clock = clock
        self.prefix = exchange_prefix
        self.prefetch = prefetch
        self.retry_limit = retry_limit
        self.retry_delay = retry_delay
        self.bindings: dict[str, list[tuple[str, _Queue]]] = {}
        self.queues: dict[str, _Queue] = {}
        self.counters: dict[str, Counters] = {}
        #: What the consumers dead-letter, counted in ``counters`` (the process's bus
        #: counters; default ``counters_for("bus")``) and told one line every 10 s at
        #: most for them all; what is left untold is told at stop.
        self.dead_letters = DeadLetterLog(
            clock, counters if counters is not None else self.counters_for("bus"))
        self.declare(dead_letter_queue(exchange_prefix))

    def stopService(self):
        super().stopService()
        self.dead_letters.stop()

    def declare(self, spec: QueueSpec) -> _Queue:
        """Create ``spec``'s queue and bindings if they do not exist yet."""
        queue = self.queues.get(spec.name)
        if queue is None:
            queue = self.queues[spec.name] = _Queue(spec.name)
            for b in spec.bindings:
                self.bindings.setdefault(b.exchange, []).append((b.pattern, queue))
        return queue

    def route(self, exchange: str, routing_key: str, body: bytes, properties: dict) -> int:
        """Copy a message into every queue bound to it; return how many."""
        routed = 0
        for pattern, queue in self.bindings.get(exchange, ()):
            if topic_matches(pattern, routing_key):
                queue.ready.append(Delivery(
                    body=body, exchange=exchange, routing_key=routing_key,
                    message_id=properties.get("message_id"), msg_type=properties.get("type"),
                    headers=dict(properties.get("headers") or {}), tag=queue.next_tag()))
                routed += 1
                self._dispatch(queue)
        return routed

    def _dispatch(self, queue: _Queue) -> None:
        while queue.consumer is not None and queue.ready and queue.unacked < queue.prefetch:
            delivery = queue.ready.popleft()
            queue.unacked += 1
            queue.consumer.deliver(
                delivery,
                ack=lambda q=queue: self._settle(q),
                requeue=lambda q=queue, d=delivery: self._requeue(q, d),
            )

    def _settle(self, queue: _Queue) -> None:
        queue.unacked -= 1
        self.clock.callLater(0, self._dispatch, queue)

    def _requeue(self, queue: _Queue, delivery: Delivery) -> None:
        delivery.redelivered = True
        queue.ready.appendleft(delivery)
        self._settle(queue)

    def counters_for(self, app_id: str) -> Counters:
        """The bus counters of one connector."""
        c = self.counters.get(app_id)
        if c is None:
            c = self.counters[app_id] = Counters(app_id)
        return c

    # -- IBus ---------------------------------------------------------------

    def publisher(self, app_id: str) -> "EmbeddedPublisher":
        return EmbeddedPublisher(self, app_id)

    def subscriber(self, app_id: str) -> "EmbeddedSubscriber":
        return EmbeddedSubscriber(self, app_id)

    def health(self) -> dict:
        return {"connected": True, "blocked": False, "degraded": False, "bus": "embedded",
                "queued": {name: len(q.ready) for name, q in self.queues.items()}}


@implementer(IPublisher)
class EmbeddedPublisher:
    """Publishes into the embedded bus; accepted at once."""

    def __init__(self, bus: EmbeddedBus, app_id: str) -> None:
        self.bus = bus
        self.app_id = app_id
        self.counters = bus.counters_for(app_id)

    def publish(self, message, headers=None, durable: bool = False,
                message_id: str | None = None) -> defer.Deferred:
        body = messages.encode(message)
        return self.publish_raw(
            messages.exchange_name(self.bus.prefix, message.msg_type),
            messages.routing_key(message), body,
            {"message_id": message_id or uuid.uuid4().hex, "type": message.msg_type, "headers": headers,
             "timestamp": message.ts})

    def publish_raw(self, exchange, routing_key, body, properties,
                    durable: bool = False) -> defer.Deferred:
        # Routed at once in this process: held and durable alike.
        self.bus.route(exchange, routing_key, body, properties)
        self.counters.inc("published")
        return defer.succeed(None)


@implementer(ISubscriber)
class EmbeddedSubscriber:
    """Feeds a handler from an embedded queue."""

    def __init__(self, bus: EmbeddedBus, app_id: str) -> None:
        self.bus = bus
        self.app_id = app_id

    def subscribe(self, queue: QueueSpec, handler) -> None:
        q = self.bus.declare(queue)
        q.prefetch = self.bus.prefetch
        q.consumer = Consumer(
            queue.name, handler, EmbeddedPublisher(self.bus, self.app_id),
            dead_letter_exchange(self.bus.prefix), self.bus.counters_for(self.app_id),
            self.bus.clock, self.bus.retry_limit, self.bus.retry_delay,
            dead_letters=self.bus.dead_letters)
        self.bus.clock.callLater(0, self.bus._dispatch, q)
