"""Who owns which hosts when several nodes run the same connector.

With ``[bus] partitions = 0`` (the default) one node owns every host: the
services get a :class:`~connector.membership.SingleNodeMembership` and read
their connector's one queue, as on a single node. With ``partitions = P``
the broker decides (:mod:`connector.amqp.tokens`): each role (``snmp``,
``correlator``, ``alerter``, ``notifier``) has P ownership tokens, and a
node owns the partitions whose tokens it holds.

:class:`PartitionQueues` turns a role's ownership into consumption: the
partition queues of the partitions owned here are consumed, each only after
the service has prepared for it (loaded its hosts' state from SQL), and
let go (the service finishes, then forgets those hosts) when the partition
is handed on or the connection drops.
"""

from __future__ import annotations

import signal
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import Interface, implementer

from connector.interfaces import IMembership, IMessageHandler, IOwnershipListener
from connector.membership import SingleNodeMembership
from connector.topology import partition_queue

__all__ = ["IPartitionOwner", "PartitionQueues", "drain_on_sigusr2", "ownership"]


def ownership(runtime, role: str, partitions: int | None = None) -> IMembership:
    """The ownership of ``role`` in ``runtime``'s process (one per role and process).

    ``partitions``: how many tokens the role has; default ``[bus] partitions``
    (0: one node owns everything). The notifier asks for 1 (active/standby).
    """
    bus_settings = runtime.settings.bus
    count = bus_settings.partitions if partitions is None else partitions
    if not bus_settings.partitions or not count:
        return SingleNodeMembership(runtime.node)
    holders = runtime.ownerships
    holder = holders.get(role)
    if holder is None:
        from connector.amqp.tokens import TokenHolder

        holder = TokenHolder(role, count, bus_settings.exchange_prefix, runtime.counters(role),
                             runtime.reactor, token_refresh=bus_settings.token_refresh,
                             balance_interval=bus_settings.balance_interval, node=runtime.node,
                             status_interval=runtime.settings.connector.status_interval,
                             lost_after=runtime.settings.connector.lost_after)
        holders[role] = holder
        runtime.bus.connection.add_subscriber(holder)
        # A clean stop hands the tokens on once the role's services have finished.
        runtime.bus.before_stop(holder.drain)
    return holder


def drain(runtime) -> defer.Deferred:
    """Hand every partition of every role of this process on; it keeps running, owning none."""
    holders = list(runtime.ownerships.values())
    return defer.gatherResults([defer.ensureDeferred(h.drain()) for h in holders],
                               consumeErrors=True)


def drain_on_sigusr2(runtime) -> None:
    """At SIGUSR2, :func:`drain` (a node about to be stopped for maintenance).

    Outside the main thread (a test's worker) signals cannot be handled:
    nothing is installed.
    """
    log = Logger()

    def on_usr2(signum: int, frame: Any) -> None:
        def start() -> None:
            log.info("SIGUSR2: handing every partition on (drain)")
            d = drain(runtime)
            d.addErrback(lambda f: log.failure("drain failed", f))
        runtime.reactor.callFromThread(start)

    try:
        signal.signal(signal.SIGUSR2, on_usr2)
    except ValueError:
        pass


class IPartitionOwner(Interface):
    """A service whose per-host state follows the partitions it owns."""

    def prepare(partitions):
        """Load the state of the hosts of ``partitions`` before their messages come (Deferred)."""

    def forget(partitions, handed_on):
        """Drop the cached state of the hosts of ``partitions``.

        ``handed_on``: True when this node hands them on (their messages are
        handled; state may still be saved for the next owner), False when
        they were lost (another node may own them already: save nothing).
        May return a Deferred (e.g. a commit or a save ending): when the
        partitions are handed on, their tokens go only once it fired.
        """


@implementer(IMessageHandler)
class _Tracked:
    """A partition's handler: remembers what it is still handling, to hand it on cleanly."""

    def __init__(self, handler) -> None:
        self.handler = handler
        self.outstanding: set[defer.Deferred] = set()

    def handle(self, message, delivery) -> defer.Deferred:
        d = defer.maybeDeferred(self.handler.handle, message, delivery)
        self.outstanding.add(d)

        def done(result: object) -> object:
            self.outstanding.discard(d)
            return result
        d.addBoth(done)
        return d

    def finished(self) -> defer.Deferred:
        """Fires once everything received so far is handled (or failed)."""
        pending = list(self.outstanding)
        return defer.DeferredList(pending, consumeErrors=False) if pending else defer.succeed(None)


@implementer(IOwnershipListener)
class PartitionQueues:
    """Consumes the partition queues of the partitions ``ownership`` gives this node."""

    log = Logger()

    def __init__(self, runtime, connector: str, handler, owner, ownership_) -> None:
        self.runtime = runtime
        self.connector = connector
        self.handler = handler
        self.owner = owner
        self.ownership = ownership_
        self.prefix = runtime.settings.bus.exchange_prefix
        #: partition -> (its queue's subscriber, the handler tracking its messages)
        self.subscribers: dict[int, tuple] = {}
        #: Partitions prepared and not forgotten since.
        self.prepared: set[int] = set()
        ownership_.add_listener(self)

    def gained(self, partitions) -> defer.Deferred:
        d = defer.maybeDeferred(self.owner.prepare, partitions)
        d.addCallback(lambda _: self._subscribe(partitions))
        return d

    def _subscribe(self, partitions) -> defer.Deferred | None:
        self.prepared |= partitions
        # Lost again while the state was loading: nothing to consume, forget it.
        gone = frozenset(p for p in partitions if p not in self.ownership.owned)
        subscriber = self.runtime.bus.subscriber(self.connector)
        for p in sorted(partitions - gone):
            if p not in self.subscribers:
                tracked = _Tracked(self.handler)
                sub = subscriber.subscribe(partition_queue(self.prefix, self.connector, p),
                                           tracked)
                self.subscribers[p] = (sub, tracked)
        return self._forget(gone, handed_on=False) if gone else None

    async def releasing(self, partitions) -> None:
        """Stop taking ``partitions``' messages, finish those received, then forget them."""
        subs = [self.subscribers.pop(p) for p in sorted(partitions) if p in self.subscribers]
        connection = self.runtime.bus.connection
        for sub, _ in subs:
            connection.remove_subscriber(sub)
        await defer.gatherResults([sub.cancel() for sub, _ in subs], consumeErrors=True)
        # Deliveries already sent before the cancel still arrive and are handled.
        await defer.gatherResults([tracked.finished() for _, tracked in subs],
                                  consumeErrors=True)
        await defer.gatherResults([sub.close() for sub, _ in subs], consumeErrors=True)
        await self._forget(partitions, handed_on=True)

    def lost(self, partitions) -> None:
        """Gone without a goodbye: the broker gives back what was not acked."""
        connection = self.runtime.bus.connection
        for p in partitions:
            entry = self.subscribers.pop(p, None)
            if entry is not None:
                connection.remove_subscriber(entry[0])
                entry[0].close()
        d = self._forget(partitions, handed_on=False)
        d.addErrback(lambda f: self.log.failure("forgetting partitions failed", f))

    def _forget(self, partitions, handed_on: bool) -> defer.Deferred:
        """``owner.forget`` once per partition that was prepared (a hand-on tells lost too)."""
        known = frozenset(p for p in partitions if p in self.prepared)
        self.prepared -= known
        if not known:
            return defer.succeed(None)
        return defer.maybeDeferred(self.owner.forget, known, handed_on)
