"""The connection to RabbitMQ: failover over a list of brokers, backoff, TLS.

``BusConnection`` is a Twisted service that keeps one AMQP connection open.
Each attempt (TCP connect, AMQP handshake, publishing channel in confirm
mode) must finish within ``connect_timeout``. A broker whose attempt fails
or times out, or whose connection is lost (dead peer, missed heartbeats,
publisher confirms that never come), becomes *suspect*: the next attempt
goes to the next URL of the list at once, and the suspect one is tried again
only after its own exponential backoff (with jitter). So a hung node, which
accepts TCP connections and never answers, is skipped instead of retried.
Once connected it lets each subscriber open its own channel; when the
connection is lost it tells the publisher and the subscribers.
"""

from __future__ import annotations

import random
import urllib.parse
from dataclasses import dataclass, field

from twisted.application import service
from twisted.internet import defer, endpoints, ssl
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from zope.interface import implementer
from twisted.internet.interfaces import IStreamClientEndpoint

from connector.amqp import fastpath
from connector.amqp.protocol import BusDelegate, BusProtocol
from connector.amqp.spec import load_spec
from connector.buffer import BufferedMessage

PUBLISH_CHANNEL = 1


class ChannelGone(Exception):
    """The channel we publish on was closed by the broker."""


class BrokerURLError(ValueError):
    """A broker URL that cannot be used."""


@dataclass(frozen=True)
class BrokerURL:
    """One broker: where it is and how to log in (the password never printed)."""

    tls: bool
    host: str
    port: int
    vhost: str
    username: str
    password: str

    @classmethod
    def parse(cls, url: str) -> "BrokerURL":
        """Parse ``amqp[s]://user:password@host:port/vhost`` (vhost URL-quoted)."""
        parts = urllib.parse.urlsplit(url.strip())
        if parts.scheme not in ("amqp", "amqps"):
            raise BrokerURLError(f"broker URL scheme must be amqp or amqps, not {parts.scheme!r}")
        if not parts.hostname:
            raise BrokerURLError("broker URL has no host")
        tls = parts.scheme == "amqps"
        try:
            port = parts.port or (5671 if tls else 5672)
        except ValueError as e:
            raise BrokerURLError(f"broker URL has a bad port: {e}") from None
        path = parts.path[1:] if parts.path.startswith("/") else parts.path
        vhost = urllib.parse.unquote(path) if path else "/"
        return cls(
            tls=tls,
            host=parts.hostname,
            port=port,
            vhost=vhost,
            username=urllib.parse.unquote(parts.username or "guest"),
            password=urllib.parse.unquote(parts.password or "guest"),
        )

    @property
    def address(self) -> str:
        """``host:port`` (``[v6]:port``): which broker node, without user or vhost."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def __str__(self) -> str:
        scheme = "amqps" if self.tls else "amqp"
        host = f"[{self.host}]" if ":" in self.host else self.host
        vhost = urllib.parse.quote(self.vhost, safe="")
        return f"{scheme}://{self.username}@{host}:{self.port}/{vhost}"

    __repr__ = __str__


@dataclass(frozen=True)
class TLSSettings:
    """Where to find the CA and the client certificate, and whether to verify."""

    ca: str = ""
    cert: str = ""
    key: str = ""
    verify: bool = True

    def options(self, hostname: str):
        """Twisted TLS client options for ``hostname``."""
        trust = None
        if self.ca:
            with open(self.ca, "rb") as f:
                trust = ssl.Certificate.loadPEM(f.read())
        elif self.verify:
            trust = ssl.platformTrust()
        client_cert = None
        if self.cert:
            with open(self.cert, "rb") as f:
                cert_pem = f.read()
            key_pem = cert_pem
            if self.key:
                with open(self.key, "rb") as f:
                    key_pem = f.read()
            client_cert = ssl.PrivateCertificate.loadPEM(cert_pem + b"\n" + key_pem)
        if not self.verify:
            # Explicitly asked for (a lab broker with a self-signed cert).
            return ssl.CertificateOptions(verify=False)
        return ssl.optionsForClientTLS(hostname, trustRoot=trust, clientCertificate=client_cert)


@implementer(IStreamClientEndpoint)
class FailoverEndpoint:
    """Connects to the first broker that answers, starting from the last good one."""

    log = Logger()

    def __init__(self, reactor, brokers: list[BrokerURL], timeout: float, tls: TLSSettings) -> None:
        if not brokers:
            raise BrokerURLError("no broker URL given")
        self.reactor = reactor
        self.brokers = brokers
        self.timeout = timeout
        self.tls = tls
        self.current = 0
        self.trying: BrokerURL = brokers[0]

    def _endpoint(self, broker: BrokerURL):
        ep = endpoints.HostnameEndpoint(self.reactor, broker.host, broker.port, timeout=self.timeout)
        if broker.tls:
            ep = endpoints.wrapClientTLS(self.tls.options(broker.host), ep)
        return ep

    def connect(self, factory):
        return defer.ensureDeferred(self._connect(factory))

    async def _connect(self, factory):
        last_error = None
        for i in range(len(self.brokers)):
            index = (self.current + i) % len(self.brokers)
            broker = self.trying = self.brokers[index]
            try:
                protocol = await self._endpoint(broker).connect(factory)
            except Exception as e:  # every failure means: try the next broker
                self.log.warn("broker {broker} unreachable: {error}", broker=str(broker), error=e)
                last_error = e
                continue
            self.current = index
            return protocol
        raise last_error


class BusProtocolFactory(Factory):
    """Builds one ``BusProtocol`` for the broker the endpoint is trying."""

    def __init__(self, endpoint: FailoverEndpoint, spec, heartbeat: int, listener, clock) -> None:
        # ClientService wraps this factory, so the broker being tried is
        # read from the endpoint rather than set on the factory.
        self.endpoint = endpoint
        self.spec = spec
        self.heartbeat = heartbeat
        self.listener = listener
        self.clock = clock

    def buildProtocol(self, addr):
        broker = self.endpoint.trying
        p = BusProtocol(BusDelegate(), broker.vhost, self.spec, self.heartbeat,
                        self.listener, clock=self.clock)
        p.factory = self
        p.broker = broker
        self.built = p
        return p


class AMQPPublishLink:
    """The publishing channel in confirm mode, as ``IPublishLink``."""

    log = Logger()

    def __init__(self, protocol: BusProtocol, channel, app_id: str, user_id: str = "") -> None:
        self.protocol = protocol
        self.channel = channel
        self.app_id = app_id
        # user-id is the user this connection logged in as: RabbitMQ refuses a
        # message whose user-id is another's, so consumers can trust who sent it.
        self.user_id = user_id
        # In a content header user-id comes just before app-id: encoded together.
        self._app_id = (fastpath.shortstr(user_id) if user_id else b"") + fastpath.shortstr(app_id)
        self._user_flag = fastpath.USER_ID_FLAG if user_id else 0
        self.tag = 0

    def send(self, record: BufferedMessage) -> int:
        if self.channel.closed:
            # The broker closed our channel (e.g. a missing exchange): start
            # over on a new connection; unconfirmed messages go back to disk.
            raise ChannelGone("publishing channel closed by the broker")
        self.tag += 1
        if record.headers:
            properties = {
                "content-type": "application/json",
                "delivery-mode": 2,
                "message-id": record.message_id,
                "timestamp": int(record.timestamp),
                "type": record.msg_type,
                "app-id": self.app_id,
                "headers": record.headers,
            }
            if self.user_id:
                properties["user-id"] = self.user_id
            self.protocol.fast_publish(PUBLISH_CHANNEL, record.exchange, record.routing_key,
                                       properties, record.body)
        else:
            flags, encoded_properties = fastpath.encode_standard_properties(
                record.message_id, int(record.timestamp), record.msg_type, self._app_id)
            encoded = (flags | self._user_flag, encoded_properties)
            self.protocol.fast_publish(PUBLISH_CHANNEL, record.exchange, record.routing_key,
                                       None, record.body, encoded)
        return self.tag

    def abort(self, reason: str) -> None:
        self.protocol.abort(reason)


class _OneProtocol(Factory):
    """Builds the one ``BusProtocol`` of a connection attempt."""

    def __init__(self, build) -> None:
        self.build = build
        self.built: BusProtocol | None = None

    def buildProtocol(self, addr):
        self.built = self.build()
        return self.built


@dataclass
class BrokerState:
    """What the connection knows of one broker of the list."""

    failures: int = 0          # consecutive failures (attempts or short-lived connections)
    retry_at: float = 0.0      # no attempt before this time (reactor seconds)
    last_fault: str = ""       # why it became suspect last


class BusConnection(service.Service):
    """Keeps one AMQP connection up and tells publisher and subscribers about it."""

    log = Logger()

    def __init__(
        self,
        reactor,
        brokers: list[BrokerURL],
        publisher,
        app_id: str,
        spec_path: str | None,
        heartbeat: float = 10,
        connect_timeout: float = 10,
        backoff_initial: float = 0.5,
        backoff_max: float = 30,
        tls: TLSSettings = TLSSettings(),
        exchanges: tuple[str, ...] = (),
    ) -> None:
        if not brokers:
            raise BrokerURLError("no broker URL given")
        self.reactor = reactor
        self.brokers = brokers
        self.publisher = publisher
        self.app_id = app_id
        self.spec = load_spec(spec_path)
        self.heartbeat = int(heartbeat)
        self.connect_timeout = connect_timeout
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.tls = tls
        self.exchanges = exchanges
        self.subscribers: list = []
        self.protocol: BusProtocol | None = None
        self.blocked_reason: str | None = None
        #: Connections made since start, and the reactor time of the last one.
        self.connections = 0
        self.connected_at: float | None = None
        #: Times a broker became suspect (failed attempt or lost connection).
        self.suspected = 0
        self.states = [BrokerState() for _ in brokers]
        self._next = 0
        self._loop: defer.Deferred | None = None
        self._waiting: defer.Deferred | None = None
        self._lost: defer.Deferred | None = None

    @property
    def connected(self) -> bool:
        """True once the handshake is done and until the connection is lost."""
        return self.protocol is not None

    @property
    def broker(self) -> BrokerURL | None:
        """The broker we are connected to (None when disconnected)."""
        return self.protocol.broker if self.protocol is not None else None

    @property
    def cluster_name(self) -> str | None:
        """The ``cluster_name`` the broker announced on connecting (None when unknown)."""
        if self.protocol is None:
            return None
        value = getattr(self.protocol, "server_properties", {}).get("cluster_name")
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        return value or None

    def add_subscriber(self, subscriber) -> None:
        """Attach ``subscriber`` now if connected, and after every reconnection."""
        self.subscribers.append(subscriber)
        if self.protocol is not None:
            subscriber.attach(self.protocol).addErrback(self._attach_failed, self.protocol)

    def remove_subscriber(self, subscriber) -> None:
        """No longer attach ``subscriber`` after reconnections (it closes itself)."""
        try:
            self.subscribers.remove(subscriber)
        except ValueError:
            pass

    def startService(self):
        super().startService()
        self._loop = defer.ensureDeferred(self._run())
        self._loop.addErrback(lambda f: self.log.failure("the reconnection loop stopped", f))

    @defer.inlineCallbacks
    def stopService(self):
        super().stopService()
        if self._waiting is not None:
            self._waiting.cancel()
        protocol = self.protocol
        if protocol is not None:
            for sub in list(self.subscribers):
                yield sub.detach(protocol, clean=True)
            try:
                yield protocol.close(within=2)
            except Exception:
                pass
            protocol.abort()
        if self._loop is not None:
            yield self._loop

    # -- the reconnection loop ---------------------------------------------

    async def _run(self) -> None:
        while self.running:
            index, delay = self._choose()
            if delay > 0 and not await self._sleep(delay):
                return
            broker = self.brokers[index]
            started = self.reactor.seconds()
            try:
                protocol = await self._open(broker)
            except Exception as e:
                if not self.running:
                    return
                why = (f"no answer within connect_timeout ({self.connect_timeout:g}s)"
                       if isinstance(e, (defer.TimeoutError, defer.CancelledError))
                       else _describe(e))
                self._suspect(index, started, why)
                continue
            if not self.running:
                protocol.abort()
                return
            self._lost = defer.Deferred()
            self._connected(index, protocol)
            reason = await self._lost
            self._lost = None
            if not self.running:
                return
            self._suspect(index, self.connected_at or started, reason)

    def _choose(self) -> tuple[int, float]:
        """The broker to try next, and how long to wait before trying it.

        The first broker from the rotation point that is not suspect (or whose
        backoff is over); if all are waiting, the one whose backoff ends first.
        """
        now = self.reactor.seconds()
        n = len(self.brokers)
        order = [(self._next + i) % n for i in range(n)]
        for i in order:
            if self.states[i].retry_at <= now:
                return i, 0.0
        i = min(order, key=lambda k: self.states[k].retry_at)
        return i, self.states[i].retry_at - now

    def _suspect(self, index: int, since: float, why: str) -> None:
        """Back off ``index`` and move the rotation past it."""
        state = self.states[index]
        now = self.reactor.seconds()
        if now - since >= self.backoff_max:
            state.failures = 0  # it served well for a while: a fresh start
        state.failures += 1
        delay = min(self.backoff_max, self.backoff_initial * 2 ** (state.failures - 1))
        delay += random.uniform(0, self.backoff_initial)
        state.retry_at = now + delay
        state.last_fault = why
        self.suspected += 1
        self._next = (index + 1) % len(self.brokers)
        if len(self.brokers) > 1:
            self.log.warn("broker {broker} suspect ({why}): trying {next} next, "
                          "{broker} again in {delay:.1f}s at the earliest",
                          broker=str(self.brokers[index]), why=why,
                          next=str(self.brokers[self._choose()[0]]), delay=delay)
        else:
            self.log.warn("broker {broker} unavailable ({why}): retrying in {delay:.1f}s",
                          broker=str(self.brokers[index]), why=why, delay=delay)

    async def _sleep(self, seconds: float) -> bool:
        """Wait ``seconds``; False if the service stopped meanwhile."""
        self._waiting = d = defer.Deferred()
        call = self.reactor.callLater(seconds, d.callback, None)
        try:
            await d
        except defer.CancelledError:
            if call.active():
                call.cancel()
            return False
        finally:
            self._waiting = None
        return self.running

    def _endpoint(self, broker: BrokerURL):
        ep = endpoints.HostnameEndpoint(self.reactor, broker.host, broker.port,
                                        timeout=self.connect_timeout)
        if broker.tls:
            ep = endpoints.wrapClientTLS(self.tls.options(broker.host), ep)
        return ep

    async def _open(self, broker: BrokerURL) -> BusProtocol:
        """One attempt on ``broker``, bounded by ``connect_timeout`` as a whole."""
        factory = _OneProtocol(lambda: self._build(broker))
        attempt = defer.ensureDeferred(self._handshake(broker, factory))
        attempt.addTimeout(self.connect_timeout, self.reactor)
        self._waiting = attempt
        try:
            return await attempt
        except BaseException:
            if factory.built is not None:
                factory.built.abort()
            raise
        finally:
            self._waiting = None

    def _build(self, broker: BrokerURL) -> BusProtocol:
        p = BusProtocol(BusDelegate(), broker.vhost, self.spec, self.heartbeat, self,
                        clock=self.reactor)
        p.broker = broker
        return p

    async def _handshake(self, broker: BrokerURL, factory: _OneProtocol) -> BusProtocol:
        protocol: BusProtocol = await self._endpoint(broker).connect(factory)
        await protocol.authenticate(broker.username, broker.password, mechanism="PLAIN")
        channel = await protocol.channel(PUBLISH_CHANNEL)
        await channel.channel_open()
        await channel.confirm_select()
        for exchange in self.exchanges:
            await channel.exchange_declare(exchange=exchange, type="topic", durable=True)
        protocol.publish_channel = channel
        return protocol

    def _connected(self, index: int, protocol: BusProtocol) -> None:
        broker = protocol.broker
        self.protocol = protocol
        self.connections += 1
        self.connected_at = self.reactor.seconds()
        self.blocked_reason = None
        self._next = index  # reconnect here first if this connection drops cleanly
        self.log.info("connected to {broker}", broker=str(broker))
        self.publisher.link_up(AMQPPublishLink(protocol, protocol.publish_channel, self.app_id,
                                               broker.username))
        for sub in list(self.subscribers):
            sub.attach(protocol).addErrback(self._attach_failed, protocol)

    def _attach_failed(self, failure, protocol):
        from connector.amqp.subscriber import QueueMismatch

        if failure.check(QueueMismatch):
            # An operator's decision, not a bug: one line, no traceback.
            self.log.error("could not start consuming: {error}; reconnecting",
                           error=failure.getErrorMessage())
        else:
            self.log.failure("could not start consuming; reconnecting", failure)
        protocol.abort("could not start consuming")

    # -- listener of BusProtocol -----------------------------------------

    def connection_lost(self, protocol, reason) -> None:
        if protocol is not self.protocol:
            return  # an attempt that failed: the loop already knows
        self.protocol = None
        why = protocol.fault or (reason.getErrorMessage() if hasattr(reason, "getErrorMessage")
                                 else str(reason))
        # Closed by our own stop: expected, not a warning.
        log = self.log.warn if self.running else self.log.info
        log("connection to {broker} lost: {reason}", broker=str(protocol.broker),
            reason=why)
        self.publisher.link_down(reason)
        for sub in list(self.subscribers):
            sub.detach(protocol, clean=False)
        if self._lost is not None and not self._lost.called:
            self._lost.callback(why)

    def confirmed(self, channel_id: int, tag: int, multiple: bool, ack: bool) -> None:
        if channel_id == PUBLISH_CHANNEL:
            self.publisher.confirmed(tag, multiple, ack)

    def blocked(self, reason: str) -> None:
        self.blocked_reason = reason or "blocked"
        self.publisher.blocked(self.blocked_reason)

    def unblocked(self) -> None:
        self.blocked_reason = None
        self.publisher.unblocked()

    def consumer_cancelled(self, consumer_tag: str) -> None:
        self.log.warn("broker cancelled consumer {tag}: reconnecting to consume again", tag=consumer_tag)
        if self.protocol is not None:
            self.protocol.abort("broker cancelled a consumer")


def _describe(error: BaseException) -> str:
    """One line on why an attempt failed (never the password: URLs print without it)."""
    text = str(error) or type(error).__name__
    return text.splitlines()[0][:200]
