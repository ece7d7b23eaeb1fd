"""Status heartbeats: every connector says it is alive, and ``centaure status`` reads them.

Each connector publishes a ``status`` message every ``status_interval``
seconds with its state and counters, and a last one with state ``stopping``
when it stops. The heartbeats also land in the ``<prefix>.status`` queue
(bounded by length and age) so that the ``status`` command can read the
recent ones without having listened all along.

A heartbeat refused by a full publisher buffer (policy ``refuse_newest``) is
lost: counted in ``heartbeats_dropped_buffer_full`` and told by one line every
10 s at most, as every drop is. While the bus is down, heartbeats wait in the
buffer like any message.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Callable, Iterable

from twisted.application import service
from twisted.internet import task
from twisted.logger import Logger

from connector import __version__, messages
from connector.buffer import BufferFull
from connector.droplog import DropLog
from connector.metrics import Counters
from connector.publisher import PublisherClosed


class StatusService(service.Service):
    """Publishes one connector's heartbeat every interval."""

    log = Logger()

    def __init__(self, publisher, connector: str, node: str, counters: Counters,
                 interval: float, health: Callable[[], dict], clock) -> None:
        self.publisher = publisher
        self.connector = connector
        self.node = node
        self.counters = counters
        self.interval = interval
        self.health = health
        self.clock = clock
        self.started = time.time()
        self._loop = task.LoopingCall(self.beat)
        self._loop.clock = clock
        self.drops = DropLog(clock, counters, self.log, subject="status heartbeats dropped",
                             context=f"connector {connector}",
                             counter_prefix="heartbeats_dropped_")

    def message(self, state: str | None = None) -> messages.Status:
        """The heartbeat as it would be published now."""
        health = self.health()
        if state is None:
            state = "degraded" if health.get("degraded") else "ok"
        return messages.Status(
            source=f"{self.connector}@{self.node}",
            connector=self.connector, node=self.node, pid=os.getpid(), version=__version__,
            state=state, uptime=round(time.time() - self.started, 3),
            counters=self.counters.snapshot(), broker=health.get("broker_address"),
            broker_cluster=health.get("broker_cluster"),
            ownership={role: messages.Ownership(**owned)
                       for role, owned in health["ownership"].items()}
            if health.get("ownership") else None)

    def beat(self, state: str | None = None):
        """Publish one heartbeat; a failure is logged, never fatal."""
        d = self.publisher.publish(self.message(state))
        d.addErrback(self._not_published)
        return d

    def _not_published(self, failure) -> None:
        if failure.check(PublisherClosed):
            # The buffer's open error stops the process and is reported once, by the bus.
            self.log.debug("status heartbeat not published: {error}", error=failure.value)
            return
        if failure.check(BufferFull):
            self.drops.drop("buffer_full", 1, failure.value.limit)
            return
        self.log.failure("could not publish the status heartbeat", failure)

    def startService(self):
        super().startService()
        self._loop.start(self.interval, now=True)

    def stopService(self):
        super().stopService()
        if self._loop.running:
            self._loop.stop()
        d = self.beat("stopping")
        d.addBoth(self._told)
        return d

    def _told(self, result):
        """The last heartbeat is settled: the drops not told yet are, now."""
        self.drops.stop()
        return result


@dataclass
class SeenConnector:
    """The latest heartbeat of one connector on one node."""

    connector: str
    node: str
    state: str
    ts: float
    pid: int
    version: str
    uptime: float
    counters: dict
    broker: str | None = None
    broker_cluster: str | None = None

    @property
    def broker_shown(self) -> str:
        """The broker node as the table shows it: ``host:port (cluster)``, ``-`` when unknown."""
        if not self.broker:
            return "-"
        return f"{self.broker} ({self.broker_cluster})" if self.broker_cluster else self.broker


def latest_by_connector(statuses: Iterable[messages.Status]) -> list[SeenConnector]:
    """Keep the newest heartbeat per (connector, node), sorted by node then connector."""
    latest: dict[tuple[str, str], messages.Status] = {}
    for s in statuses:
        key = (s.connector, s.node)
        if key not in latest or latest[key].ts < s.ts:
            latest[key] = s
    return [SeenConnector(s.connector, s.node, s.state, s.ts, s.pid, s.version, s.uptime,
                          dict(s.counters), s.broker, s.broker_cluster)
            for _, s in sorted(latest.items(), key=lambda kv: (kv[0][1], kv[0][0]))]


KEY_COUNTERS = ("published", "received", "handled", "buffered", "dead_lettered", "errors")


def status_table(seen: list[SeenConnector], now: float, interval: float, lost_after: int) -> str:
    """The table ``centaure status`` prints; silent for ``lost_after`` intervals = lost."""
    header = ("NODE", "CONNECTOR", "STATE", "LAST SEEN", "UPTIME", "PID", "BROKER") + tuple(
        k.upper() for k in KEY_COUNTERS)
    rows = [header]
    for s in seen:
        age = now - s.ts
        state = "lost" if age > lost_after * interval and s.state != "stopping" else s.state
        if s.state == "stopping":
            state = "stopped"
        rows.append((s.node, s.connector, state, f"{age:.0f}s ago", f"{s.uptime:.0f}s",
                     str(s.pid), s.broker_shown) + tuple(_fmt(s.counters.get(k, 0)) for k in KEY_COUNTERS))
    if len(rows) == 1:
        return "no connector heartbeat seen on the bus"
    return format_table(rows)


def format_table(rows: list[tuple[str, ...]]) -> str:
    """Left-aligned columns separated by two spaces."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def _fmt(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.2f}"
