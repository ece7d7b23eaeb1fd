"""The ``centaure-alerter`` connector: threshold rules on the ``perf`` stream.

Start-up: the rules are loaded and checked (a bad rule stops start-up with
one line per problem), the inventory gives device types, models and tags to
the selectors. The evaluator's saved state (windows, breach status per host,
:mod:`connector_alerter.state`, in the alerter's tables, created or upgraded
here) is imported, then the samples the SQL writer stored since each host's
saved time are replayed (``[alerter] backfill``; read on a thread with
:mod:`centaure_shared.storage.query`) and the transitions they cause against the saved
breach status are published, confirmed, before the alerter subscribes to
``<prefix>.alerter``: a recovery or breach that happened while the alerter
was down is published, and a breach already published is not repeated.
Hosts with no saved state have their windows rebuilt without publishing.
A rule on a metric glob replays every stored metric name it matches, and a
host the inventory does not know is matched by its stored device type.

A ``perf`` message is evaluated at once on the reactor thread (a dict lookup
and a comparison per value), in the message's own time (as a replay would);
the ``threshold`` messages it causes are published with ids a replay gives
again, and the input is acked only once they are confirmed (or safe in the
core's on-disk buffer). ``perf`` messages not newer than what start-up
replayed for their host are skipped. The state of the hosts that changed is
saved every second and soon after a ``threshold``, off the reactor thread,
and on a clean stop. A timer runs the rules that need time to pass (no data
for a duration, ``for`` durations, schedules, ``valid_until``).

``alarm`` messages go to the notifier (:mod:`connector_alerter.notifier`:
routes, rules' own ``emails``, grouping, silences, templates, a persistent
outbox and retried delivery); an alarm is acked once the notifier has
committed what it decided. Without a routes file nor rules with ``emails``
the alerter notifies nobody (and says so at start-up).

SIGHUP reloads the rules (file or SQL table) and the routes file, read on a
thread. Each is checked whole: a bad one is refused with one log line naming
the file, the place and the problem, and the running one is kept; a good one
is swapped in on the reactor thread with one log line saying what changed.
Rules left unchanged keep their windows and breaches; the breaches of rules
removed or changed are published as recovered
(:meth:`~connector_alerter.evaluator.Evaluator.with_rules`). Pending groups
of removed routes are dropped. Other settings (``[alerter]`` options,
``[smtp]``, the database) need a restart.

Several nodes (``[bus] partitions = P > 0``; with 0, the default, all of the
above, one queue ``<prefix>.alerter``):

* Evaluation is per host. The alerter owns the partitions whose ``alerter``
  tokens it holds (:func:`connector.ownership.ownership`) and consumes their
  queues ``<prefix>.alerter.p<N>`` (:class:`connector.ownership.PartitionQueues`).
  Before consuming partition p it loads the saved evaluator state of p's
  hosts from SQL (:class:`connector_alerter.state.EvalStateStore`), replays
  their stored samples since then (``backfill``) and publishes the
  transitions found, as a start-up does for every host on one node. Handing
  p on: its messages received are finished, the state of its hosts is saved
  (awaited before the token goes), then dropped. Lost (the connection
  dropped): dropped at once, unsaved (another node may own them already).
  Time-driven transitions (the timer) are published only for hosts owned.
  ``threshold`` messages carry the partition in their routing key.
* Notifying is not per host (a group spans hosts): it runs on one node, the
  holder of the single ``notifier`` token (``ownership(runtime, "notifier",
  partitions=1)``; active/standby). The holder consumes ``alarm`` messages
  from ``<prefix>.alerter.notifier`` (bound to every ``alarm``, declared by
  every alerter node at start; quorum, single active consumer), groups them
  and delivers the outbox. Gained: the groups, last-told records, silences
  and pending outbox rows are loaded from SQL, then the queue is consumed.
  Releasing: the queue is cancelled, the alarms received are finished, the
  current flush and sends end, then the token goes. Lost: the notifier
  halts at once (no new send starts; what is in flight ends on its own).
  ``alarm`` messages reaching the partition queues are acked unused.
  Taking over is safe because everything the notifier decided is in SQL
  before it is acked or sent (outbox rows with unique idempotency keys,
  group state in the same transaction): the new holder re-reads it, an
  ``alarm`` redelivered queues nothing twice (the outbox skips a key queued
  already), and a row is marked sent only after the receiver took it, so
  the one repeat possible is a row the old holder's SMTP server accepted
  before it died and that it had not marked sent: sent again with the same
  idempotency key (headers and ``Message-ID``). At least once, exactly once
  per idempotency key for a receiver that deduplicates.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any

import sqlalchemy as sa
from twisted.application import service
from twisted.internet import defer, task, threads
from twisted.logger import Logger
from zope.interface import implementer

from connector import messages, startup
from connector.interfaces import IMessageHandler, IOwnershipListener
from connector.ownership import PartitionQueues, ownership
from connector.partitions import partition_of
from connector.reload import reload_on_sighup
from connector.retry import retry_in_thread
from connector.settings import settings_dir
from connector.topology import Binding, QueueSpec, connector_queue, partition_queue

from .replay import Replay
from .state import EvalStateStore, StateSaver, ms, threshold_message_id

__all__ = ["CONNECTOR", "AlerterService", "build", "device_record"]

CONNECTOR = "alerter"
#: The role of the notifier's one ownership token (several nodes).
NOTIFIER_ROLE = "notifier"
#: Seconds between saves of the evaluator's changed hosts.
SAVE_INTERVAL = 1.0


def notifier_queue(prefix: str) -> QueueSpec:
    """``<prefix>.alerter.notifier``: every ``alarm``, read by the notifier token's holder."""
    base = partition_queue(prefix, CONNECTOR, 0)
    return QueueSpec(name=f"{prefix}.{CONNECTOR}.{NOTIFIER_ROLE}",
                     bindings=(Binding(messages.exchange_name(prefix, "alarm"), "#"),),
                     arguments=dict(base.arguments))


@implementer(IMessageHandler)
class AlerterService(service.Service):
    """Evaluates the rules on every ``perf`` message and publishes ``threshold`` changes."""

    log = Logger()

    def __init__(self, runtime, evaluator, devices: dict, engine: sa.Engine | None) -> None:
        self.runtime = runtime
        self.reactor = runtime.reactor
        self.settings = runtime.settings
        self.conf = self.settings.section("alerter")
        self.evaluator = evaluator
        self.devices = devices
        self.engine = engine
        self.counters = runtime.counters(CONNECTOR)
        self.publisher = runtime.bus.publisher(CONNECTOR)
        #: ``<prefix>.threshold``, named once.
        self._threshold_exchange: str | None = None
        self.state = "starting"
        self.notifier = None
        self.missing_rules: str | None = None
        self._ticker: task.LoopingCall | None = None
        self._stopping = False
        self.saver: StateSaver | None = None
        #: host -> newest sample time (ms) replayed at start-up: older perf is skipped.
        self._replayed: dict[str, int] = {}
        self.last_error: str | None = None
        self._reloading: defer.Deferred | None = None
        #: ``[bus] partitions`` (0: one node owns every host).
        self.partitions = self.settings.bus.partitions
        self.ownership = None
        self.queues: PartitionQueues | None = None
        self.notifier_role: NotifierRole | None = None
        self.store: EvalStateStore | None = None
        #: Partitions being handed on: their state is saved before it is dropped.
        runtime.health_checks[CONNECTOR] = self.health

    def startService(self) -> None:
        super().startService()
        reload_on_sighup(self.reactor, self.reload)
        d = defer.ensureDeferred(self._start())
        d.addErrback(self._start_failed)

    def _start_failed(self, failure) -> None:
        """A start-up step failed for good: the process stops with one line saying why."""
        if self._stopping:
            return
        from centaure_shared.sql import error_summary

        startup.fail_start(CONNECTOR, failure, error_summary(failure.value), self.reactor)

    async def _start(self) -> None:
        if self.missing_rules:
            self.log.warn("no rules file {path}: the alerter evaluates nothing",
                          path=self.missing_rules)
        if self.partitions:
            await self._start_partitioned()
            return
        if self.engine is not None:
            if not await self._restore():
                return
        routes = os.path.join(settings_dir(self.settings), self.conf.routes)
        if os.path.exists(routes) or self._rule_emails():
            await self._open_notifier()
        else:
            self.log.warn("no routes file {path}: the alerter notifies nobody", path=routes)
        if self._stopping:
            return
        self.state = "ready"
        self._ticker = task.LoopingCall(self._tick)
        self._ticker.clock = self.reactor
        self._ticker.start(1.0, now=False)
        queue = connector_queue(self.settings.bus.exchange_prefix, CONNECTOR,
                                self.settings.bus.queue_type)
        self.runtime.bus.subscriber(CONNECTOR).subscribe(queue, self)

    # --- several nodes (see the module's docstring) ------------------------------------

    async def _start_partitioned(self) -> None:
        """Tables ready, then the partition queues and the notifier follow the tokens."""
        from centaure_shared.sql import error_summary, is_outage

        from . import migrate

        db = self.settings.section("db")
        prefix = self.conf.table_prefix
        if self.engine is not None:
            def waiting(exc: BaseException) -> None:
                self.state, self.last_error = "waiting for the database", error_summary(exc)

            ok = await retry_in_thread(
                self.reactor, lambda: migrate.upgrade(self.engine, prefix) or True,
                lambda exc: is_outage(exc) or isinstance(exc, migrate.MigrationLockTimeout),
                db.retry_initial, db.retry_max, "alerter tables", lambda: self._stopping,
                waiting)
            if ok is None:
                return
            self.last_error = None
            self.store = EvalStateStore(self.engine, prefix)
            self.saver = StateSaver(self.reactor, self.store, self.evaluator.take_changes,
                                    SAVE_INTERVAL)
            self.saver.start()
        if self._stopping:
            return
        routes = os.path.join(settings_dir(self.settings), self.conf.routes)
        # Declared by every node, so that no alarm is dropped while no node holds the token.
        self.runtime.bus.declare(notifier_queue(self.settings.bus.exchange_prefix))
        if os.path.exists(routes) or self._rule_emails():
            self.notifier_role = NotifierRole(
                self, ownership(self.runtime, NOTIFIER_ROLE, partitions=1))
        else:
            self.log.warn("no routes file {path}: the alerter notifies nobody", path=routes)
        self.state = "ready"
        self._ticker = task.LoopingCall(self._tick)
        self._ticker.clock = self.reactor
        self._ticker.start(1.0, now=False)
        self.ownership = ownership(self.runtime, CONNECTOR)
        self.queues = PartitionQueues(self.runtime, CONNECTOR, self, self, self.ownership)

    def _hosts_of(self, partitions) -> list[str]:
        return [h for h in self.evaluator.hosts()
                if partition_of(h, self.partitions) in partitions]

    async def prepare(self, partitions) -> None:
        """Load the saved state of ``partitions``' hosts, replay their samples, publish."""
        if self.store is None:
            return
        from centaure_shared.sql import error_summary, is_outage

        db = self.settings.section("db")
        parts, count = frozenset(partitions), self.partitions
        mine = lambda host: partition_of(host, count) in parts  # noqa: E731

        def load() -> dict:
            return {h: v for h, v in self.store.load().items() if mine(h)}

        def waiting(exc: BaseException) -> None:
            self.last_error = error_summary(exc)

        gone = lambda: self._stopping or not (parts & self.ownership.owned)  # noqa: E731
        saved = await retry_in_thread(self.reactor, load, is_outage, db.retry_initial,
                                      db.retry_max, "alerter state", gone, waiting)
        if saved is None:
            return
        self.last_error = None
        self.evaluator.import_state({host: state for host, (state, _ts) in saved.items()})
        self.saver.remember(saved)
        thresholds: list[messages.Threshold] = []
        if self.conf.backfill and db.layout != "per_device":
            replay = Replay(self.evaluator, self.engine, db.table_prefix,
                            {host: ts for host, (_state, ts) in saved.items() if ts is not None},
                            only=mine)
            done = await retry_in_thread(
                self.reactor, lambda: replay.run(gone), is_outage, db.retry_initial,
                db.retry_max, "alerter replay", gone, waiting)
            if done is not None:
                self._replayed.update(replay.replayed)
                thresholds = replay.thresholds
        self.log.info("alerter partitions {parts}: state of {n} hosts loaded{t}",
                      parts=",".join(map(str, sorted(parts))), n=len(saved),
                      t=f", {len(thresholds)} transitions replayed" if thresholds else "")
        d = self.saver.flush()
        if thresholds:
            await self._publish(thresholds)
        await d

    def forget(self, partitions, handed_on: bool = False) -> defer.Deferred | None:
        """Drop the state of ``partitions``' hosts, saved first when handed on.

        Lost, another node may own them already: nothing is saved.
        """
        parts = frozenset(partitions)
        if handed_on and self.saver is not None:
            return defer.ensureDeferred(self._save_and_drop(parts))
        self._drop(parts)
        return None

    async def _save_and_drop(self, partitions: frozenset) -> None:
        hosts = self._hosts_of(partitions)
        for _ in range(3):
            await self.saver.flush()
            if not any(h in self.saver.waiting for h in hosts):
                break
        else:
            self.log.warn("state of {n} hosts of partitions handed on not saved",
                          n=len(hosts))
        self._drop(partitions)

    def _drop(self, partitions) -> None:
        if not partitions:
            return
        hosts = self._hosts_of(partitions) + [h for h in self._replayed
                                              if partition_of(h, self.partitions) in partitions]
        self.evaluator.drop_hosts(hosts)
        if self.saver is not None:
            self.saver.forget(hosts)
        for h in hosts:
            self._replayed.pop(h, None)

    def _rule_emails(self) -> dict[str, tuple[str, ...]]:
        return {r.name: r.emails for r in self.evaluator.rules if r.emails}

    async def _open_notifier(self) -> None:
        from .notifier import open_notifier

        self.notifier = await open_notifier(
            self.settings, self.reactor, self._publish_notification,
            source=f"{CONNECTOR}@{self.runtime.node}", inventory=self._inventory_fields,
            rule_emails=self._rule_emails(), metrics=self.counters)

    # --- reload (SIGHUP) ------------------------------------------------------------

    def reload(self) -> defer.Deferred:
        """Read the rules and the routes again; fires when applied or refused (never fails)."""
        if self._reloading is not None:
            return self._reloading
        d = defer.ensureDeferred(self._reload())
        d.addErrback(lambda f: self.log.failure("alerter reload failed", f))
        if not d.called:
            self._reloading = d

            def done(result: object) -> object:
                self._reloading = None
                return result
            d.addBoth(done)
        return d

    def _read_files(self) -> tuple[Any, Any]:
        """(rules or RulesError, routes or RoutesError or None without a file); on a thread."""
        from .routes import RoutesError, load_routes
        from .rules import RulesError, load_rules

        base = settings_dir(self.settings)
        try:
            rules: Any = load_rules(self.conf, base)
        except RulesError as e:
            rules = e
        path = os.path.join(base, self.conf.routes)
        routes: Any = None
        if self.notifier is not None or os.path.exists(path):
            try:
                routes = load_routes(path)
            except RoutesError as e:
                routes = e
        return rules, routes

    async def _reload(self) -> None:
        if self.state != "ready":
            # The start-up replay feeds the evaluator on a thread: no swap under it.
            self.log.warn("reload ignored: the alerter is {state}; send SIGHUP again once "
                          "it is ready", state=self.state)
            return
        rules, routes = await threads.deferToThread(self._read_files)
        if self._stopping:
            return
        if isinstance(rules, Exception):
            self.counters.inc("reload_errors")
            self.log.error("rules reload refused, keeping the {n} running rules: {error}",
                           n=len(self.evaluator.rules), error=_one_line(rules))
        else:
            await self._use_rules(rules)
        if isinstance(routes, Exception):
            self.counters.inc("reload_errors")
            self.log.error("routes reload refused, keeping the running routes: {error}",
                           error=_one_line(routes))
        elif routes is not None:
            if self.notifier is None and self.partitions:
                pass   # read by the notifier when this node gets the notifier token
            elif self.notifier is None:
                await self._open_notifier()
                self.log.info("routes loaded from {path}: {n} routes",
                              path=self.conf.routes, n=len(routes.routes))
            else:
                old = self.notifier.routes.by_name()
                dropped = await self.notifier.reconfigure(routes=routes)
                self.log.info("routes reloaded from {path}: {n} routes (was {was}){diff}{gone}",
                              path=self.conf.routes, n=len(routes.routes), was=len(old),
                              diff=_diff(old, routes.by_name()),
                              gone=f"; {dropped} pending groups of removed routes dropped"
                              if dropped else "")

    async def _use_rules(self, rules) -> None:
        """Swap in ``rules`` (checked), publishing the breaches of rules gone as recovered."""
        old = {r.name: r for r in self.evaluator.rules}
        evaluator, recovered = self.evaluator.with_rules(rules, time.time())
        self.evaluator = evaluator
        if self.saver is not None:
            self.saver.take = evaluator.take_changes
        shown = ("SQL table " + self.conf.rules_table if self.conf.rules_source == "sql"
                 else self.conf.rules)
        self.log.info("rules reloaded from {source}: {n} rules (was {was}){diff}{recovered}",
                      source=shown, n=len(evaluator.rules), was=len(old),
                      diff=_diff(old, {r.name: r for r in evaluator.rules}),
                      recovered=f"; {len(recovered)} breaches of removed or changed rules "
                      "recovered" if recovered else "")
        d = self._publish(recovered)
        emails = self._rule_emails()
        if self.notifier is not None:
            await self.notifier.reconfigure(rule_emails=emails)
        elif emails and not self.partitions:
            await self._open_notifier()
        if d is not None:
            await d

    async def _restore(self) -> bool:
        """Saved state imported, stored samples replayed, their transitions published.

        False when stopped meanwhile. Waits (retrying) while the database is away:
        taking messages without the saved state could repeat or miss a breach.
        """
        from centaure_shared.sql import error_summary, is_outage

        from . import migrate

        db = self.settings.section("db")
        prefix = self.conf.table_prefix

        def waiting(exc: BaseException) -> None:
            self.state, self.last_error = "waiting for the database", error_summary(exc)

        store = EvalStateStore(self.engine, prefix)

        def load() -> dict:
            migrate.upgrade(self.engine, prefix)
            return store.load()

        saved = await retry_in_thread(
            self.reactor, load,
            lambda exc: is_outage(exc) or isinstance(exc, migrate.MigrationLockTimeout),
            db.retry_initial, db.retry_max, "alerter state", lambda: self._stopping, waiting)
        if saved is None:
            return False
        self.last_error = None
        self.evaluator.import_state({host: state for host, (state, _ts) in saved.items()})
        self.saver = StateSaver(self.reactor, store, self.evaluator.take_changes, SAVE_INTERVAL)
        self.saver.remember(saved)
        thresholds: list[messages.Threshold] = []
        if self.conf.backfill and db.layout == "per_device":
            self.log.warn("backfill skipped: [db] layout = per_device keeps samples in one "
                          "table per metric and device, which the query API does not read; "
                          "windows start empty")
        elif self.conf.backfill:
            self.state = "backfilling"
            replay = Replay(self.evaluator, self.engine, db.table_prefix,
                            {host: ts for host, (_state, ts) in saved.items() if ts is not None})
            # An outage resumes with the host that failed: none fed twice, none skipped.
            done = await retry_in_thread(
                self.reactor, lambda: replay.run(lambda: self._stopping), is_outage,
                db.retry_initial, db.retry_max, "alerter replay", lambda: self._stopping,
                waiting)
            if done is None:
                return False
            self.last_error = None
            self._replayed, thresholds = replay.replayed, replay.thresholds
            self.log.info("alerter state of {saved} hosts loaded; {n} stored samples replayed, "
                          "{t} transitions while down", saved=len(saved), n=replay.samples,
                          t=len(thresholds))
        if self._stopping:
            return False
        # Whatever the replay changed is saved at once, and the time it reached.
        self.saver.start()
        d = self.saver.flush()
        if thresholds:
            await self._publish(thresholds)
        await d
        return not self._stopping

    @defer.inlineCallbacks
    def stopService(self):
        self._stopping = True
        super().stopService()
        if self._ticker is not None and self._ticker.running:
            self._ticker.stop()
        if self.saver is not None:
            # The last changes: a clean stop replays nothing at the next start.
            yield self.saver.stop()
        if self.notifier_role is not None:
            yield self.notifier_role.stop()
        elif self.notifier is not None:
            self.notifier.stop()
        if self.engine is not None:
            yield threads.deferToThread(self.engine.dispose)

    # --- IMessageHandler ------------------------------------------------------------

    def handle(self, message, delivery) -> defer.Deferred | None:
        """Evaluate a ``perf``; count an ``alarm`` (notifications come next)."""
        if isinstance(message, messages.Perf):
            if self._replayed and self._already_replayed(message):
                self.counters.inc("perf_replayed_skipped")
                return None
            self.counters.inc("perf_evaluated")
            self.counters.inc("values_evaluated", len(message.metrics))
            # In the message's time, as a replay from the stored samples would.
            return self._publish(self.evaluator.evaluate(message))
        if isinstance(message, messages.Alarm):
            if self.partitions:
                # Not bound to the partition queues (topology.PARTITIONED_TYPES): the
                # notifier token's holder reads them from its own queue.
                return None
            self.counters.inc("alarms_received")
            if self.notifier is not None:
                return defer.ensureDeferred(self.notifier.handle_alarm(message))
        return None

    def _already_replayed(self, perf: messages.Perf) -> bool:
        """True for a queued ``perf`` whose samples start-up replayed (or the saved state holds)."""
        last = self._replayed.get(perf.host)
        if last is None:
            return False
        if ms(perf.ts) <= last:
            return True
        del self._replayed[perf.host]   # newer: this host is past the replay for good
        return False

    def _publish_notification(self, notification: messages.Notification):
        self.counters.inc("notifications_published")
        return self.publisher.publish(notification)

    def _inventory_fields(self, host: str) -> dict:
        device = self.devices.get(host)
        return {} if device is None else device_record(device)

    def _tick(self) -> None:
        thresholds = self.evaluator.tick(time.time())
        if self.ownership is not None:
            owned = self.ownership.owned
            thresholds = [t for t in thresholds
                          if partition_of(t.host, self.partitions) in owned]
        d = self._publish(thresholds)
        if d is not None:
            d.addErrback(lambda f: self.log.failure("threshold publish failed", f))

    def _publish(self, thresholds: list[messages.Threshold]) -> defer.Deferred | None:
        if not thresholds:
            return None
        self.counters.inc("thresholds_published", len(thresholds))
        exchange = self._threshold_exchange
        if exchange is None:
            exchange = self._threshold_exchange = messages.exchange_name(
                self.settings.bus.exchange_prefix, "threshold")
        publish_raw, encode, routing_key = (self.publisher.publish_raw, messages.encode,
                                            messages.routing_key)
        partitions = self.partitions
        if self.saver is not None:
            self.saver.soon()   # the state recording these transitions, soon
        if len(thresholds) == 1:
            # Most messages with a transition have one: no occurrence count, no gathering.
            t = thresholds[0]
            return publish_raw(exchange, routing_key(t, partitions), encode(t),
                               {"message_id": threshold_message_id(t), "type": "threshold",
                                "timestamp": t.ts}, durable=True)
        occurrences: dict[str, int] = {}
        sent = []
        for t in thresholds:
            # Ids a replay of the same samples gives again: the correlator drops repeats.
            base = threshold_message_id(t)
            n = occurrences[base] = occurrences.get(base, -1) + 1
            mid = base if n == 0 else threshold_message_id(t, n)
            # Durable: the perf that gave it is acked once this fires.
            sent.append(publish_raw(exchange, routing_key(t, partitions), encode(t),
                                    {"message_id": mid, "type": "threshold", "timestamp": t.ts},
                                    durable=True))
        return defer.gatherResults(sent, consumeErrors=True)

    def health(self) -> dict:
        """State, rules and breaches, for /health and heartbeats."""
        breached = self.evaluator.breached()
        body = {"state": self.state, "degraded": self.state != "ready",
                "rules": len(self.evaluator.rules),
                "breached": sum(len(v) for v in breached.values())}
        if self.last_error:
            body["last_error"] = self.last_error
        if self.saver is not None:
            body["state_saves"] = self.saver.health()
        if self.notifier is not None:
            body["notifications"] = dict(self.notifier.counters)
        if self.ownership is not None:
            body["partitions"] = sorted(self.ownership.owned)
        if self.notifier_role is not None:
            body["notifier_active"] = self.notifier_role.active
            body["notifier_activations"] = self.notifier_role.activations
        return body


def device_record(device: Any) -> dict[str, Any]:
    """Every field of an inventory ``Device``, for routes; notifications show fewer
    (:func:`connector_alerter.templates.device_context`)."""
    return {"name": device.name, "address": device.address,
            "device_type": device.device_type, "model": device.model, "id": device.id,
            "parent": device.parent, "tags": list(device.tags), **dict(device.fields)}


def _one_line(error: Exception) -> str:
    """An error's text on one log line (a file's problems joined by ' | ')."""
    return " | ".join(" ".join(line.split()) for line in str(error).splitlines() if line.strip())


def _diff(old: dict, new: dict, most: int = 10) -> str:
    """``; added a, b; removed c; changed d`` between two name -> item maps ('' if equal)."""
    def names(items: list[str]) -> str:
        return ", ".join(items[:most]) + (f" and {len(items) - most} more" if len(items) > most
                                          else "")
    parts = []
    for label, items in (("added", [n for n in new if n not in old]),
                         ("removed", [n for n in old if n not in new]),
                         ("changed", [n for n in new if n in old and _differs(old[n], new[n])])):
        if items:
            parts.append(f"{label} {names(items)}")
    return "; " + "; ".join(parts) if parts else "; unchanged"


def _differs(a: object, b: object) -> bool:
    from .rules import Rule

    if isinstance(a, Rule) and isinstance(b, Rule):  # its place in the file aside
        return dataclasses.replace(a, where="") != dataclasses.replace(b, where="")
    return a != b


def build(runtime) -> AlerterService:
    """The alerter of ``runtime``'s process: rules and inventory read and checked now."""
    from centaure_shared.inventory import load_optional_inventory

    from .evaluator import Evaluator
    from .rules import RulesError, load_rules

    settings = runtime.settings
    conf = settings.section("alerter")
    base = settings_dir(settings)
    missing_rules = None
    if conf.rules_source == "yaml" and not os.path.exists(os.path.join(base, conf.rules)):
        # centaure-all on a node without rules: the alerter idles, and says so at start.
        missing_rules = os.path.join(base, conf.rules)
        rules = ()
    else:
        try:
            rules = load_rules(conf, base)
        except RulesError as e:
            raise ValueError(str(e)) from None
    inventory = load_optional_inventory(settings)
    devices = {} if inventory is None else {d.name: d for d in inventory}
    from centaure_shared.sql import make_engine

    # The evaluator's state (and the backfill's samples) live in [database].
    engine = make_engine(settings.database.url.reveal())
    evaluator = Evaluator(rules, devices, f"{CONNECTOR}@{runtime.node}")
    alerter = AlerterService(runtime, evaluator, devices, engine)
    alerter.missing_rules = missing_rules
    return alerter



@implementer(IOwnershipListener, IMessageHandler)
class NotifierRole:
    """The notifier, run by the node holding the one ``notifier`` token (module docstring)."""

    log = Logger()

    def __init__(self, service: AlerterService, ownership_) -> None:
        self.service = service
        self.ownership = ownership_
        self.spec = notifier_queue(service.settings.bus.exchange_prefix)
        self.sub = None
        self.outstanding: set[defer.Deferred] = set()
        self._starting: defer.Deferred | None = None
        #: Times this node became the active notifier.
        self.activations = 0
        ownership_.add_listener(self)

    @property
    def active(self) -> bool:
        return self.sub is not None

    def gained(self, partitions) -> defer.Deferred:
        if self._starting is None and self.sub is None:
            self._starting = defer.ensureDeferred(self._activate())
        return self._starting

    async def _activate(self) -> None:
        s = self.service
        try:
            while True:
                if s._stopping or not self.ownership.owned:
                    return
                try:
                    await s._open_notifier()   # groups, outbox, silences from SQL; ticking
                    break
                except Exception as e:
                    s.last_error = str(e).splitlines()[0][:300] if str(e) else repr(e)
                    self.log.warn("notifier: cannot start, retrying: {error}",
                                  error=s.last_error)
                    d: defer.Deferred = defer.Deferred()
                    s.reactor.callLater(1.0, d.callback, None)
                    await d
            if s._stopping or not self.ownership.owned:
                self._halt()
                return
            self.sub = s.runtime.bus.subscriber(CONNECTOR).subscribe(self.spec, self)
            self.activations += 1
            self.log.info("notifier: active on this node (the notifier token is held here)")
        finally:
            self._starting = None

    def handle(self, message, delivery) -> defer.Deferred | None:
        notifier = self.service.notifier
        if not isinstance(message, messages.Alarm) or notifier is None:
            return None
        self.service.counters.inc("alarms_received")
        d = defer.ensureDeferred(notifier.handle_alarm(message))
        self.outstanding.add(d)

        def done(result: object) -> object:
            self.outstanding.discard(d)
            return result
        d.addBoth(done)
        return d

    async def releasing(self, partitions) -> None:
        """Hand over: no more alarms, those received handled, current sends ended."""
        if self._starting is not None:
            await self._starting
        sub, self.sub = self.sub, None
        if sub is not None:
            self.service.runtime.bus.connection.remove_subscriber(sub)
            await sub.cancel()
            pending = list(self.outstanding)
            if pending:
                await defer.DeferredList(pending, consumeErrors=True)
        notifier = self.service.notifier
        if notifier is not None:
            await notifier.finish()
            notifier.halt()
            self.service.notifier = None
        if sub is not None:
            await sub.close()
        self.log.info("notifier: handed on")

    def lost(self, partitions) -> None:
        """Gone (the connection dropped): stop at once."""
        sub, self.sub = self.sub, None
        if sub is not None:
            self.service.runtime.bus.connection.remove_subscriber(sub)
            sub.close()
        if self._halt():
            self.log.warn("notifier: token lost: stopped")

    def _halt(self) -> bool:
        notifier = self.service.notifier
        if notifier is None:
            return False
        notifier.halt()
        self.service.notifier = None
        return True

    def stop(self) -> defer.Deferred:
        """A clean stop of the process: no new send (the token goes with the connection)."""
        self._halt()
        return defer.succeed(None)
