"""A short-lived AMQP connection for commands (bus-config, status, tools)."""

from __future__ import annotations

from twisted.internet import defer

from connector.amqp.connection import BrokerURL, BusProtocolFactory, FailoverEndpoint, TLSSettings
from connector.amqp.spec import load_spec


class _Quiet:
    """A listener for a command's connection: nothing to confirm or replay."""

    def confirmed(self, *args) -> None: ...
    def blocked(self, reason) -> None: ...
    def unblocked(self) -> None: ...
    def consumer_cancelled(self, tag) -> None: ...
    def connection_lost(self, protocol, reason) -> None: ...


async def connect(reactor, bus_settings):
    """Connect and log in to the first broker that answers; return (protocol, channel 1)."""
    brokers = [BrokerURL.parse(u.reveal()) for u in bus_settings.urls]
    tls = TLSSettings(ca=bus_settings.tls_ca or "", cert=bus_settings.tls_cert or "",
                      key=bus_settings.tls_key or "", verify=bus_settings.tls_verify)
    endpoint = FailoverEndpoint(reactor, brokers, bus_settings.connect_timeout, tls)
    factory = BusProtocolFactory(endpoint, load_spec(bus_settings.spec), 0, _Quiet(), reactor)
    protocol = await endpoint.connect(factory)
    await protocol.authenticate(protocol.broker.username, protocol.broker.password,
                                mechanism="PLAIN")
    channel = await protocol.channel(1)
    await channel.channel_open()
    return protocol, channel


async def close(protocol) -> None:
    """Close the connection cleanly (bounded wait)."""
    try:
        await defer.ensureDeferred(protocol.close(within=2))
    except Exception:
        pass
