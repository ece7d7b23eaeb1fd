"""``/metrics`` (Prometheus text) and ``/health`` (JSON, 200 or 503) over HTTP."""

from __future__ import annotations

import json
from typing import Callable, Iterable

from twisted.application import service
from twisted.internet import defer
from twisted.internet.error import CannotListenError
from twisted.logger import Logger
from twisted.web import http, resource, server

from connector import startup
from connector.metrics import Counters, render_prometheus


class MetricsResource(resource.Resource):
    """Every connector's counters in the Prometheus text format."""

    isLeaf = True

    def __init__(self, counters: Callable[[], Iterable[Counters]]) -> None:
        super().__init__()
        self.counters = counters

    def render_GET(self, request):
        request.setHeader(b"content-type", b"text/plain; version=0.0.4; charset=utf-8")
        return render_prometheus(self.counters()).encode()


class HealthResource(resource.Resource):
    """200 when the bus is connected and nothing is degraded, else 503."""

    isLeaf = True

    def __init__(self, health: Callable[[], dict]) -> None:
        super().__init__()
        self.health = health

    def render_GET(self, request):
        body = self.health()
        request.setResponseCode(503 if body.get("degraded") else 200)
        request.setHeader(b"content-type", b"application/json")
        return json.dumps(body, sort_keys=True, default=str).encode()


class QuietSite(server.Site):
    """A site whose access lines are debug events, not info lines of the process log.

    Prometheus scrapes ``/metrics`` and supervisors poll ``/health`` every few
    seconds: at info level each request would be a log line, drowning what the
    connectors say. ``[logging] level = debug`` shows them.
    """

    access_log = Logger(namespace="connector.http")

    def logPrefix(self) -> str:
        """What the listening port's start and stop lines call this site."""
        return "HTTP /metrics /health"

    def log(self, request: http.Request) -> None:
        self.access_log.debug("{line}", line=self._logFormatter(self._logDateTime, request))


def make_site(counters: Callable[[], Iterable[Counters]], health: Callable[[], dict]) -> server.Site:
    """The site served on ``[connector] http_port``."""
    root = resource.Resource()
    root.putChild(b"metrics", MetricsResource(counters))
    root.putChild(b"health", HealthResource(health))
    site = QuietSite(root)
    site.noisy = False
    return site


class HTTPService(service.Service):
    """Serves a site on ``[connector] http_port``; a port it cannot have stops the process.

    The port is taken in ``privilegedStartService`` (a port below 1024 before
    twistd drops privileges). When it is taken by another process or
    refused, the process stops at once with one line naming the setting
    (:func:`connector.startup.fail`), not a traceback.
    """

    def __init__(self, port: int, site: server.Site, interface: str, process: str,
                 reactor=None) -> None:
        if reactor is None:
            from twisted.internet import reactor
        self.port = port
        self.site = site
        self.interface = interface
        self.process = process
        self.reactor = reactor
        self.listening = None
        self.refused = False

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        self._listen()

    def startService(self) -> None:
        super().startService()
        if self.listening is None and not self.refused:
            self._listen()

    def stopService(self):
        super().stopService()
        listening, self.listening = self.listening, None
        if listening is not None:
            return defer.maybeDeferred(listening.stopListening)
        return None

    def _listen(self) -> None:
        try:
            self.listening = self.reactor.listenTCP(self.port, self.site,
                                                    interface=self.interface)
        except CannotListenError as e:
            self.refused = True
            error = e.socketError
            reason = getattr(error, "strerror", None) or str(error)
            startup.fail(self.process, f"[connector] http_port = {self.port}: cannot listen on "
                                       f"{self.interface or '*'}:{self.port} ({reason})",
                         self.reactor)
