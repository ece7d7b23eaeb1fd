"""The AMQP bus of one process: connection, reliable publisher, subscribers."""

from __future__ import annotations

from twisted.application import service
from twisted.internet import defer, task
from twisted.logger import Logger
from zope.interface import implementer

from connector import startup
from connector.amqp.connection import BrokerURL, BusConnection, TLSSettings
from connector.amqp.subscriber import AMQPSubscriber, QueueDeclarer
from connector.buffer import BufferOpenError, SQLiteBuffer, ThreadedBuffer
from connector.consumer import Consumer, DeadLetterLog
from connector.interfaces import IBus, ISubscriber
from connector.metrics import Counters
from connector.publisher import ReliablePublisher
from connector.topology import QueueSpec, dead_letter_exchange, published_exchanges


#: Longest wait on a clean stop for queued messages to be confirmed.
DRAIN_SECONDS = 5.0


@implementer(IBus)
class AMQPBus(service.Service):
    """One AMQP connection and one reliable publisher, shared by a process."""

    log = Logger()

    def __init__(self, reactor, bus_settings, buffer_settings, app_id: str,
                 counters: Counters | None = None) -> None:
        self.reactor = reactor
        self.settings = bus_settings
        self.app_id = app_id
        self.counters = counters or Counters(app_id)
        self._before_stop: list = []
        path = buffer_settings.path.replace("{connector}", app_id)
        self.buffer_path = path
        buffer = ThreadedBuffer(
            SQLiteBuffer(path, max_messages=buffer_settings.max_messages,
                         max_bytes=buffer_settings.max_size, policy=buffer_settings.policy,
                         synchronous=buffer_settings.synchronous),
            reactor)
        prefix = bus_settings.exchange_prefix
        self._publisher = ReliablePublisher(
            buffer, app_id, prefix, self.counters, reactor,
            max_in_flight=bus_settings.max_in_flight,
            batch_size=buffer_settings.batch_size,
            confirm_timeout=bus_settings.confirm_timeout, partitions=bus_settings.partitions)
        brokers = [BrokerURL.parse(u.reveal()) for u in bus_settings.urls]
        self.connection = BusConnection(
            reactor, brokers, self._publisher, app_id, bus_settings.spec,
            heartbeat=bus_settings.heartbeat, connect_timeout=bus_settings.connect_timeout,
            backoff_initial=bus_settings.backoff_initial, backoff_max=bus_settings.backoff_max,
            tls=TLSSettings(ca=bus_settings.tls_ca or "", cert=bus_settings.tls_cert or "",
                            key=bus_settings.tls_key or "", verify=bus_settings.tls_verify),
            exchanges=published_exchanges(prefix, app_id))
        #: What the consumers dead-letter, told one line every 10 s at most for them all.
        self.dead_letters = DeadLetterLog(reactor, self.counters)

    @property
    def connected(self) -> bool:
        return self.connection.connected

    def startService(self):
        super().startService()
        d = self._publisher.start()
        d.addCallback(lambda _: self.connection.startService())
        d.addErrback(self._start_failed)
        return d

    def _start_failed(self, failure):
        if failure.check(BufferOpenError):
            # A known cause (locked, corrupt, foreign file): its message says it all.
            startup.fail(self.app_id, failure.value, self.reactor)
            return
        self.log.failure("the bus could not start (buffer {path})", failure, path=self.buffer_path)
        startup.fail(self.app_id, f"the bus could not start (buffer {self.buffer_path}): "
                                  f"{failure.getErrorMessage()}", self.reactor)

    def before_stop(self, hook) -> None:
        """Call ``hook()`` (may return a Deferred) first when the bus stops, while still connected.

        Ownership tokens are handed on this way, so that the next owner takes
        over as soon as this node has finished, not when its connection drops.
        """
        self._before_stop.append(hook)

    @defer.inlineCallbacks
    def stopService(self):
        super().stopService()
        if self._before_stop and self.connected:
            hooks = defer.gatherResults([defer.maybeDeferred(h) for h in self._before_stop],
                                        consumeErrors=True)
            # Bounded: a hung broker must not hold the stop.
            hooks.addTimeout(DRAIN_SECONDS, self.reactor)
            try:
                yield hooks
            except Exception as e:
                self.log.warn("stopping without handing everything on: {error}",
                              error=str(e) or type(e).__name__)
        # A clean stop first gives what is queued (the connectors' last
        # messages, a replay in progress) a bounded time to be confirmed;
        # whatever remains stays in the on-disk buffer for the next start.
        deadline = self.reactor.seconds() + DRAIN_SECONDS
        while (self.connected and (self._publisher.backlog or self._publisher.in_flight)
               and self.reactor.seconds() < deadline):
            yield task.deferLater(self.reactor, 0.02, lambda: None)
        try:
            yield self.connection.stopService()
            yield self._publisher.stop()
        finally:
            self.dead_letters.stop()

    def declare(self, spec: QueueSpec) -> None:
        """Declare ``spec``'s queue at every connection (as ``bus-config`` would)."""
        self.connection.add_subscriber(QueueDeclarer(spec, self.reactor))

    def publisher(self, app_id: str) -> ReliablePublisher:
        """The process's publisher (one confirm channel for every connector)."""
        return self._publisher

    def subscriber(self, app_id: str) -> "_Subscriber":
        return _Subscriber(self, app_id)

    def health(self) -> dict:
        blocked = self.connection.blocked_reason
        backlog = self._publisher.backlog
        broker = self.connection.broker if self.connected else None
        return {
            "connected": self.connected,
            "broker": str(broker) if broker is not None else None,
            # Which cluster node: host:port of the URL in use and its cluster name.
            "broker_address": broker.address if broker is not None else None,
            "broker_cluster": self.connection.cluster_name if broker is not None else None,
            "blocked": blocked is not None,
            "blocked_reason": blocked,
            "buffered": backlog,
            "in_flight": self._publisher.in_flight,
            "degraded": (not self.connected) or blocked is not None,
        }


@implementer(ISubscriber)
class _Subscriber:
    """Subscribes handlers of one connector to queues of the AMQP bus."""

    def __init__(self, bus: AMQPBus, app_id: str) -> None:
        self.bus = bus
        self.app_id = app_id

    def subscribe(self, queue: QueueSpec, handler) -> AMQPSubscriber:
        s = self.bus.settings
        consumer = Consumer(queue.name, handler, self.bus.publisher(self.app_id),
                            dead_letter_exchange(s.exchange_prefix), self.bus.counters,
                            self.bus.reactor, s.retry_limit, s.retry_delay,
                            dead_letters=self.bus.dead_letters)
        sub = AMQPSubscriber(queue, consumer, s.prefetch, self.bus.reactor)
        self.bus.connection.add_subscriber(sub)
        return sub
