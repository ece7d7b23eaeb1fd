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


class _Confirms(_Quiet):
    """Records the highest publisher-confirm tag acked (or nacked) by the broker."""

    def __init__(self) -> None:
        self.acked = 0
        self.nacked = 0

    def confirmed(self, channel_id, tag, multiple, ack) -> None:
        if ack:
            self.acked = max(self.acked, tag)
        else:
            self.nacked = max(self.nacked, tag)


async def publish_confirmed(reactor, bus_settings, message, message_id: str, app_id: str,
                            require_queue: str | None = None, timeout: float = 10.0) -> None:
    """Publish one message struct and wait for the broker's confirm.

    ``require_queue``: refuse (``LookupError``) unless that queue exists, so
    a command is not silently dropped on a bus that ``bus-config`` never set up.
    """
    from connector import messages
    from connector.amqp.connection import AMQPPublishLink
    from connector.buffer import BufferedMessage

    protocol, channel = await connect(reactor, bus_settings)
    try:
        if require_queue is not None:
            check = await protocol.channel(2)
            await check.channel_open()
            try:
                await check.queue_declare(queue=require_queue, passive=True)
            except Exception:
                raise LookupError(f"queue {require_queue!r} does not exist on the broker: run "
                                  "'centaure bus-config -c settings.ini' (or start the "
                                  "consuming connector) first") from None
        confirms = _Confirms()
        protocol.listener = confirms
        await channel.confirm_select()
        # The daemons' publishing link: the same properties, user-id included
        # (the user this connection logged in as, checked by the broker).
        link = AMQPPublishLink(protocol, channel, app_id, protocol.broker.username)
        link.send(BufferedMessage(
            exchange=messages.exchange_name(bus_settings.exchange_prefix, message.msg_type),
            routing_key=messages.routing_key(message, bus_settings.partitions), body=messages.encode(message),
            message_id=message_id, msg_type=message.msg_type, timestamp=message.ts))
        waited = 0.0
        from twisted.internet import task

        while not confirms.acked and not confirms.nacked:
            if waited > timeout:
                raise TimeoutError(f"the broker did not confirm within {timeout:g}s")
            await task.deferLater(reactor, 0.01, lambda: None)
            waited += 0.01
        if confirms.nacked:
            raise RuntimeError("the broker refused the message (nack)")
    finally:
        await close(protocol)
