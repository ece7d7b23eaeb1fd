"""Building a connector process: settings, bus, heartbeats, HTTP, connectors.

Every twistd plugin calls ``makeService`` with the connectors it runs (one,
or all of them for ``centaure-all``). A connector package exposes
``build(runtime) -> IService``; it finds its bus, publisher, counters and
settings on the ``Runtime``.
"""

from __future__ import annotations

import importlib

from twisted.application import service
from twisted.logger import Logger
from twisted.python import usage

from connector.embedded import EmbeddedBus
from connector.logs import configure_logging
from connector.metrics import Counters
from connector.settings import Settings, SettingsError, load_settings, loose_secret_files
from connector.startup import startup_line
from connector.registry import installed, load_target
from connector.status import StatusService
from connector.topology import connector_queue


_log = Logger(namespace="connector.service")


class Options(usage.Options):
    """Command line of every connector plugin: the settings file."""

    optParameters = [["config", "c", "settings.ini", "The settings file (INI)."]]

    def postOptions(self) -> None:
        path = self["config"]
        try:
            self["settings"] = load_settings(path)
        except SettingsError as e:
            # One line naming the file and what is wrong in it: twistd's usage
            # text (a UsageError's) would bury it, and the options were right.
            raise SystemExit(startup_line(self._process(), e)) from None

    def _process(self) -> str:
        """The process named on twistd's command line (``db`` for ``centaure-db``)."""
        command = getattr(getattr(self, "parent", None), "subCommand", None) or "centaure"
        return process_name(command)


class Runtime:
    """What the connectors of one process share."""

    def __init__(self, settings: Settings, process_name: str, reactor=None) -> None:
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        self.settings = settings
        self.process_name = process_name
        self.node = settings.connector.node
        self._counters: dict[str, Counters] = {}
        self.bus = make_bus(settings, process_name, reactor, self.counters("bus"))
        self.health_checks: dict[str, object] = {}
        #: role -> its ownership tokens (``connector.ownership``), with ``[bus] partitions``.
        self.ownerships: dict[str, object] = {}

    def counters(self, name: str) -> Counters:
        """The counters of ``name`` (created once; all are served on /metrics)."""
        c = self._counters.get(name)
        if c is None:
            c = self._counters[name] = Counters(name)
        return c

    def all_counters(self) -> list[Counters]:
        """Every connector's counters, for /metrics."""
        return list(self._counters.values())

    def health(self) -> dict:
        """The bus's health and each connector's own checks."""
        body = dict(self.bus.health())
        body["node"] = self.node
        body["process"] = self.process_name
        if self.ownerships:
            body["ownership"] = {role: holder.describe()
                                 for role, holder in self.ownerships.items()}
        for name, check in self.health_checks.items():
            status = check()
            body.setdefault("connectors", {})[name] = status
            if status.get("degraded"):
                body["degraded"] = True
        return body


def make_bus(settings: Settings, app_id: str, reactor, counters: Counters):
    """The bus named by ``[bus] url``: embedded or AMQP."""
    urls = [u.reveal() for u in settings.bus.urls]
    if urls == ["embedded"]:
        return EmbeddedBus(reactor, settings.bus.exchange_prefix, settings.bus.prefetch,
                           settings.bus.retry_limit, settings.bus.retry_delay, counters)
    from connector.amqp.bus import AMQPBus

    return AMQPBus(reactor, settings.bus, settings.buffer, app_id, counters)


def available_connectors() -> list[str]:
    """The installed connectors whose packages import here, in start order."""
    found = []
    for name, spec in installed().items():
        try:
            importlib.import_module(spec.build.split(":")[0])
        except ImportError:
            continue
        found.append(name)
    return found


def makeService(options, connectors: list[str], process_name: str) -> service.MultiService:
    """The whole process: bus, every connector, their heartbeats, HTTP."""
    settings: Settings = options["settings"]
    configure_logging(settings.logging.level, settings.logging.format)
    for line in loose_secret_files(settings):
        _log.warn("{line}", line=line)
    runtime = Runtime(settings, process_name)
    root = service.MultiService()
    runtime.bus.setServiceParent(root)
    if isinstance(runtime.bus, EmbeddedBus):
        # No bus-config for the embedded bus: declare this process's consumer
        # queues now, so what is published before a consumer subscribes (the
        # writer waits for its schema) waits in its queue instead of vanishing.
        for name in connectors:
            if installed()[name].consumes:
                runtime.bus.declare(connector_queue(settings.bus.exchange_prefix, name,
                                                    settings.bus.queue_type))
    names = list(connectors) or [process_name]
    for name in connectors:
        build = load_target(installed()[name].build)
        try:
            connector_service = build(runtime)
        except Exception as e:
            # A configuration problem: one clear line, not a traceback.
            raise SystemExit(startup_line(name, e)) from None
        connector_service.setServiceParent(root)
    for name in names:
        StatusService(
            runtime.bus.publisher(name), name, runtime.node, runtime.counters(name),
            settings.connector.status_interval, runtime.health, runtime.reactor,
        ).setServiceParent(root)
    http_port = settings.connector.http_ports.get(process_name, settings.connector.http_port)
    if http_port:
        from connector.http import HTTPService, make_site

        HTTPService(
            http_port, make_site(runtime.all_counters, runtime.health),
            settings.connector.http_host, process_name, runtime.reactor,
        ).setServiceParent(root)
    if settings.bus.partitions:
        from connector.ownership import drain_on_sigusr2

        drain_on_sigusr2(runtime)
    root.runtime = runtime
    return root


def process_name(base: str) -> str:
    """The connector name a process publishes as (``centaure-snmp`` -> ``snmp``)."""
    return base.removeprefix("centaure-") or base


__all__ = ["Options", "available_connectors", "Runtime", "makeService", "make_bus"]
