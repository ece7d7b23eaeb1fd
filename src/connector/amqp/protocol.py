"""txamqp's client, completed with what a reliable connector needs.

txamqp's ``TwistedDelegate`` leaves publisher confirms (basic.ack/basic.nack),
connection.blocked/unblocked and broker-side consumer cancels unhandled, and
sends no client properties (so the broker never learns our capabilities).
This module adds them and reports each to a ``listener`` (the connection
service) instead of raising inside the protocol.
"""

from __future__ import annotations

from typing import Callable

from twisted.logger import Logger
from txamqp.client import TwistedDelegate
from txamqp.protocol import AMQClient

from connector import __version__
from connector.amqp import fastpath, fieldtable

fieldtable.install_into_txamqp()


class BusDelegate(TwistedDelegate):
    """Routes the broker's asynchronous methods to the connection's listener."""

    log = Logger()

    def connection_start(self, ch, msg):
        # The broker's server properties name its cluster (cluster_name).
        self.client.server_properties = dict(msg.server_properties or {})
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
    """One AMQP connection; tells ``listener`` when it is lost.

    Incoming frames are read here: basic.deliver (for registered consumers),
    its content, and publisher confirms are decoded by ``fastpath`` and
    dispatched synchronously; every other frame goes to txamqp as before.
    """

    log = Logger()

    #: Heartbeat intervals without any frame from the broker before the
    #: connection is declared dead (txamqp's default is 3). The broker sends
    #: a heartbeat every interval / 2 when it has nothing else to send, so
    #: 1.5 leaves room for one late heartbeat and lets a failover complete
    #: within two intervals of a broker hanging.
    MAX_UNSEEN_HEARTBEAT = 1.5

    def __init__(self, delegate, vhost, spec, heartbeat, listener, clock=None):
        super().__init__(delegate, vhost, spec, heartbeat=heartbeat, clock=clock)
        self.listener = listener
        #: Why we dropped the connection ourselves (None: the peer or the network did).
        self.fault: str | None = None
        # consumer tag -> callback(channel id, fastpath.Deliver)
        self.consumers: dict[str, Callable[[int, fastpath.Deliver], None]] = {}
        self._inbuf = bytearray()
        self._assembling: dict[int, fastpath.Deliver] = {}

    # -- outgoing hot frames ---------------------------------------------

    def fast_publish(self, channel: int, exchange: str, routing_key: str, properties: dict | None,
                     body: bytes, encoded_properties: tuple[int, bytes] | None = None) -> None:
        """basic.publish with its content, written in one call."""
        self.transport.write(fastpath.encode_publish(
            channel, exchange, routing_key, properties, body, self.MAX_LENGTH,
            encoded_properties))

    def fast_ack(self, channel: int, delivery_tag: int, multiple: bool) -> None:
        """basic.ack of consumed messages."""
        self.transport.write(fastpath.encode_ack(channel, delivery_tag, multiple))

    # -- incoming frames ------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        buf = self._inbuf
        buf += data
        pos, n = 0, len(buf)
        try:
            while n - pos >= 8:
                ftype, channel, size = fastpath._frame_header.unpack_from(buf, pos)
                end = pos + 7 + size
                if end >= n:
                    break
                if buf[end] != fastpath.FRAME_END:
                    raise fastpath.FrameError(f"frame without frame-end octet at channel {channel}")
                payload = bytes(buf[pos + 7:end])
                if not self._fast_frame(ftype, channel, payload):
                    self.frame_received(self._unpack_frame(bytes(buf[pos:end + 1])))
                pos = end + 1
                if self.transport is None or self.transport.disconnecting:
                    break
        except Exception:
            self.log.failure("unreadable AMQP frame: dropping the connection")
            del buf[:]
            self.abort()
            return
        del buf[:pos]
        if self.heartbeatInterval > 0 and not self.closed and self.checkHB.active():
            self.checkHB.reset(self.heartbeatInterval * self.MAX_UNSEEN_HEARTBEAT)

    def _fast_frame(self, ftype: int, channel: int, payload: bytes) -> bool:
        """Handle a hot frame; False hands it to txamqp."""
        if ftype == fastpath.FRAME_METHOD:
            cls, method = fastpath._method_id.unpack_from(payload, 0)
            if cls != fastpath.BASIC:
                return False
            if method == fastpath.BASIC_DELIVER:
                deliver = fastpath.decode_deliver(payload)
                if deliver.consumer_tag not in self.consumers:
                    return False
                self._assembling[channel] = deliver
                return True
            if method in (fastpath.BASIC_ACK, fastpath.BASIC_NACK):
                tag, multiple = fastpath.decode_confirm(payload)
                self.listener.confirmed(channel, tag, multiple, method == fastpath.BASIC_ACK)
                return True
            return False
        deliver = self._assembling.get(channel)
        if deliver is None:
            return False
        if ftype == fastpath.FRAME_HEADER:
            _cls, _weight, deliver.size = fastpath._content_header.unpack_from(payload, 0)[:3]
            deliver.properties = fastpath.decode_properties(payload, 12)
            if deliver.size == 0:
                self._delivered(channel, deliver)
            return True
        if ftype == fastpath.FRAME_BODY:
            deliver.chunks.append(payload)
            deliver.received += len(payload)
            if deliver.received >= deliver.size:
                self._delivered(channel, deliver)
            return True
        return False

    def _delivered(self, channel: int, deliver: fastpath.Deliver) -> None:
        del self._assembling[channel]
        callback = self.consumers.get(deliver.consumer_tag)
        if callback is None:
            return  # cancelled meanwhile: unacked, the broker redelivers it
        try:
            callback(channel, deliver)
        except Exception:
            self.log.failure("consumer callback failed on delivery {tag}", tag=deliver.delivery_tag)

    def connectionLost(self, reason):
        try:
            super().connectionLost(reason)
        except Exception:
            # txamqp's own cleanup can raise (e.g. an event fired twice);
            # the connection is gone all the same and must be reported.
            self.log.failure("txamqp cleanup after connection loss failed")
        finally:
            self.listener.connection_lost(self, reason)

    def check_heartbeat(self) -> None:
        # txamqp's timer: nothing received for MAX_UNSEEN_HEARTBEAT intervals.
        if self.checkHB.active():
            self.checkHB.cancel()
        self.abort(f"no frame from the broker for "
                   f"{self.heartbeatInterval * self.MAX_UNSEEN_HEARTBEAT:g}s (heartbeat timeout)")

    def abort(self, reason: str | None = None) -> None:
        """Drop the TCP connection now, without the closing handshake.

        ``reason`` says why, for the log line and the failover decision.
        """
        if reason and self.fault is None:
            self.fault = reason
        if self.transport is not None:
            self.transport.abortConnection()
