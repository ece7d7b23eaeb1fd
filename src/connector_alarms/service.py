"""The ``centaure-correlator`` connector: inputs to alarms, state in SQL, nothing lost.

Start-up: the correlator's tables are created or upgraded (Alembic, retried
while the database is away), the state is loaded (active alarms and recently
cleared ones, per host), the outbox left by the previous run is published
again, and only then does it subscribe to its queue (``<prefix>.correlator``:
``event``, ``alarm_snapshot``, ``threshold``, ``alarm_command``).
(With ``[bus] partitions``, see *Several nodes* below.)

A batch of input messages goes through four steps:

1. apply: the pure :class:`~connector_alarms.machine.Correlator` updates the
   host states in memory and says which ``alarm`` messages to publish;
2. commit: a snapshot of what changed is taken and one transaction (on a
   thread) writes it and puts those alarm messages in the outbox table;
   while the database is down this step is retried with backoff and nothing
   is acked;
3. publish: each alarm message goes to the bus with a deterministic id
   (``alarm:<ref>:<seq>``); the publisher's Deferred fires once the broker
   confirmed it or it is safe in the core's SQLite buffer;
4. ack: only now are the batch's inputs acked. Published ids are removed
   from the outbox in the next commit.

Up to :data:`PIPELINE` batches are in flight: the next ones are applied
while the previous one commits and publishes, so the reactor computes
while the database and the broker work. Commits stay one at a time and in
order (a snapshot is taken only once the previous commit has ended), and
so do publications. A commit is a group commit: its snapshot takes the
state and the alarms of every batch applied by then (state and outbox
always go together), so the batches that waited for it have nothing left
of their own and are published and acked without a transaction; the
slower the database, the more each commit carries. A batch is full at
``batch_size`` or at the bus's prefetch divided by :data:`PIPELINE`,
whichever is smaller, so that the broker sends the next batch while the
previous ones are committed.

A crash between 2 and 3 leaves the alarms in the outbox: the next start
publishes them again (same ids: the writer and the alerter see a duplicate
they ignore). A crash before 2 loses nothing: the inputs were not acked and
come back; redelivered ids already applied change nothing.

Expiry and held updates run on a timer as an input-less batch through the
same steps. Another timer (``[correlator] purge_interval``) deletes the rows
of alarms cleared more than ``keep_cleared`` ago that memory no longer
holds, in small batches on a thread (:mod:`connector_alarms.retention`).

Several nodes (``[bus] partitions = P``): hosts are spread over P
partitions (:func:`connector.partitions.partition_of`) and the broker's
ownership tokens say which are ours. Nothing is loaded at start (the
outbox is not republished as a whole either); the correlator consumes the
partition queues ``<prefix>.correlator.p<N>`` of what it owns through
:class:`~connector.ownership.PartitionQueues`. ``prepare`` loads the state
of the partitions gained from SQL (in a thread, retried while the database
is away; it first waits for our own commit in flight), replaces what memory
held for those hosts, and publishes again the outbox rows of those hosts (a
previous owner killed between its commit and its publish); only then are the
partition's messages consumed. ``forget`` drops those hosts from memory.
Alarm messages go out as ``alarm.<p>.<host>``. Ticks (expiry, held updates,
forgetting) touch only the hosts in memory, hence owned. Topology masking
sees only the parents owned here.

The rule that keeps a partition's state with its owner: each partition has
a *generation*, bumped by every ``forget``. Forget happens on a hand-on only
after the partition's delivered inputs are handled (committed, published),
and on a lost connection or token at once, when the inputs not acked yet go
back to the broker for the next owner: in both cases dropping memory loses
nothing committed, and what is not committed must not be written by us any
more. So:

* apply skips (does not ack: ``NotOwned``) an input whose host's partition
  is not owned at that moment; a message is never applied to a host not in
  memory, which would create an empty state and overwrite the real one;
* a snapshot carries the generations when it was taken, a batch's alarm
  messages those when it was applied; before each commit attempt (the first
  and every retry while the database is away), rows of a host whose
  partition's generation changed since its snapshot, and alarms since their
  apply, are left out; so are the rows of a failed save taken again by a
  later snapshot; the alarms left out are not published. The new owner
  loaded SQL's state and gets the inputs again: it makes those changes
  itself (the same input ids, seen by none).
* what forget cannot stop: a commit attempt already running in a thread
  when the partition goes. It lands within that transaction's time, while
  the next owner first waits for the broker to give it the token; a
  database slower than that could still write after the new owner's load
  (no SQL fencing yet).

Operators' commands: an ``alarm_command`` is applied only when its AMQP
``user-id`` (checked by RabbitMQ against the publishing connection's user)
is in ``[correlator] operators`` (recorded under that user, whatever the
body's ``user`` says) or in ``command_services`` (recorded under the body's
``user``: a console acting for its logged-in person); any other, or one
without user-id, is dead-lettered with the reason
(:mod:`connector_alarms.authz`). On the embedded bus only this process can
publish: commands are applied as sent.

An ``alarm_command`` without host is dead-lettered (the node owning the
alarm cannot be known: ``centaure alarms`` fills the host), so is one whose
ref is not an alarm of that host in memory, and any message whose routing
key's partition is not its host's (a publisher with another P).

SIGHUP reads the settings file and the inventory again (on a thread). A bad
one is refused with one log line (file, line or key, problem) and the running
configuration kept. Otherwise the topology (the inventory's parents) and the
``[correlator]`` settings in :data:`RELOADABLE` are applied in the next batch,
like an input: masks follow the new topology at once (the ``updated`` alarms
go through the outbox as any other) and due times follow the new durations.
One log line says what changed, and names the changed settings that need a
restart (``[correlator] table_prefix``, :data:`RESTART_SECTIONS`), which are
not applied.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import sqlalchemy as sa
from twisted.application import service
from twisted.internet import defer, task, threads
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from connector import messages, startup
from connector.batching import BatchCommitter
from connector.consumer import RejectedMessage
from connector.interfaces import IBatchStore, IMessageHandler
from connector.reload import reload_on_sighup
from connector.retry import retry_in_thread
from connector.partitions import partition_of
from connector.settings import mask_url
from connector.topology import connector_queue
from centaure_shared.sql import error_summary, is_outage, make_engine

from .authz import CommandPolicy

__all__ = ["CONNECTOR", "CorrelatorService", "build"]

CONNECTOR = "correlator"
#: Batches between apply and ack at once (one commits while the next one applies).
#: The group commit keeps state and alarms together for any value; 4 (smaller
#: batches, several taken by one commit) was measured no faster (docs/performance.md).
PIPELINE = 2
#: ``[correlator]`` settings a reload applies; the others need a restart.
RELOADABLE = ("update_interval", "expire_after", "expire_names", "keep_cleared", "flap_high",
              "flap_low", "mask_severity", "mask_all", "batch_size", "batch_interval",
              "tick_interval", "operators", "command_services", "purge_interval")
#: Sections the running correlator is built on: changed, they need a restart.
RESTART_SECTIONS = ("database", "db", "bus", "buffer", "connector")


class ReloadError(Exception):
    """The settings file or the inventory cannot be used; the message is one line."""


class NotOwned(RuntimeError):
    """An input of a partition no longer owned here: not applied, not acked (its owner takes it)."""


class _Applied:
    """What a batch's apply step produced: the alarms to publish, and how many inputs.

    ``generations``: the partitions' generations when it was applied (None on
    a single node); ``skipped``: the positions of the inputs left to their
    partition's owner.
    """

    __slots__ = ("out", "encoded", "inputs", "generations", "skipped", "commit_seq", "group",
                 "written")

    def __init__(self, out: list[tuple[str, messages.Alarm]], encoded: list[tuple[str, bytes]],
                 inputs: int, generations: tuple[int, ...] | None = None,
                 skipped: frozenset[int] = frozenset()) -> None:
        self.out = out
        self.encoded = encoded
        self.inputs = inputs
        self.generations = generations
        self.skipped = skipped
        #: The number of its commit (0: nothing to commit).
        self.commit_seq = 0
        #: The commit that took its alarms into the outbox (None: not taken yet).
        self.group: _Group | None = None
        #: The message ids of its alarms that commit wrote to the outbox (None: all).
        self.written: set[str] | None = None


class _Group:
    """One commit and the applied batches whose state and alarms it writes (a group commit).

    ``ok`` is set by the commit's thread once the transaction is committed:
    a batch of a group not ok when its own turn comes takes its alarms again.
    """

    __slots__ = ("members", "ok")

    def __init__(self, members: list[_Applied]) -> None:
        self.members = members
        self.ok = False


def stale_partitions(then: tuple[int, ...] | None, now: tuple[int, ...]) -> frozenset[int]:
    """The partitions forgotten between two readings of the generations (pure)."""
    if then is None:
        return frozenset()
    return frozenset(p for p, (a, b) in enumerate(zip(then, now)) if a != b)


def fence_snapshot(snapshot, now: tuple[int, ...], partitions: int):
    """``snapshot`` without the rows of the hosts whose partition was forgotten since it was taken.

    ``snapshot.tag`` holds the generations when it was taken (None: kept whole).
    """
    from .store import fence

    stale = stale_partitions(snapshot.tag, now)
    if not stale:
        return snapshot
    return fence(snapshot, lambda host: partition_of(host, partitions) not in stale)


@implementer(IMessageHandler, IBatchStore)
class CorrelatorService(service.Service):
    """Loads the state, then correlates the ``correlator`` queue in committed batches."""

    log = Logger()

    def __init__(self, runtime, engine: sa.Engine, parents: dict[str, str | None]) -> None:
        self.runtime = runtime
        self.reactor = runtime.reactor
        self.settings = runtime.settings
        self.conf = self.settings.section("correlator")
        self.db = self.settings.section("db")
        self.engine = engine
        self.parents = parents
        self.counters = runtime.counters(CONNECTOR)
        self.publisher = runtime.bus.publisher(CONNECTOR)
        self.alarm_exchange = messages.exchange_name(self.settings.bus.exchange_prefix, "alarm")
        self.source = f"{CONNECTOR}@{runtime.node}"
        #: Who may command alarms; replaced as soon as a reload is read.
        self.policy = CommandPolicy.from_settings(self.conf, self.settings.bus.embedded)
        self.correlator = None
        self.states = None
        self.store = None
        self.state = "starting"
        self.last_error: str | None = None
        self._prefetch = self.settings.bus.prefetch
        # A batch is full at batch_size, or at its share of the bus's prefetch when
        # smaller: the broker sends no more than prefetch unacked messages, so
        # waiting for more is waste, and PIPELINE batches must fit.
        self.batches = BatchCommitter(
            self.reactor, self, name="correlator-sql", batch_size=self._full(self.conf),
            batch_interval=self.conf.batch_interval, pipeline=PIPELINE,
            prefetch=self._prefetch, is_outage=is_outage,
            retry_initial=self.db.retry_initial, retry_max=self.db.retry_max,
            describe=error_summary)
        self._tick_due = False
        self._confirmed: list[str] = []
        self._stopping = False
        self._ticker: task.LoopingCall | None = None
        #: Deletes the rows of old cleared alarms on a timer (:mod:`connector_alarms.retention`).
        self.purger = None
        #: A reloaded configuration waiting for the next batch: (settings, parents).
        self._new_config: tuple[Any, dict[str, str | None]] | None = None
        self._reloading: defer.Deferred | None = None
        #: ``[bus] partitions``: 0 on a single node (every host is ours).
        self.partitions = self.settings.bus.partitions
        #: Partitions whose hosts are in memory (prepared, not forgotten since).
        self._owned: frozenset[int] = frozenset()
        #: Per partition, how many times it was forgotten: what a snapshot or an
        #: alarm was made under is compared with it before the commit writes it.
        self._generation: list[int] = [0] * self.partitions
        self._partition_queues = None
        #: Commits taken (snapshots) and ended (committed or failed), in order.
        self._commit_seq = 0
        self._commit_ended_seq = 0
        self._commit_waiters: list[tuple[int, defer.Deferred]] = []
        #: Batches applied whose state and alarms no snapshot has taken yet, in order.
        self._waiting: list[_Applied] = []
        runtime.health_checks[CONNECTOR] = self.health

    # --- start and stop -----------------------------------------------------------

    def _full(self, conf) -> int:
        return max(1, min(conf.batch_size, self._prefetch // PIPELINE))

    def startService(self) -> None:
        super().startService()
        reload_on_sighup(self.reactor, self.reload)
        d = defer.ensureDeferred(self._start())
        d.addErrback(self._start_failed)

    def _start_failed(self, failure) -> None:
        """A start-up step failed for good: the process stops with one line saying why."""
        if self._stopping:
            return
        startup.fail_start(CONNECTOR, failure, error_summary(failure.value), self.reactor)

    async def _start(self) -> None:
        from . import migrate
        from .machine import Correlator, MemoryHostStates
        from .store import StateStore

        prefix = self.conf.table_prefix

        def waiting(exc: BaseException) -> None:
            self.state, self.last_error = "waiting for the database", error_summary(exc)

        revision = await retry_in_thread(
            self.reactor, lambda: migrate.upgrade(self.engine, prefix),
            # Only an outage or another process's upgrade passes with time; a
            # schema newer than this code stops the process (see _start_failed).
            lambda exc: is_outage(exc) or isinstance(exc, migrate.MigrationLockTimeout),
            self.db.retry_initial, self.db.retry_max, "correlator schema",
            lambda: self._stopping, waiting)
        if revision is None:
            return
        self.store = StateStore(self.engine, prefix)
        if self.partitions:
            # Several nodes: each partition's state is loaded when it is ours (prepare).
            self.states = MemoryHostStates()
            self.correlator = Correlator(self.states, self.conf, self.source, self.parents)
            self.state, self.last_error = "ready", None
            if self._stopping:
                return
            self._start_ticker()
            from connector.ownership import PartitionQueues, ownership

            self.log.info("correlator ready: {n} partitions ([bus] partitions), each loaded "
                          "from {url} when this node owns it", n=self.partitions,
                          url=mask_url(self.settings.database.url.reveal()))
            self._partition_queues = PartitionQueues(self.runtime, CONNECTOR, self, self,
                                                     ownership(self.runtime, CONNECTOR))
            return
        loaded = await retry_in_thread(
            self.reactor, lambda: self.store.load(time.time() - self.conf.keep_cleared),
            is_outage, self.db.retry_initial, self.db.retry_max, "correlator state",
            lambda: self._stopping, waiting)
        if loaded is None:
            return
        hosts, outbox = loaded
        self.states = MemoryHostStates()
        for state in hosts.values():
            self.states.add(state)
        self.correlator = Correlator(self.states, self.conf, self.source, self.parents)
        active = sum(len(h.active()) for h in hosts.values())
        self.log.info("correlator state loaded from {url}: {hosts} hosts, {active} active "
                      "alarms, {outbox} alarm messages to publish again",
                      url=mask_url(self.settings.database.url.reveal()), hosts=len(hosts),
                      active=active, outbox=len(outbox))
        # What the previous run committed but did not see confirmed.
        await defer.gatherResults([self._publish(mid, body, host)
                                   for mid, body, host in _outbox_items(outbox)])
        self._confirmed.extend(mid for mid, _ in outbox)
        self.state, self.last_error = "ready", None
        if self._stopping:
            return
        self._start_ticker()
        queue = connector_queue(self.settings.bus.exchange_prefix, CONNECTOR,
                                self.settings.bus.queue_type)
        self.runtime.bus.subscriber(CONNECTOR).subscribe(queue, self)

    def _start_ticker(self) -> None:
        self._ticker = task.LoopingCall(self._on_tick)
        self._ticker.clock = self.reactor
        self._ticker.start(self.conf.tick_interval, now=False)
        from .retention import Purger

        # Several nodes: each purges the hosts it owns (see connector_alarms.retention).
        self.purger = Purger(self.reactor, self.store.purge_cleared,
                             lambda: self.conf.keep_cleared, self.counters,
                             self.conf.purge_interval,
                             keep=self.owns if self.partitions else None)
        self.purger.start()

    # --- partitions (IPartitionOwner, with [bus] partitions) ------------------------

    def owns(self, host: str) -> bool:
        """True when ``host``'s state is here (always on a single node)."""
        return not self.partitions or partition_of(host, self.partitions) in self._owned

    def prepare(self, partitions) -> defer.Deferred:
        """Load the hosts of ``partitions`` from SQL, publish their outbox: then they are ours."""
        return defer.ensureDeferred(self._prepare(frozenset(partitions)))

    async def _prepare(self, partitions: frozenset[int]) -> None:
        count = self.partitions
        partitions = partitions - self._owned
        if not partitions or self._stopping:
            return
        generations = {p: self._generation[p] for p in partitions}
        # Our own commit in flight ends first: what it writes is then read back.
        await self._until_committed()

        def wanted(host: str) -> bool:
            return partition_of(host, count) in partitions

        def waiting(exc: BaseException) -> None:
            self.state, self.last_error = "waiting for the database", error_summary(exc)

        parts = _ranges(partitions)
        loaded = await retry_in_thread(
            self.reactor, lambda: self.store.load_hosts(time.time() - self.conf.keep_cleared,
                                                        wanted),
            is_outage, self.db.retry_initial, self.db.retry_max,
            f"correlator state of partitions {parts}", lambda: self._stopping, waiting)
        if loaded is None:
            return
        self.state, self.last_error = "ready", None
        # Forgotten again while loading: not ours any more (its next prepare loads it).
        kept = frozenset(p for p in partitions if self._generation[p] == generations[p])
        if not kept:
            return

        def ours(host: str) -> bool:
            return partition_of(host, count) in kept

        loaded = loaded.only(ours)
        states = list(loaded.states.values())
        self.store.adopt(loaded, ours)
        self.correlator.adopt(states)
        self._owned = self._owned | kept
        outbox = [(mid, body, host) for mid, body, host in _outbox_items(loaded.outbox)
                  if ours(host)]
        active = sum(len(s.active()) for s in states)
        self.log.info("correlator partitions {parts} loaded: {hosts} hosts, {active} active "
                      "alarms, {outbox} alarm messages to publish again",
                      parts=_ranges(kept), hosts=len(states), active=active,
                      outbox=len(outbox))
        # What a previous owner committed but may not have seen confirmed.
        await defer.gatherResults([self._publish(mid, body, host)
                                   for mid, body, host in outbox])
        self._confirmed.extend(mid for mid, _, _ in outbox)

    def forget(self, partitions, handed_on: bool = False) -> defer.Deferred:
        """Drop the hosts of ``partitions`` from memory (see the module's rules).

        Handed on or lost alike: what is committed is in SQL, the rest comes
        back from the broker. The Deferred fires once the commit in flight,
        if any, has ended.
        """
        count = self.partitions
        partitions = frozenset(p for p in partitions if 0 <= p < count)
        if not partitions or self.states is None:
            return defer.succeed(None)
        # Bumped even for a partition still being prepared: its load is then discarded.
        for p in partitions:
            self._generation[p] += 1
        held = partitions & self._owned
        self._owned = self._owned - partitions

        def gone(host: str) -> bool:
            return partition_of(host, count) in partitions

        dropped = self.correlator.drop([h for h in self.states.hosts() if gone(h)])
        self.store.drop_hosts(gone)
        if held:  # told twice on a hand-on (releasing, then lost): said once
            self.log.info("correlator partitions {parts} given up: {hosts} hosts dropped from "
                          "memory", parts=_ranges(held), hosts=len(dropped))
        return self._until_committed()

    def _until_committed(self) -> defer.Deferred:
        """Fires once the commits taken so far have ended (written or failed)."""
        target = self._commit_seq
        if self._commit_ended_seq >= target:
            return defer.succeed(None)
        d: defer.Deferred = defer.Deferred()
        self._commit_waiters.append((target, d))
        return d

    def _commit_ended(self, applied: _Applied | None) -> None:
        if applied is None or not applied.commit_seq:
            return
        self._commit_ended_seq = max(self._commit_ended_seq, applied.commit_seq)
        ready = [d for target, d in self._commit_waiters if target <= self._commit_ended_seq]
        self._commit_waiters = [(t, d) for t, d in self._commit_waiters
                                if t > self._commit_ended_seq]
        for d in ready:
            d.callback(None)

    @defer.inlineCallbacks
    def stopService(self):
        self._stopping = True
        super().stopService()
        if self._ticker is not None and self._ticker.running:
            self._ticker.stop()
        if self.purger is not None:
            yield self.purger.stop()
        # The batches in flight end; the queued ones fail (the broker gives them back).
        yield self.batches.close(drain=False)
        yield threads.deferToThread(self.engine.dispose)

    # --- reload (SIGHUP) ------------------------------------------------------------

    def reload(self) -> defer.Deferred:
        """Read the settings and the inventory again; applied in the next batch, or refused."""
        if self._reloading is not None:
            return self._reloading
        d = defer.ensureDeferred(self._reload())
        d.addErrback(lambda f: self.log.failure("correlator reload failed", f))
        if not d.called:
            self._reloading = d

            def done(result: object) -> object:
                self._reloading = None
                return result
            d.addBoth(done)
        return d

    async def _reload(self) -> None:
        if self.correlator is None:
            self.log.warn("reload ignored: the correlator is {state}; send SIGHUP again once "
                          "it is ready", state=self.state)
            return
        try:
            settings, parents = await threads.deferToThread(_read_config, self.settings.source)
        except ReloadError as e:
            self.counters.inc("reload_errors")
            self.log.error("reload refused, keeping the running configuration: {error}",
                           error=str(e))
            return
        if self._stopping:
            return
        self._new_config = (settings, parents)
        # Commands are judged when they arrive: from now on, by the new lists (a
        # user struck off must not get one more command through before the batch).
        self.policy = CommandPolicy.from_settings(settings.section(CONNECTOR),
                                                  self.settings.bus.embedded)
        self._tick_due = True  # a batch now, even without input
        self.batches.flush()

    def _use_config(self, settings, parents: dict[str, str | None],
                    now: float) -> list[tuple[str, messages.Alarm]]:
        """Apply a reloaded configuration (in a batch's apply step); the alarms it changes."""
        old = self.conf
        conf = settings.section("correlator")
        restart = [f"[{name}]" for name in RESTART_SECTIONS
                   if settings.section(name) != self.settings.section(name)]
        if conf.table_prefix != old.table_prefix:
            restart.insert(0, "[correlator] table_prefix")
        conf = dataclasses.replace(conf, table_prefix=old.table_prefix)
        changed = [k for k in RELOADABLE if getattr(conf, k) != getattr(old, k)]
        before = dict(self.correlator.parents)
        after = {h: p for h, p in parents.items() if p}
        moved = sum(1 for h in set(before) | set(after) if before.get(h) != after.get(h))
        masked, unmasked = self.correlator.counters["masked"], self.correlator.counters["unmasked"]
        out = self.correlator.reconfigure(conf, parents, now)
        self.conf = conf
        self.batches.batch_size = self._full(conf)
        self.batches.batch_interval = conf.batch_interval
        if conf.tick_interval != old.tick_interval and self._ticker is not None \
                and self._ticker.running:
            self._ticker.stop()
            self._ticker = task.LoopingCall(self._on_tick)
            self._ticker.clock = self.reactor
            self._ticker.start(conf.tick_interval, now=False)
        if self.purger is not None:
            self.purger.set_interval(conf.purge_interval)
        self.log.info(
            "correlator reloaded: topology {links} parent links ({moved} changed); "
            "settings {changed}; {masked} alarms masked, {unmasked} unmasked{restart}",
            links=len(after), moved=moved, changed=", ".join(changed) or "unchanged",
            masked=self.correlator.counters["masked"] - masked,
            unmasked=self.correlator.counters["unmasked"] - unmasked,
            restart=f"; changed but kept until a restart: {', '.join(restart)}"
            if restart else "")
        return out

    # --- IMessageHandler ------------------------------------------------------------

    def handle(self, message, delivery) -> defer.Deferred:
        """Queue ``message``; fires once its batch is committed and its alarms published."""
        if self._stopping or self.correlator is None:
            return defer.fail(RuntimeError("correlator not running"))
        if isinstance(message, messages.AlarmCommand):
            try:
                message = self._authorize(message, delivery)
            except RejectedMessage as e:
                return defer.fail(e)
        if self.partitions:
            try:
                self._check_partition(message, delivery)
            except NotOwned as e:
                return defer.fail(e)
        self.counters.inc("received")
        return self.batches.add((message, delivery.message_id))

    def _authorize(self, command: messages.AlarmCommand, delivery) -> messages.AlarmCommand:
        """``command`` with the person who acts, or RejectedMessage (dead-lettered, logged)."""
        try:
            applied = self.policy.authorize(command, delivery.user_id)
        except RejectedMessage:
            self.counters.inc("commands_refused")
            raise
        # An audit line per command: operators act rarely.
        self.log.info("alarm command: {action} of alarm {ref} ({host}) by {user} "
                      "(broker user {user_id})", action=command.action, ref=command.ref,
                      host=command.host or "?", user=applied.user,
                      user_id=delivery.user_id or "in process")
        return applied

    def _check_partition(self, message, delivery) -> None:
        """Several nodes: refuse what cannot be applied here (see the module's rules)."""
        host = getattr(message, "host", None)
        if host is None:
            self.counters.inc("rejected_without_host")
            raise RejectedMessage(
                f"{getattr(message, 'msg_type', 'message')} without host: with [bus] partitions "
                "it must name the alarm's host, which decides the node that owns it "
                "('centaure alarms' fills it)")
        p = partition_of(host, self.partitions)
        words = delivery.routing_key.split(".", 2)
        routed = int(words[1]) if len(words) == 3 and words[1].isdigit() else None
        if routed is not None and routed not in self._owned:
            # Delivered before this partition was let go: its next owner gets it again.
            raise NotOwned(f"partition {routed} no longer owned here")
        if routed != p:
            self.counters.inc("rejected_misrouted")
            raise RejectedMessage(
                f"host {host!r} is in partition {p} of {self.partitions}, but the message "
                f"came with routing key {delivery.routing_key!r} (a publisher with another "
                "[bus] partitions?)")
        if isinstance(message, messages.AlarmCommand):
            state = self.states.peek(host)
            if state is None or message.ref not in state.alarms:
                self.counters.inc("rejected_unknown_ref")
                raise RejectedMessage(f"alarm {message.ref} is not an alarm of host {host!r} "
                                      "(unknown, or cleared and forgotten)")

    def health(self) -> dict:
        """State, backlog and the state machine's counters, for /health and heartbeats."""
        state = "database unavailable" if self.batches.degraded else self.state
        last_error = self.batches.last_error if self.batches.degraded else self.last_error
        body = {"state": state, "last_error": last_error,
                "degraded": state != "ready", "pending": self.batches.pending}
        if self.correlator is not None:
            body["alarms"] = dict(self.correlator.counters)
        if self.states is not None:
            body["hosts"] = len(self.states)
        if self.partitions:
            body["partitions"] = sorted(self._owned)
        return body

    # --- batches (IBatchStore) ------------------------------------------------------

    def _on_tick(self) -> None:
        self._tick_due = True
        self.batches.flush()

    def apply(self, values: list[tuple[Any, str | None]]) -> _Applied:
        """Step 1 (reactor thread, pure): a reload first, as an input, then the inputs, the tick."""
        now = time.time()
        out: list[tuple[str, messages.Alarm]] = []
        if self._new_config is not None:
            (settings, parents), self._new_config = self._new_config, None
            out.extend(self._use_config(settings, parents, now))
        skipped: set[int] = set()
        owned = self._owned if self.partitions else None
        for i, (message, message_id) in enumerate(values):
            if owned is not None:
                host = getattr(message, "host", None)
                if host is None or partition_of(host, self.partitions) not in owned:
                    # Let go since it arrived (connection lost): not ours to apply.
                    skipped.add(i)
                    continue
            out.extend(self.correlator.apply(message, message_id, now))
        if self._tick_due:
            self._tick_due = False
            out.extend(self.correlator.tick(now))
        applied = _Applied(out, [(mid, messages.encode(alarm)) for mid, alarm in out],
                           len(values) - len(skipped),
                           tuple(self._generation) if self.partitions else None,
                           frozenset(skipped))
        self._waiting.append(applied)
        return applied

    def snapshot(self, applied: _Applied) -> tuple | None:
        """What changed since the previous commit, the alarms to add and the confirmed ids.

        A group commit: the state in memory holds the changes of every batch
        applied so far (with PIPELINE > 2, several wait while a commit runs),
        so the snapshot takes the alarms of all of them, not only
        ``applied``'s: state and outbox always go together (a batch's seen
        ids are never committed without its alarms). A batch whose alarms an
        earlier commit took has nothing of its own left: it is published and
        acked once that commit ended, without a transaction of its own unless
        later batches wait. If that commit failed, the batch and those after
        it in the group take their alarms again. An idle tick with nothing to
        write costs no transaction; confirmed ids wait for the next one.
        """
        group = applied.group
        retake: list[_Applied] = []
        if group is not None and not group.ok:
            # The commit that took it failed (its first batch's inputs go back).
            retake = group.members[group.members.index(applied):]
        batches, self._waiting = retake + self._waiting, []
        forgotten = self.states.take_forgotten_hosts()
        refs = [ref for ref, _ in forgotten]
        if self.partitions:
            now = tuple(self._generation)
            snapshot = self.store.snapshot(
                self.states.dirty(), refs, forgotten_hosts={r: h for r, h in forgotten if h},
                tag=now, again=lambda s: fence_snapshot(s, now, self.partitions))
            for batch in batches:
                stale = stale_partitions(batch.generations, now)
                if stale:
                    # Made from a state given up since: not ours to save nor to publish.
                    keep = [i for i, (_, alarm) in enumerate(batch.out)
                            if partition_of(alarm.host, self.partitions) not in stale]
                    batch.out = [batch.out[i] for i in keep]
                    batch.encoded = [batch.encoded[i] for i in keep]
        else:
            snapshot = self.store.snapshot(self.states.dirty(), refs)
        alarms = any(batch.encoded for batch in batches)
        if not (snapshot or alarms or (self._confirmed and applied.group is None)):
            return None
        done, self._confirmed = self._confirmed, []
        group = _Group(batches)
        for batch in batches:
            batch.group, batch.written = group, None
        self._commit_seq += 1
        applied.commit_seq = self._commit_seq
        return (snapshot, [([(mid, body, alarm.host) for (mid, body), (_, alarm)
                             in zip(batch.encoded, batch.out)], batch.generations, batch)
                           for batch in batches], done, group)

    def commit(self, work: tuple) -> None:
        """Step 2 (thread): the state and the outbox in one transaction.

        Several nodes: rows and alarms of a partition forgotten since they were
        made are left out (its next owner has loaded, or will load, what SQL
        holds); each batch keeps the ids of its alarms written to the outbox
        (``written``), the only ones it publishes.
        """
        snapshot, batches, done, group = work
        if self.partitions:
            now = tuple(self._generation)
            snapshot = fence_snapshot(snapshot, now, self.partitions)
            kept = []
            for items, generations, batch in batches:
                stale = stale_partitions(generations, now)
                if stale:
                    items = [item for item in items
                             if partition_of(item[2], self.partitions) not in stale]
                kept.append((items, batch))
        else:
            kept = [(items, batch) for items, _, batch in batches]
        self.store.save(snapshot, [(mid, body) for items, _ in kept for mid, body, _ in items],
                        done)
        if self.partitions:
            for items, batch in kept:
                batch.written = {mid for mid, _, _ in items}
        group.ok = True

    async def committed(self, applied: _Applied, result: None) -> list | None:
        """Step 3: publish, each confirmed (or in the on-disk buffer) before the acks."""
        self._commit_ended(applied)
        written = applied.written
        items = [(mid, body, alarm.host) for (mid, body), (_, alarm)
                 in zip(applied.encoded, applied.out) if written is None or mid in written]
        await defer.gatherResults([self._publish(mid, body, host) for mid, body, host in items])
        self._confirmed.extend(mid for mid, _, _ in items)
        self.counters.inc("alarms_published", len(items))
        self.counters.inc("applied", applied.inputs)
        if not applied.skipped:
            return None
        self.counters.inc("inputs_not_owned", len(applied.skipped))
        total = applied.inputs + len(applied.skipped)
        return [NotOwned("its partition is no longer owned here") if i in applied.skipped
                else None for i in range(total)]

    def failed(self, applied: _Applied | None, work: tuple | None, failure: Failure) -> None:
        """Not committed: the inputs go back to the broker and are applied again."""
        self._commit_ended(applied)
        self.log.failure("correlator batch failed", failure)

    def outage(self, error: BaseException, attempt: int, delay: float, size: int) -> None:
        """The database is away: the batch's state is kept and saved again."""
        self.log.warn("correlator state not saved ({error}); retry {n} in {delay:.1f}s",
                      error=error_summary(error), n=attempt, delay=delay)
        self.counters.inc("commit_retries")

    def recovered(self, attempts: int) -> None:
        """The database took the state again."""
        self.log.info("database writable again")

    def _publish(self, message_id: str, body: bytes, host: str) -> defer.Deferred:
        # Durable: the outbox row is deleted once this fires.
        # With [bus] partitions the key carries the host's partition (alarm.<p>.<host>),
        # which the alerter's partition queues are bound by.
        key = messages.host_routing_key("alarm", host, self.partitions)
        return self.publisher.publish_raw(self.alarm_exchange, key, body,
                                          {"message_id": message_id, "type": "alarm"},
                                          durable=True)


def _outbox_items(outbox: list[tuple[str, bytes]]):
    for mid, body in outbox:
        alarm = messages.decode(body, expected_type="alarm")
        yield mid, body, alarm.host


def _ranges(parts) -> str:
    """``0-3,7``: a short text for a set of partitions."""
    items, out = sorted(parts), []
    start = prev = None
    for p in items + [None]:
        if start is not None and p is not None and p == prev + 1:
            prev = p
            continue
        if start is not None:
            out.append(f"{start}-{prev}" if prev != start else f"{start}")
        start = prev = p
    return ",".join(out) or "none"


def _parents(settings) -> dict[str, str | None]:
    """Inventory host -> parent host (the topology), or {} without an inventory."""
    from centaure_shared.inventory import load_optional_inventory

    inventory = load_optional_inventory(settings)
    return {} if inventory is None else {d.name: d.parent for d in inventory}


def _read_config(path: str | None) -> tuple[Any, dict[str, str | None]]:
    """The settings file and the inventory's topology, read again (on a thread)."""
    from connector.settings import SettingsError, load_settings

    try:
        settings = load_settings(path)
    except SettingsError as e:
        raise ReloadError(str(e)) from None
    try:
        return settings, _parents(settings)
    except (ValueError, OSError) as e:
        text = " | ".join(" ".join(line.split()) for line in str(e).splitlines() if line.strip())
        raise ReloadError(f"inventory: {text}") from None


def build(runtime) -> CorrelatorService:
    """The correlator of ``runtime``'s process (no database I/O here)."""
    settings = runtime.settings
    url = settings.database.url.reveal()
    try:
        engine = make_engine(url)
    except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError, ImportError) as e:
        raise ValueError(f"[database] url {mask_url(url)}: {e}") from None
    try:
        parents = _parents(settings)
    except (ValueError, OSError) as e:
        raise ValueError(f"inventory: {e}") from None
    return CorrelatorService(runtime, engine, parents)

