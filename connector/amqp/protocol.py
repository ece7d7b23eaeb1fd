"""txamqp's client, completed with what a reliable connector needs.

txamqp's ``TwistedDelegate`` leaves publisher confirms (basic.ack/basic.nack),
connection.blocked/unblocked and broker-side consumer cancels unhandled, and
sends no client properties (so the broker never learns our capabilities).
This module adds them and reports each to a ``listener`` (the connection
service) instead of raising inside the protocol.
"""

from __future__ import annotations

from twisted.logger import Logger
from txamqp.client import TwistedDelegate
from txamqp.protocol import AMQClient

from connector import __version__
from connector.amqp import fieldtable

fieldtable.install_into_txamqp()


class BusDelegate(TwistedDelegate):
    """Routes the broker's asynchronous methods to the connection's listener."""

    log = Logger()

    def connection_start(self, ch, msg):
        ch.connection_start_ok(
            client_properties=fieldtable.client_properties("centaure", __version__),
            mechanism=self.client.mechanism,
            response=self.client.response,
            locale=self.client.locale,
        )

    def basic_ack(self, ch, msg):
        self.client.listener.confirmed(ch.id, msg.delivery_tag, msg.multiple, True)

    def basic_nack(self, ch, msg):
        self.client.listener.confirmed(ch.id, msg.delivery_tag, msg.multiple, False)

    def connection_blocked(self, ch, msg):
        self.client.listener.blocked(msg.reason)

    def connection_unblocked(self, ch, msg):
        self.client.listener.unblocked()

    def basic_cancel(self, ch, msg):
        # The broker cancels a consumer when its queue is deleted or its
        # node goes away (consumer_cancel_notify).
        self.client.listener.consumer_cancelled(msg.consumer_tag)


class BusProtocol(AMQClient):
    """One AMQP connection; tells ``listener`` when it is lost."""

    def __init__(self, delegate, vhost, spec, heartbeat, listener, clock=None):
        super().__init__(delegate, vhost, spec, heartbeat=heartbeat, clock=clock)
        self.listener = listener

    def connectionLost(self, reason):
        super().connectionLost(reason)
        self.listener.connection_lost(self, reason)

    def abort(self) -> None:
        """Drop the TCP connection now, without the closing handshake."""
        if self.transport is not None:
            self.transport.abortConnection()
