"""The ``centaure-alerter`` connector: threshold rules on the ``perf`` stream.

Start-up: the rules are loaded and checked (a bad rule stops start-up with
one line per problem), the inventory gives device types, models and tags to
the selectors, and the rules' windows are rebuilt from the samples the SQL
writer stored (``[alerter] backfill``; read on a thread with
:mod:`connector_db.query`), without publishing: a restart does not repeat a
breach. Then the alerter subscribes to ``<prefix>.alerter``.

A ``perf`` message is evaluated at once on the reactor thread (a dict lookup
and a comparison per value); the ``threshold`` messages it causes are
published, and the input is acked only once they are confirmed (or safe in
the core's on-disk buffer). A timer runs the rules that need time to pass
(no data for a duration, ``for`` durations, schedules, ``valid_until``).

``alarm`` messages go to the notifier (:mod:`connector_alerter.notifier`:
routes, grouping, silences, templates, a persistent outbox and retried
delivery); an alarm is acked once the notifier has committed what it decided.
Without a routes file the alerter notifies nobody (and says so at start-up).
"""

from __future__ import annotations

import os
import time

import sqlalchemy as sa
from twisted.application import service
from twisted.internet import defer, task, threads
from twisted.logger import Logger
from zope.interface import implementer

from connector import messages
from connector.interfaces import IMessageHandler
from connector.topology import connector_queue

__all__ = ["CONNECTOR", "AlerterService", "build"]

CONNECTOR = "alerter"
#: How far back start-up reads samples when no rule says (its lookback, windows).
DEFAULT_BACKFILL = 3600.0
#: Most samples read back per host at start-up.
BACKFILL_LIMIT = 10_000


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
        self.state = "starting"
        self.notifier = None
        self.missing_rules: str | None = None
        self._ticker: task.LoopingCall | None = None
        self._stopping = False
        runtime.health_checks[CONNECTOR] = self.health

    def startService(self) -> None:
        super().startService()
        d = defer.ensureDeferred(self._start())
        d.addErrback(lambda f: None if self._stopping else
                     self.log.failure("centaure-alerter start failed", f))

    async def _start(self) -> None:
        if self.missing_rules:
            self.log.warn("no rules file {path}: the alerter evaluates nothing",
                          path=self.missing_rules)
        if self.conf.backfill and self.engine is not None:
            self.state = "backfilling"
            n = await threads.deferToThread(self._read_backfill)
            self.log.info("alerter windows rebuilt from {n} stored samples", n=n)
        routes = os.path.join(_base_dir(self.settings), self.conf.routes)
        if os.path.exists(routes):
            from .notifier import open_notifier

            self.notifier = await open_notifier(
                self.settings, self.reactor, self._publish_notification,
                source=f"{CONNECTOR}@{self.runtime.node}", inventory=self._inventory_fields)
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

    def _read_backfill(self) -> int:
        """Replay the stored samples of the metrics the rules watch (writer thread)."""
        from connector_db.query import QueryError, devices, samples
        from connector_db.schema import make_schema

        schema = make_schema(self.settings.section("db").table_prefix)
        horizon = max([r.lookback or 0.0 for r in self.evaluator.rules] + [DEFAULT_BACKFILL])
        start = time.time() - horizon
        metrics = sorted({leaf.metric for r in self.evaluator.rules for leaf in r.leaves()
                          if leaf.metric and not leaf.is_glob})
        rows = []
        try:
            hosts = [d.name for d in devices(self.engine, schema)]
        except (QueryError, sa.exc.SQLAlchemyError) as e:
            self.log.warn("backfill skipped: {error}", error=str(e).splitlines()[0])
            return 0
        for host in hosts:
            for metric in metrics:
                try:
                    found = samples(self.engine, schema, host, metric, start=start,
                                    limit=BACKFILL_LIMIT, order="asc")
                except QueryError:
                    continue  # never stored for this host: nothing to rebuild
                except sa.exc.SQLAlchemyError as e:
                    self.log.warn("backfill skipped: {error}", error=str(e).splitlines()[0])
                    return len(rows)
                rows.extend((r.host, r.metric, r.index, r.ts, r.value) for r in found)
        self.evaluator.backfill(rows, emit=False)
        return len(rows)

    @defer.inlineCallbacks
    def stopService(self):
        self._stopping = True
        super().stopService()
        if self._ticker is not None and self._ticker.running:
            self._ticker.stop()
        if self.notifier is not None:
            self.notifier.stop()
        if self.engine is not None:
            yield threads.deferToThread(self.engine.dispose)

    # --- IMessageHandler ------------------------------------------------------------

    def handle(self, message, delivery) -> defer.Deferred | None:
        """Evaluate a ``perf``; count an ``alarm`` (notifications come next)."""
        if isinstance(message, messages.Perf):
            self.counters.inc("perf_evaluated")
            self.counters.inc("values_evaluated", len(message.metrics))
            return self._publish(self.evaluator.evaluate(message, time.time()))
        if isinstance(message, messages.Alarm):
            self.counters.inc("alarms_received")
            if self.notifier is not None:
                return defer.ensureDeferred(self.notifier.handle_alarm(message))
        return None

    def _publish_notification(self, notification: messages.Notification):
        self.counters.inc("notifications_published")
        return self.publisher.publish(notification)

    def _inventory_fields(self, host: str) -> dict:
        device = self.devices.get(host)
        if device is None:
            return {}
        return {"name": device.name, "address": device.address,
                "device_type": device.device_type, "model": device.model, "id": device.id,
                "parent": device.parent, "tags": list(device.tags), **dict(device.fields)}

    def _tick(self) -> None:
        d = self._publish(self.evaluator.tick(time.time()))
        if d is not None:
            d.addErrback(lambda f: self.log.failure("threshold publish failed", f))

    def _publish(self, thresholds: list[messages.Threshold]) -> defer.Deferred | None:
        if not thresholds:
            return None
        self.counters.inc("thresholds_published", len(thresholds))
        return defer.gatherResults([self.publisher.publish(t) for t in thresholds],
                                   consumeErrors=True)

    def health(self) -> dict:
        """State, rules and breaches, for /health and heartbeats."""
        breached = self.evaluator.breached()
        body = {"state": self.state, "degraded": self.state != "ready",
                "rules": len(self.evaluator.rules),
                "breached": sum(len(v) for v in breached.values())}
        if self.notifier is not None:
            body["notifications"] = dict(self.notifier.counters)
        return body


def _base_dir(settings) -> str:
    return os.path.dirname(os.path.abspath(settings.source)) if settings.source else os.getcwd()


def build(runtime) -> AlerterService:
    """The alerter of ``runtime``'s process: rules and inventory read and checked now."""
    from connector_snmp.inventory import load_optional_inventory

    from .evaluator import Evaluator
    from .rules import RulesError, load_rules

    settings = runtime.settings
    conf = settings.section("alerter")
    base = _base_dir(settings)
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
    engine = None
    if conf.backfill:
        from connector_db.service import make_engine

        engine = make_engine(settings.database.url.reveal())
    evaluator = Evaluator(rules, devices, f"{CONNECTOR}@{runtime.node}")
    alerter = AlerterService(runtime, evaluator, devices, engine)
    alerter.missing_rules = missing_rules
    return alerter
