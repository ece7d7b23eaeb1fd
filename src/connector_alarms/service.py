"""The ``centaure-correlator`` connector: inputs to alarms, state in SQL, nothing lost.

Start-up: the correlator's tables are created or upgraded (Alembic, retried
while the database is away), the state is loaded (active alarms and recently
cleared ones, per host), the outbox left by the previous run is published
again, and only then does it subscribe to its queue (``<prefix>.correlator``:
``event``, ``alarm_snapshot``, ``threshold``, ``alarm_command``).

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

Two batches are in flight at most (:data:`PIPELINE`): the next one is
applied while the previous one commits and publishes, so the reactor
computes while the database and the broker work. Commits stay one at a
time and in order (a snapshot is taken only once the previous commit has
ended), and so do publications; a batch is full at ``batch_size`` or at
half the bus's prefetch, whichever is smaller, so that the broker has sent
the next batch by the time the previous one is acked.

A crash between 2 and 3 leaves the alarms in the outbox: the next start
publishes them again (same ids: the writer and the alerter see a duplicate
they ignore). A crash before 2 loses nothing: the inputs were not acked and
come back; redelivered ids already applied change nothing.

Expiry and held updates run on a timer as an input-less batch through the
same steps.

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
from connector.interfaces import IBatchStore, IMessageHandler
from connector.reload import reload_on_sighup
from connector.retry import retry_in_thread
from connector.settings import mask_url
from connector.topology import connector_queue
from centaure_shared.sql import error_summary, is_outage, make_engine

__all__ = ["CONNECTOR", "CorrelatorService", "build"]

CONNECTOR = "correlator"
#: Batches between apply and ack at once (one commits while the next applies).
PIPELINE = 2
#: ``[correlator]`` settings a reload applies; the others need a restart.
RELOADABLE = ("update_interval", "expire_after", "expire_names", "keep_cleared", "flap_high",
              "flap_low", "mask_severity", "mask_all", "batch_size", "batch_interval",
              "tick_interval")
#: Sections the running correlator is built on: changed, they need a restart.
RESTART_SECTIONS = ("database", "db", "bus", "buffer", "connector")


class ReloadError(Exception):
    """The settings file or the inventory cannot be used; the message is one line."""


class _Applied:
    """What a batch's apply step produced: the alarms to publish, and how many inputs."""

    __slots__ = ("out", "encoded", "inputs")

    def __init__(self, out: list[tuple[str, messages.Alarm]], encoded: list[tuple[str, bytes]],
                 inputs: int) -> None:
        self.out = out
        self.encoded = encoded
        self.inputs = inputs


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
        #: A reloaded configuration waiting for the next batch: (settings, parents).
        self._new_config: tuple[Any, dict[str, str | None]] | None = None
        self._reloading: defer.Deferred | None = None
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
        self._ticker = task.LoopingCall(self._on_tick)
        self._ticker.clock = self.reactor
        self._ticker.start(self.conf.tick_interval, now=False)
        queue = connector_queue(self.settings.bus.exchange_prefix, CONNECTOR,
                                self.settings.bus.queue_type)
        self.runtime.bus.subscriber(CONNECTOR).subscribe(queue, self)

    @defer.inlineCallbacks
    def stopService(self):
        self._stopping = True
        super().stopService()
        if self._ticker is not None and self._ticker.running:
            self._ticker.stop()
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
        self.counters.inc("received")
        return self.batches.add((message, delivery.message_id))

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
        for message, message_id in values:
            out.extend(self.correlator.apply(message, message_id, now))
        if self._tick_due:
            self._tick_due = False
            out.extend(self.correlator.tick(now))
        return _Applied(out, [(mid, messages.encode(alarm)) for mid, alarm in out], len(values))

    def snapshot(self, applied: _Applied) -> tuple | None:
        """What changed since the previous commit, the alarms to add and the confirmed ids.

        An idle tick with nothing to write costs no transaction.
        """
        snapshot = self.store.snapshot(self.states.dirty(), self.states.take_forgotten())
        done, self._confirmed = self._confirmed, []
        if snapshot or applied.encoded or done:
            return snapshot, applied.encoded, done
        return None

    def commit(self, work: tuple) -> None:
        """Step 2 (thread): the state and the outbox in one transaction."""
        self.store.save(*work)

    async def committed(self, applied: _Applied, _result: None) -> None:
        """Step 3: publish, each confirmed (or in the on-disk buffer) before the acks."""
        await defer.gatherResults([self._publish(mid, body, alarm.host)
                                   for (mid, body), (_, alarm)
                                   in zip(applied.encoded, applied.out)])
        self._confirmed.extend(mid for mid, _ in applied.encoded)
        self.counters.inc("alarms_published", len(applied.out))
        self.counters.inc("applied", applied.inputs)

    def failed(self, applied: _Applied | None, work: tuple | None, failure: Failure) -> None:
        """Not committed: the inputs go back to the broker and are applied again."""
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
        return self.publisher.publish_raw(self.alarm_exchange, f"alarm.{host}", body,
                                          {"message_id": message_id, "type": "alarm"},
                                          durable=True)


def _outbox_items(outbox: list[tuple[str, bytes]]):
    for mid, body in outbox:
        alarm = messages.decode(body, expected_type="alarm")
        yield mid, body, alarm.host


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

