"""Ownership tokens held on the broker: who owns which partition of a role.

For each partition of a role (``snmp``, ``correlator``, ``alerter``,
``notifier``) a quorum queue with a single active consumer holds one token
message. Every node of that role consumes every token queue with a prefetch
of 1 and never acks the token: the node that holds partition p's token owns
p. The broker, not Centaure, decides: when the owner's connection drops, the
queue hands the token to the next consumer in line (Raft keeps the queue
through the loss of a broker node).

What a :class:`TokenHolder` adds to that:

- seeding: a token queue with no message and no consumer gets its token;
- refresh: RabbitMQ closes a channel whose delivery stays unacked longer
  than its ``consumer_timeout`` (30 min by default), so the owner rejects
  the token with requeue every ``token_refresh``; as the active consumer it
  gets it straight back. Not back within :data:`REFRESH_GRACE` seconds: the
  partition counts as lost;
- balance: every node of the role also consumes one always empty queue
  (``<prefix>.members.<role>``); every ``balance_interval`` the broker's
  count of its consumers (the live nodes of the role) gives a fair share;
  a node owning more
  hands the extra tokens on (cancel, requeue the token, consume again: it
  joins the end of the line), after its listeners have let go of them;
- a lost connection means nothing is owned any more, at once.
"""

from __future__ import annotations

import itertools
import os
import random

from twisted.internet import defer, task
from twisted.logger import Logger
from zope.interface import implementer

from connector import messages
from connector.amqp import fastpath
from connector.amqp.subscriber import channel_ids, declare_queue
from connector.interfaces import IOwnership
from connector.metrics import Counters
from connector.partitions import fair_share, partition_of
from connector.topology import members_queue, peers_queue, token_exchange, token_queue

#: Seconds a refreshed token may take to come back before it counts as lost.
REFRESH_GRACE = 10.0
#: Longest wait for the broker's count of live nodes.
COUNT_TIMEOUT = 10.0



@implementer(IOwnership)
class TokenHolder:
    """Holds the ownership tokens of one role's partitions, across reconnections.

    A subscriber of the bus connection (``attach``/``detach``) and the
    ``IOwnership`` its role's services ask. Listeners (``IOwnershipListener``)
    hear about partitions gained, about to be handed on, and lost.
    """

    log = Logger()

    def __init__(self, role: str, partitions: int, prefix: str, counters: Counters, clock,
                 token_refresh: float = 300.0, balance_interval: float = 10.0,
                 node: str = "", status_interval: float = 10.0, lost_after: int = 3) -> None:
        if partitions < 1:
            raise ValueError(f"partitions must be at least 1, got {partitions}")
        self.role = role
        self.partitions = partitions
        self.prefix = prefix
        self.counters = counters
        self.clock = clock
        self.token_refresh = token_refresh
        self.balance_interval = balance_interval
        self.node = node
        # Its own two channels: the tokens', and the one counting members.
        self.channel_id = channel_ids.take()
        self.probe_channel_id = channel_ids.take()
        self.listeners: list = []
        #: partition -> delivery tag of the token we hold (None while it is refreshed).
        self._held: dict[int, int | None] = {}
        self._tags: dict[int, str] = {}
        self._protocol = None
        self._channel = None
        self._generation = itertools.count()
        self._consumer_generation: dict[int, int] = {}
        self._gained: set[int] = set()
        self._gain_call = None
        self._refresh_loop: task.LoopingCall | None = None
        self._balance_loop: task.LoopingCall | None = None
        self._refreshing: dict[int, object] = {}
        self._balancing = False
        #: Drained for maintenance: owns nothing and takes nothing until restarted.
        self.drained = False
        self._members_tag: str | None = None
        #: Live nodes of this role last counted (heartbeats, else the broker's count).
        self.members = 0
        self.status_interval = status_interval
        #: A node whose last heartbeat is older is gone (as ``centaure status`` says).
        self.stale_after = status_interval * lost_after
        #: (node, pid) of this process, as its heartbeats name it.
        self.me = (node, os.getpid())
        #: (node, pid) -> (when its last heartbeat came, partitions of this role it owned).
        self.peers: dict[tuple[str, int], tuple[float, int]] = {}
        self._quiet_until = 0.0
        self._peers_tag: str | None = None
        counters.set("partitions_owned", 0)
        counters.set("partitions", partitions)

    # --- IOwnership -----------------------------------------------------------

    @property
    def owned(self) -> frozenset[int]:
        """The partitions whose token this node holds."""
        return frozenset(self._held)

    def owns(self, connector: str, host: str) -> bool:
        """True when ``host``'s partition is owned here."""
        return partition_of(host, self.partitions) in self._held

    def add_listener(self, listener) -> None:
        """Tell ``listener`` about the partitions gained, handed on and lost from now on."""
        self.listeners.append(listener)
        if self._held:
            self._notify_gained(set(self._held))

    # --- bus connection subscriber --------------------------------------------------

    def attach(self, protocol) -> defer.Deferred:
        """Seed the token queues, then consume every one of them (a fresh connection)."""
        if self.drained:
            return defer.succeed(None)
        return defer.ensureDeferred(self._attach(protocol))

    async def _attach(self, protocol) -> None:
        channel = await protocol.channel(self.channel_id)
        await channel.channel_open()
        # Prefetch 1 per consumer: one token per partition queue at a time.
        await channel.basic_qos(prefetch_count=1)
        members_spec = members_queue(self.prefix, self.role)
        await declare_queue(channel, members_spec)
        members_tag = self._members_tag = f"members.{self.role}.{self.channel_id}"
        protocol.consumers[members_tag] = lambda ch, deliver: None
        await channel.basic_consume(queue=members_spec.name, consumer_tag=members_tag,
                                         no_ack=True)
        members = (await channel.queue_declare(queue=members_spec.name,
                                               passive=True)).consumer_count
        await self._hear_peers(protocol, channel)
        for p in range(self.partitions):
            spec = token_queue(self.prefix, self.role, p)
            await declare_queue(channel, spec)
            ok = await channel.queue_declare(queue=spec.name, passive=True)
            if ok.message_count == 0 and ok.consumer_count == 0:
                # Nobody can hold it (no consumer): the queue has no token yet.
                # Two nodes seeding at once leave two tokens; harmless, since
                # a single active consumer gets them one at a time.
                self._publish_token(channel, spec.name)
                self.counters.inc("tokens_seeded")
        self.members = members
        self._protocol, self._channel = protocol, channel
        for p in range(self.partitions):
            await self._consume(p)
        self.log.info("{role}: waiting for ownership tokens of {n} partitions "
                      "({members} {role} nodes on the broker)",
                      role=self.role, n=self.partitions, members=members)
        self._start_loops()

    async def _hear_peers(self, protocol, channel) -> None:
        """Read the heartbeats of every connector, on an exclusive queue of this process.

        They say which nodes of the role are alive and how many partitions
        each owns. The broker's count of the members queue's consumers is not
        enough alone: a quorum queue goes on counting the consumers of a
        cluster node that died until that node comes back, and a node that
        counts one member too many hands tokens on for ever.
        """
        spec = peers_queue(self.prefix, self.role, *self.me)
        await channel.queue_declare(queue=spec.name, durable=False, exclusive=True,
                                    auto_delete=True, arguments=spec.arguments)
        for binding in spec.bindings:
            await channel.exchange_declare(exchange=binding.exchange, type="topic",
                                           durable=True)
            await channel.queue_bind(queue=spec.name, exchange=binding.exchange,
                                     routing_key=binding.pattern)
        tag = self._peers_tag = f"peers.{self.role}.{self.channel_id}"
        protocol.consumers[tag] = lambda ch, deliver: self._heard(deliver.body)
        await channel.basic_consume(queue=spec.name, consumer_tag=tag, no_ack=True)

    def _heard(self, body: bytes) -> None:
        try:
            status = messages.decode(body, expected_type="status")
        except messages.MessageError:
            return
        key = (status.node, status.pid)
        if status.state == "stopping":
            self.peers.pop(key, None)
            return
        ownership = status.ownership or {}
        if self.role in ownership:
            self.peers[key] = (self.clock.seconds(), len(ownership[self.role].owned))

    def _publish_token(self, channel, queue: str) -> None:
        from txamqp.content import Content

        content = Content(f"{self.role} token".encode())
        content["delivery mode"] = 2
        channel.basic_publish(exchange=token_exchange(self.prefix), routing_key=queue,
                              content=content)

    async def _consume(self, p: int) -> None:
        channel, protocol = self._channel, self._protocol
        generation = next(self._generation)
        tag = f"token.{self.role}.{p}.{self.channel_id}.{generation}"
        self._tags[p] = tag
        protocol.consumers[tag] = lambda ch, deliver, p=p, tag=tag: self._on_token(p, tag, ch,
                                                                                    deliver)
        await channel.basic_consume(queue=token_queue(self.prefix, self.role, p).name,
                                    consumer_tag=tag, no_ack=False)

    def detach(self, protocol, clean: bool) -> defer.Deferred:
        """The connection is closing or lost: nothing is owned any more."""
        if self._protocol is not protocol:
            return defer.succeed(None)
        self._stop_loops()
        for tag in [*self._tags.values(), self._members_tag, self._peers_tag]:
            protocol.consumers.pop(tag, None)
        self._protocol = self._channel = None
        self._tags.clear()
        lost = set(self._held)
        self._held.clear()
        self._gained.clear()
        for call in self._refreshing.values():
            if call.active():
                call.cancel()
        self._refreshing.clear()
        self._set_gauge()
        if lost:
            log = self.log.info if clean else self.log.warn
            log("{role}: {reason}: no longer owning partitions {parts}", role=self.role,
                reason="stopping" if clean else "connection lost", parts=_ranges(lost))
            self.counters.inc("partitions_lost", len(lost))
            for listener in list(self.listeners):
                listener.lost(frozenset(lost))
        return defer.succeed(None)

    # --- tokens arriving -------------------------------------------------------------

    def _on_token(self, p: int, tag: str, channel_id: int, deliver: fastpath.Deliver) -> None:
        channel = self._channel
        if channel is None or channel_id != channel.id or self._tags.get(p) != tag:
            return
        if p in self._held and self._held[p] is not None:
            # A second token for a partition we hold (two seeders): drop it.
            self._protocol.fast_ack(channel.id, deliver.delivery_tag, False)
            self.counters.inc("tokens_dropped")
            return
        refreshing = self._refreshing.pop(p, None)
        if refreshing is not None and refreshing.active():
            refreshing.cancel()
        new = p not in self._held
        self._held[p] = deliver.delivery_tag
        if new:
            self.counters.inc("takeovers")
            self._set_gauge()
            self._gained.add(p)
            if self._gain_call is None or not self._gain_call.active():
                # Tokens come in a burst at start-up: one notice for the burst.
                self._gain_call = self.clock.callLater(0.2, self._flush_gained)

    def _flush_gained(self) -> None:
        gained, self._gained = self._gained & set(self._held), set()
        if gained:
            self.log.info("{role}: now owning partitions {parts} ({n} of {total})",
                          role=self.role, parts=_ranges(gained), n=len(self._held),
                          total=self.partitions)
            self._notify_gained(gained)

    def _notify_gained(self, gained: set[int]) -> None:
        for listener in list(self.listeners):
            d = defer.maybeDeferred(listener.gained, frozenset(gained))
            d.addErrback(lambda f: self.log.failure("{role}: a listener failed on gained "
                                                    "partitions", f, role=self.role))

    def _set_gauge(self) -> None:
        self.counters.set("partitions_owned", len(self._held))

    # --- refresh -----------------------------------------------------------------

    def _start_loops(self) -> None:
        self._stop_loops()
        self._refresh_loop = task.LoopingCall(self._refresh)
        self._refresh_loop.clock = self.clock
        self._refresh_loop.start(self.token_refresh, now=False)
        self._balance_loop = task.LoopingCall(self._balance_tick)
        self._balance_loop.clock = self.clock
        self._balance_loop.start(self.balance_interval, now=False)

    def _stop_loops(self) -> None:
        for loop in (self._refresh_loop, self._balance_loop):
            if loop is not None and loop.running:
                loop.stop()
        self._refresh_loop = self._balance_loop = None

    def _refresh(self) -> None:
        channel = self._channel
        if channel is None:
            return
        for p, tag in list(self._held.items()):
            if tag is None:
                continue
            self._held[p] = None
            channel.basic_reject(delivery_tag=tag, requeue=True)
            self._refreshing[p] = self.clock.callLater(REFRESH_GRACE, self._not_back, p)

    def _not_back(self, p: int) -> None:
        self._refreshing.pop(p, None)
        if p in self._held and self._held[p] is None:
            # The broker gave it to someone else: no longer ours.
            del self._held[p]
            self._set_gauge()
            self.counters.inc("partitions_lost")
            self.log.warn("{role}: the token of partition {p} did not come back after a "
                          "refresh: no longer owning it", role=self.role, p=p)
            for listener in list(self.listeners):
                listener.lost(frozenset({p}))

    # --- balance ------------------------------------------------------------------

    def _balance_tick(self) -> None:
        if self._balancing or self._channel is None:
            return
        self._balancing = True
        d = defer.ensureDeferred(self._balance())
        d.addErrback(self._balance_failed, self._protocol)

        def done(_):
            self._balancing = False
        d.addBoth(done)

    def _balance_failed(self, failure, protocol) -> None:
        if protocol is not self._protocol:
            return  # the connection went meanwhile: detach() said what matters
        from txamqp.client import Closed

        if failure.check(Closed):
            # The connection is going (its loss is being noticed): one line.
            self.log.info("{role}: balancing stopped: the channel closed", role=self.role)
            return
        self.log.failure("{role}: balancing failed", failure, role=self.role)

    async def _balance(self) -> None:
        channel, protocol = self._channel, self._protocol
        if channel.closed:
            # The broker closed the tokens' channel (a refused method, or the
            # queue's node going away): every token on it went back to the
            # queues. Owning nothing, the connection starts over.
            self.log.error("{role}: the broker closed the ownership tokens' channel: "
                           "reconnecting", role=self.role)
            self.detach(protocol, clean=False)
            protocol.abort("ownership tokens' channel closed")
            return
        now = self.clock.seconds()
        live = {k: owned for k, (seen, owned) in self.peers.items()
                if now - seen <= self.stale_after and k != self.me}
        if live or self.me in self.peers:
            # Heartbeats flow: they name the live nodes and what each owns. Tokens
            # go only to nodes below their share, so a node counted but unable to
            # take one (gone, not yet stale) never makes them circle.
            self.members = 1 + len(live)
            share = fair_share(self.partitions, self.members)
            room = sum(max(0, share - owned) for owned in live.values())
        else:
            members = await self._count_members(protocol)
            if channel is not self._channel or members is None:
                return
            self.members = max(1, members)
            share = fair_share(self.partitions, self.members)
            room = self.partitions
        extra = min(len(self._held) - share, room)
        if extra <= 0 or now < self._quiet_until:
            # Nothing to give, or the last hand-on is not in the heartbeats yet.
            return
        self._quiet_until = now + 1.5 * self.status_interval
        # Not one whose token is being refreshed: it is on its way back.
        candidates = sorted(p for p, tag in self._held.items() if tag is not None)
        chosen = random.sample(candidates, min(extra, len(candidates)))
        if chosen:
            self.log.info("{role}: owning {n} partitions, fair share {share} for {m} nodes: "
                          "handing on {parts}", role=self.role, n=len(self._held),
                          share=share, m=self.members, parts=_ranges(chosen))
            await self.hand_on(chosen)

    async def _count_members(self, protocol) -> int | None:
        """The broker's count of live nodes of the role, asked on a channel of its own.

        A passive declaration the broker refuses (the queue's leader being
        elected again after a node died) closes its channel: never the one
        holding the tokens. That channel stays open between counts.
        """
        probe_id = self.probe_channel_id
        try:
            channel = await protocol.channel(probe_id)
            if not getattr(channel, "opened", False):
                await channel.channel_open()
                channel.opened = True
            asked = channel.queue_declare(queue=members_queue(self.prefix, self.role).name,
                                          passive=True)
            # While a queue elects a leader the answer can wait: never for ever.
            asked.addTimeout(COUNT_TIMEOUT, self.clock)
            ok = await asked
        except Exception as e:
            if isinstance(e, defer.TimeoutError):
                # The channel may still answer later: count on a new one next time.
                self.probe_channel_id = channel_ids.take()
            else:
                # Closed by the broker: the next count opens it again.
                protocol.channels.pop(probe_id, None)
            self.log.info("{role}: live nodes not counted this time: {error}", role=self.role,
                          error=str(e).splitlines()[0][:200] if str(e) else type(e).__name__)
            return None
        return ok.consumer_count

    async def hand_on(self, partitions, rejoin: bool = True) -> None:
        """Let the listeners finish with ``partitions``, then pass their tokens on.

        ``rejoin``: consume the token queues again afterwards (at the end of
        the line); a node that is draining does not.
        """
        chosen = frozenset(p for p in partitions if p in self._held)
        if not chosen:
            return
        await defer.gatherResults([defer.maybeDeferred(listener.releasing, chosen)
                                   for listener in list(self.listeners)], consumeErrors=True)
        channel, protocol = self._channel, self._protocol
        if channel is None:
            return  # the connection went meanwhile: detach() told the listeners
        for p in chosen:
            tag = self._held.pop(p, None)
            consumer = self._tags.pop(p, None)
            if consumer is not None:
                protocol.consumers.pop(consumer, None)
                # Cancel first: the requeued token then goes to the next in line.
                await channel.basic_cancel(consumer_tag=consumer)
            if tag is not None:
                channel.basic_reject(delivery_tag=tag, requeue=True)
            self.counters.inc("partitions_handed_on")
        self._set_gauge()
        for listener in list(self.listeners):
            listener.lost(chosen)
        if rejoin and channel is self._channel:
            for p in chosen:
                await self._consume(p)

    async def drain(self) -> None:
        """Hand every token on and take none any more (a node leaving for maintenance).

        The process keeps running; it takes part again after a restart.
        """
        if self.drained:
            return
        self.drained = True
        self._stop_loops()
        await self.hand_on(set(self._held), rejoin=False)
        channel, protocol = self._channel, self._protocol
        if channel is not None:
            # No longer in line for any token, nor counted as a live node.
            tags = list(self._tags.values()) + [self._members_tag, self._peers_tag]
            self._tags.clear()
            for consumer in tags:
                protocol.consumers.pop(consumer, None)
                await channel.basic_cancel(consumer_tag=consumer)
        self.log.info("{role}: drained: every partition handed on", role=self.role)

    def describe(self) -> dict:
        """For /health and heartbeats: partitions owned here, live nodes seen."""
        return {"partitions": self.partitions, "owned": sorted(self._held),
                "members": self.members}


def _ranges(parts) -> str:
    """``0-3,7,9-10``: a short text for a set of partitions."""
    items = sorted(parts)
    out, start, prev = [], None, None
    for p in items:
        if start is None:
            start = prev = p
        elif p == prev + 1:
            prev = p
        else:
            out.append(f"{start}-{prev}" if prev != start else f"{start}")
            start = prev = p
    if start is not None:
        out.append(f"{start}-{prev}" if prev != start else f"{start}")
    return ",".join(out) or "none"
