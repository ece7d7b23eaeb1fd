"""The web console's service: its port, its board fed from the bus, its sessions.

At start it takes its port (a port it cannot have stops the process with
one line), subscribes to its queue ``<prefix>.console`` (every ``alarm``),
then reads the correlator's active alarms from ``[database]`` (waiting while
the tables are not there yet: the board says so meanwhile).
"""

from __future__ import annotations

import dataclasses
import os

import sqlalchemy as sa
from twisted.application import service
from twisted.internet import defer
from twisted.internet.error import CannotListenError
from twisted.logger import Logger

from connector import startup
from connector.retry import retry_in_thread
from connector.settings import mask_url
from connector.topology import connector_queue
from centaure_shared.sql import error_summary, make_engine

from .board import AlarmBoard, ConsoleHandler
from .commands import CommandSender
from .reader import AlarmReader, StoreReader
from .sessions import SessionStore
from .silences import SilenceStore
from .settings import resolved
from .statuses import StatusBoard
from .users import UserFile, UsersError
from .web import ConsoleResource, EventStreams, make_console_site

__all__ = ["CONNECTOR", "ConsoleService", "build", "untrusted_command_user"]

CONNECTOR = "console"
_log = Logger(namespace="connector_console.service")


class ConsoleService(service.Service):
    """Serves the console; keeps its alarm board current."""

    log = Logger()

    def __init__(self, runtime, engine: sa.Engine, users: UserFile, conf=None) -> None:
        self.runtime = runtime
        self.settings = runtime.settings
        self.conf = conf or self.settings.section("console")
        self.engine = engine
        self.users = users
        self.counters = runtime.counters(CONNECTOR)
        prefix = _correlator_prefix(self.settings)
        self.reader = AlarmReader(engine, prefix)
        self.store = StoreReader(engine, _writer_prefix(self.settings))
        self.silences = SilenceStore(engine, _alerter_prefix(self.settings))
        self.board = AlarmBoard()
        self.statuses = StatusBoard(self.settings.connector.status_interval,
                                    self.settings.connector.lost_after)
        self.handler = ConsoleHandler(self.board, self.statuses)
        self.sessions = SessionStore(self.conf.session_lifetime, runtime.reactor.seconds)
        self.streams = EventStreams(self.board, self.conf.max_event_clients, runtime.reactor)
        self.sender = CommandSender(runtime.bus.publisher(CONNECTOR),
                                    f"{CONNECTOR}@{runtime.node}", runtime.reactor.seconds)
        self.tls = bool(self.conf.tls_cert)
        self.resource = ConsoleResource(
            board=self.board, reader=self.reader, store=self.store, silences=self.silences,
            users=users,
            sessions=self.sessions,
            sender=self.sender, streams=self.streams, anonymous_view=self.conf.anonymous_view,
            tls=self.tls, statuses=self.statuses, clock=runtime.reactor.seconds,
            proxy_header=self.conf.proxy_user_header,
            proxy_addresses=self.conf.proxy_addresses, proxy_role=self.conf.proxy_role,
            counters=self.counters)
        self.site = make_console_site(self.resource)
        self.listening = None
        self.load_error: str | None = None
        self._stopping = False
        self._loading: defer.Deferred | None = None
        runtime.health_checks[CONNECTOR] = self.health

    @property
    def url(self) -> str:
        """Where the console answers (the port actually taken when ``port = 0``)."""
        port = self.listening.getHost().port if self.listening else self.conf.port
        host = self.conf.listen
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return f"{'https' if self.tls else 'http'}://{host}:{port}/"

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        self._listen()

    def startService(self) -> None:
        super().startService()
        if self.listening is None:
            self._listen()
            if self.listening is None:
                return
        self.streams.start()
        queue = connector_queue(self.settings.bus.exchange_prefix, CONNECTOR,
                                self.settings.bus.queue_type)
        self.runtime.bus.subscriber(CONNECTOR).subscribe(queue, self.handler)
        self._loading = defer.ensureDeferred(self._load())
        self._loading.addErrback(lambda f: startup.fail_start(
            CONNECTOR, f, error_summary(f.value), self.runtime.reactor))

    def _listen(self) -> None:
        reactor = self.runtime.reactor
        try:
            if self.tls:
                self.listening = reactor.listenSSL(self.conf.port, self.site, _tls_context(
                    self.conf.tls_cert, self.conf.tls_key), interface=self.conf.listen)
            else:
                self.listening = reactor.listenTCP(self.conf.port, self.site,
                                                   interface=self.conf.listen)
        except CannotListenError as e:
            reason = getattr(e.socketError, "strerror", None) or str(e.socketError)
            startup.fail(CONNECTOR, f"[console] port = {self.conf.port}: cannot listen on "
                                    f"{self.conf.listen}:{self.conf.port} ({reason})", reactor)
            return
        self.log.info("web console on {url} ({users} users{anonymous})", url=self.url,
                      users=len(self.users),
                      anonymous=", anonymous_view" if self.conf.anonymous_view else "")
        problem = untrusted_command_user(self.settings)
        if problem is not None:
            self.log.warn("web console: {problem}", problem=problem)
        if not len(self.users) and not self.conf.anonymous_view \
                and not self.conf.proxy_user_header:
            self.log.warn("web console: no users, so nobody can log in: add one with "
                          "'centaure console add-user NAME --role operator' and set "
                          "[console] users_file")

    async def _load(self) -> None:
        def waiting(exc: BaseException) -> None:
            self.load_error = error_summary(exc)

        rows = await retry_in_thread(
            self.runtime.reactor, self.reader.active,
            lambda exc: isinstance(exc, sa.exc.SQLAlchemyError), 0.5, 10.0,
            "the correlator's alarm tables", lambda: self._stopping, waiting)
        if rows is None:
            return
        self.board.load(rows)
        self.load_error = None
        self.log.info("alarm board loaded: {n} active alarms from {url}", n=len(rows),
                      url=mask_url(self.settings.database.url.reveal()))

    @defer.inlineCallbacks
    def stopService(self):
        self._stopping = True
        super().stopService()
        self.streams.stop()
        listening, self.listening = self.listening, None
        if listening is not None:
            yield listening.stopListening()
        if self._loading is not None:
            yield self._loading
        self.engine.dispose()

    def health(self) -> dict:
        """For /health and the heartbeats: the board, its live streams, the sessions."""
        self.counters.set("alarms_active", len(self.board))
        self.counters.set("event_clients", len(self.streams))
        self.counters.set("sessions", len(self.sessions))
        self.counters.set("alarms_applied", self.board.applied)
        body = {"state": "ready" if self.board.loaded else "loading", "alarms": len(self.board),
                "event_clients": len(self.streams), "sessions": len(self.sessions),
                "url": self.url}
        if not self.board.loaded:
            body["degraded"] = True
            body["last_error"] = self.load_error
        return body


def untrusted_command_user(settings) -> str | None:
    """Why the console's commands would not be recorded under the person logged in, or None.

    The correlator believes the person a command names only from a broker user in
    ``[correlator] command_services``; the console's own is the one of ``[bus] url``.
    On the embedded bus only this process can publish: commands are applied as sent.
    """
    urls = [u.reveal() for u in settings.bus.urls]
    if urls == ["embedded"]:
        return None
    from connector.amqp.connection import BrokerURL

    try:
        services = settings.section("correlator").command_services
    except KeyError:
        return None
    user = BrokerURL.parse(urls[0]).username
    if user in services:
        return None
    return (f"the console publishes commands as broker user {user!r}, which is not in "
            f"[correlator] command_services: the correlator will record them under {user!r} "
            "(if it is an operator) or refuse them, never under the person logged in; give "
            "the console a broker user of its own and list it there")


def _correlator_prefix(settings) -> str:
    """The correlator's table prefix (``[correlator] table_prefix``; ``corr_`` without it)."""
    try:
        return settings.section("correlator").table_prefix
    except KeyError:
        return "corr_"


def _alerter_prefix(settings) -> str:
    """The alerter's table prefix, where its silences are (``[alerter] table_prefix``;
    ``alert_`` without it)."""
    try:
        return settings.section("alerter").table_prefix
    except KeyError:
        return "alert_"


def _writer_prefix(settings) -> str:
    """The SQL writer's table prefix (``[db] table_prefix``; none without it)."""
    try:
        return settings.section("db").table_prefix
    except KeyError:
        return ""


def _tls_context(cert: str, key: str | None):
    """The server's TLS options from PEM files (the key may be in the certificate's file)."""
    from twisted.internet import ssl

    with open(cert, "rb") as f:
        pem = f.read()
    if key:
        with open(key, "rb") as f:
            pem += b"\n" + f.read()
    return ssl.PrivateCertificate.loadPEM(pem).options()


def build(runtime) -> ConsoleService:
    """The console of ``runtime``'s process (no I/O besides reading its users file)."""
    settings = runtime.settings
    conf = settings.section("console")
    # Relative paths are taken from the settings file's folder, as for every other file.
    conf = dataclasses.replace(conf, **{name: resolved(settings, getattr(conf, name))
                                        for name in ("users_file", "tls_cert", "tls_key")})
    for name in ("tls_cert", "tls_key"):
        path = getattr(conf, name)
        if path and not os.path.isfile(path):
            raise ValueError(f"[console] {name} = {path}: no such file")
    if conf.tls_key and not conf.tls_cert:
        raise ValueError("[console] tls_key is set without tls_cert")
    url = settings.database.url.reveal()
    try:
        engine = make_engine(url)
    except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError, ImportError) as e:
        raise ValueError(f"[database] url {mask_url(url)}: {e}") from None
    if conf.users_file and not os.path.exists(conf.users_file):
        raise ValueError(f"[console] users_file = {conf.users_file}: no such file (write it "
                         "with 'centaure console add-user')")
    try:
        users = UserFile(conf.users_file)
    except UsersError as e:
        raise ValueError(f"[console] users_file: {e}") from None
    for name in ("users_file", "tls_key"):
        path = getattr(conf, name)
        mode = os.stat(path).st_mode & 0o777 if path else 0
        if mode & 0o077:
            # Hashes can be attacked offline, a key used at once: owner only.
            _log.warn("[console] {name} = {path} can be read by its group or others (mode "
                      "{mode:04o}): chmod 600 it", name=name, path=path, mode=mode)
    return ConsoleService(runtime, engine, users, conf)
