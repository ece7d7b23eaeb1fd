"""The UDP intake of ``centaure-traps``: bounded, storm-proof, counted.

Design (for bursts: a storm must cost drops that are counted, never a blocked
reactor nor an unbounded memory):

* ``datagramReceived`` does nothing but append ``(data, addr, time)`` to a
  bounded deque (``queue_size``, default 100,000).  When it is full the new
  datagram is dropped and counted (``dropped_queue_full``); nothing is ever
  dropped silently.
* A decoder drains the deque in slices -- at most ``slice_max`` datagrams
  (2,000) or ``slice_seconds`` (20 ms) per reactor turn, then ``callLater(0)``
  -- so reading the socket and every other reactor job go on during a burst.
* The socket asks for a big receive buffer (``recv_buffer``, 16 MiB by
  default): ``SO_RCVBUFFORCE`` first (root, or CAP_NET_ADMIN: ignores
  ``net.core.rmem_max``), else ``SO_RCVBUF`` (capped by rmem_max).  The size
  the kernel granted is in ``recv_buffer_granted``, in the gauge
  ``recv_buffer_bytes`` and in the log.  The port's ``maxPacketSize`` is
  raised to 65,535 (Twisted's default, 8,192, would truncate big traps) and
  ``maxThroughput`` (bytes read per reactor turn) to ``read_per_turn``.

Per datagram: the SNMP version is peeked; v1 and v2c are decoded by
:func:`snmpwire.ber.decode_message`, the community checked, the trap
converted by :func:`connector_traps.convert.trap_from_message`; a v2c
InformRequest is answered (a Response PDU with the same request-id and
varbinds, error-status 0, sent to the source address) *before* the trap is
handed to the sink.  SNMPv3 datagrams go raw to ``v3_handler(data, addr)``,
which returns a :class:`Trap` (handed to the sink), ``bytes`` (a response or
Report, sent back to ``addr``), a ``(bytes, Trap)`` pair (both, the answer
first) or None (nothing to do; the handler counts its own reasons).

Communities: ``communities`` is a set of accepted community strings
(``bytes``); an EMPTY set accepts any community (for a lab, or a receiver that
trusts its network filtering).  The settings default to ``{b"public"}``.

Counters (in the ``Counters`` given at construction), every failure by reason:
``datagrams_received``, ``dropped_queue_full``, ``malformed`` and
``malformed_<class>`` (truncated, length, tag, integer, oid, trailing, other:
the class of the :class:`~snmpwire.ber.BERError`), ``unsupported_version``,
``wrong_pdu``, ``bad_community``, ``no_trap_oid``, ``bad_v1_trap``,
``v3_not_configured``, ``v3_errors``, ``inform_response_errors``,
``informs_answered``, ``traps_delivered``, ``sink_errors``, ``dropped_at_stop``,
``internal_errors`` (a bug: should stay 0); gauges
``queue_depth``, ``queue_high_water``, ``recv_buffer_bytes``.

Log lines about a source (bad community, malformed datagrams, sink errors)
are rate-limited: at most one per ``log_interval`` (10 s) per source address
and kind, the next one saying how many were suppressed meanwhile.
"""

from __future__ import annotations

import socket
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from connector.metrics import Counters
from snmpwire import ber
from connector_traps.convert import ConvertError, normalize_address, trap_from_message
from connector_traps.model import Trap

__all__ = [
    "TrapReceiver",
    "listen",
    "listen_v4",
    "listen_v6",
    "peek_version",
    "malformed_class",
    "DEFAULT_QUEUE_SIZE",
    "DEFAULT_RECV_BUFFER",
]

DEFAULT_QUEUE_SIZE = 100_000
DEFAULT_RECV_BUFFER = 16 * 1024 * 1024
DEFAULT_SLICE_MAX = 2_000
DEFAULT_SLICE_SECONDS = 0.020
DEFAULT_READ_PER_TURN = 1024 * 1024
MAX_DATAGRAM = 65_535
LOG_INTERVAL = 10.0
_SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33 if sys.platform.startswith("linux") else None)
_VERSION_3 = 3

Sink = Callable[[Trap], None]
V3Handler = Callable[[bytes, tuple[str, int]], Any]


def peek_version(data: bytes) -> int:
    """The msgVersion of an SNMP message, reading only its first TLVs.

    Raises :class:`~snmpwire.ber.BERError` when the start is not
    ``SEQUENCE { INTEGER ...``.  The rest of the message is not checked.
    """
    n = len(data)
    if n < 2 or data[0] != 0x30:
        raise ber.BERError(0, "not a message SEQUENCE" if n else "empty datagram")
    ln = data[1]
    p = 2
    if ln >= 0x80:
        k = ln & 0x7F
        if not k:
            raise ber.BERError(1, "indefinite length in message")
        if k > 4:
            raise ber.BERError(1, f"message length takes {k} octets (max 4)")
        p += k
    if p + 2 > n:
        raise ber.BERError(p, "truncated version")
    if data[p] != 0x02:
        raise ber.BERError(p, f"version: expected tag 0x02, got 0x{data[p]:02X}")
    vl = data[p + 1]
    if not 0 < vl <= 5:
        raise ber.BERError(p + 1, f"version length {vl} (expected 1..5)")
    if p + 2 + vl > n:
        raise ber.BERError(p, "truncated version")
    return int.from_bytes(data[p + 2:p + 2 + vl], "big", signed=True)


_CLASSES = (
    ("truncated", ("truncated", "runs past", "missing")),
    ("length", ("length",)),
    ("trailing", ("trailing",)),
    ("oid", ("OBJECT IDENTIFIER", "OID")),
    ("tag", ("tag", "not a message", "constructed")),
    ("integer", ("out of range", "content octets", "empty ", "octets (expected")),
)


def malformed_class(err: ber.BERError) -> str:
    """A short class of a BERError's reason, for the ``malformed_<class>`` counter."""
    reason = err.reason
    for name, words in _CLASSES:
        for w in words:
            if w in reason:
                return name
    return "other"


class _RateLimitedLog:
    """At most one log line per (kind, source) per interval; counts the rest."""

    MAX_KEYS = 10_000

    def __init__(self, log: Logger, clock: Callable[[], float], interval: float) -> None:
        self.log = log
        self.clock = clock
        self.interval = interval
        self.state: dict[tuple[str, str], list] = {}  # key -> [next allowed time, suppressed]

    def __call__(self, kind: str, source: str, fmt: str, level: str = "warn", **kw: Any) -> bool:
        """Log ``fmt`` (with ``suppressed`` in ``kw``) unless rate-limited; True if logged."""
        now = self.clock()
        key = (kind, source)
        st = self.state.get(key)
        if st is not None and now < st[0]:
            st[1] += 1
            return False
        suppressed = st[1] if st is not None else 0
        if st is None and len(self.state) >= self.MAX_KEYS:
            # Forget the windows that are over; if none is, forget them all
            # (a storm from 10,000 sources: each may log once more).
            expired = [k for k, v in self.state.items() if now >= v[0]]
            for k in expired:
                del self.state[k]
            if len(self.state) >= self.MAX_KEYS:
                self.state.clear()
        self.state[key] = [now + self.interval, 0]
        getattr(self.log, level)(fmt, source=source, suppressed=suppressed,
                                 interval=self.interval, **kw)
        return True


class TrapReceiver(DatagramProtocol):
    """Receives v1/v2c traps and informs (v3 through ``v3_handler``) on one UDP port.

    ``reactor`` schedules the drain (``callLater``) and is the clock of the
    log rate limit; ``sink(trap)`` receives each decoded :class:`Trap`
    (exceptions it raises are counted as ``sink_errors`` and logged, the
    receiver goes on); ``counters`` receives the counters listed in the
    module docstring.
    """

    log = Logger()

    def __init__(
        self,
        reactor: Any,
        sink: Sink,
        counters: Counters | None = None,
        *,
        communities: Iterable[bytes] = (b"public",),
        queue_size: int = DEFAULT_QUEUE_SIZE,
        recv_buffer: int = DEFAULT_RECV_BUFFER,
        v3_handler: V3Handler | None = None,
        slice_max: int = DEFAULT_SLICE_MAX,
        slice_seconds: float = DEFAULT_SLICE_SECONDS,
        read_per_turn: int = DEFAULT_READ_PER_TURN,
        log_interval: float = LOG_INTERVAL,
    ) -> None:
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size}")
        if slice_max < 1:
            raise ValueError(f"slice_max must be >= 1, got {slice_max}")
        self.reactor = reactor
        self.sink = sink
        self.counters = counters if counters is not None else Counters("traps")
        self.communities = frozenset(bytes(c) for c in communities)
        self.queue_size = queue_size
        self.recv_buffer = recv_buffer
        self.v3_handler = v3_handler
        self.slice_max = slice_max
        self.slice_seconds = slice_seconds
        self.read_per_turn = read_per_turn
        self.queue: deque[tuple[bytes, tuple[str, int], float]] = deque()
        self.recv_buffer_granted: int | None = None
        self.high_water = 0
        self._pending = None  # the scheduled drain (IDelayedCall) or None
        self._limited = _RateLimitedLog(self.log, reactor.seconds, log_interval)
        self._time = time.time

    # -- socket ----------------------------------------------------------------

    def startProtocol(self) -> None:
        transport = self.transport
        if getattr(transport, "maxPacketSize", MAX_DATAGRAM) < MAX_DATAGRAM:
            transport.maxPacketSize = MAX_DATAGRAM
        if self.read_per_turn and hasattr(transport, "maxThroughput"):
            transport.maxThroughput = max(transport.maxThroughput, self.read_per_turn)
        handle = getattr(transport, "getHandle", None)
        sock = handle() if handle is not None else None
        if isinstance(sock, socket.socket) and self.recv_buffer:
            self.recv_buffer_granted = set_recv_buffer(sock, self.recv_buffer)
            self.counters.set("recv_buffer_bytes", self.recv_buffer_granted)
            host = transport.getHost()
            self.log.info(
                "trap receiver on {host}:{port}: receive buffer {granted} bytes "
                "(asked {asked}), queue {queue}",
                host=host.host, port=host.port, granted=self.recv_buffer_granted,
                asked=self.recv_buffer, queue=self.queue_size)

    def stopProtocol(self) -> None:
        """The port stopped: datagrams still queued are dropped, and counted
        (``dropped_at_stop``); the sink may be shutting down too."""
        if self._pending is not None and self._pending.active():
            self._pending.cancel()
        self._pending = None
        if self.queue:
            self.counters.inc("dropped_at_stop", len(self.queue))
            self.log.warn("trap receiver stopped with {n} datagrams not decoded",
                          n=len(self.queue))
            self.queue.clear()

    # -- intake: the hot path, nothing but a bounded append ----------------------

    def datagramReceived(self, data: bytes, addr: tuple[str, int]) -> None:
        q = self.queue
        if len(q) >= self.queue_size:
            self.counters.inc("dropped_queue_full")
        else:
            q.append((data, addr, self._time()))
        if self._pending is None:
            self._pending = self.reactor.callLater(0, self._drain_slice)

    # -- decoding ---------------------------------------------------------------

    def _drain_slice(self) -> None:
        self._pending = None
        q = self.queue
        depth = len(q)
        if depth > self.high_water:
            self.high_water = depth
            self.counters.set("queue_high_water", depth)
        self.drain(self.slice_max, self.slice_seconds)
        self.counters.set("queue_depth", len(q))
        if q and self._pending is None:
            self._pending = self.reactor.callLater(0, self._drain_slice)

    def drain(self, max_items: int | None = None, max_seconds: float | None = None) -> int:
        """Handle queued datagrams: all of them, or up to ``max_items`` /
        ``max_seconds``.  Returns how many were handled.  Never raises."""
        q = self.queue
        popleft = q.popleft
        handle = self.handle_datagram
        limit = len(q) if max_items is None else min(max_items, len(q))
        deadline = None if max_seconds is None else time.perf_counter() + max_seconds
        done = 0
        counters = self.counters
        try:
            while done < limit:
                data, addr, received = popleft()
                done += 1
                try:
                    handle(data, addr, received)
                except Exception:  # defensive: handle_datagram counts its own failures
                    counters.inc("internal_errors")
                    self.log.failure("trap receiver: unexpected error on a datagram from "
                                     "{addr}", addr=addr)
                if deadline is not None and not done & 63 and time.perf_counter() >= deadline:
                    break
        finally:
            counters.inc("datagrams_received", done)
        return done

    def handle_datagram(self, data: bytes, addr: tuple[str, int], received: float) -> None:
        """Decode one datagram and deliver its trap (counting every failure)."""
        counters = self.counters
        try:
            version = peek_version(data)
            if version == _VERSION_3:
                self._v3(data, addr)
                return
            if version != 0 and version != 1:
                counters.inc("unsupported_version")
                return
            msg = ber.decode_message(data)
        except ber.BERError as err:
            if "is not a version" in err.reason:  # a PDU that this version lacks
                counters.inc("wrong_pdu")
                return
            cls = malformed_class(err)
            counters.inc("malformed")
            counters.inc("malformed_" + cls)
            self._limited("malformed", addr[0], "malformed datagram from {source}: {error} "
                          "({suppressed} more suppressed in the last {interval} s)",
                          level="info", error=str(err))
            return
        communities = self.communities
        if communities and msg.community not in communities:
            counters.inc("bad_community")
            self._limited("bad_community", addr[0],
                          "trap with a wrong community from {source} "
                          "({suppressed} more suppressed in the last {interval} s)")
            return
        try:
            trap = trap_from_message(msg, addr, received)
        except ConvertError as err:
            counters.inc(err.reason)
            return
        if msg.pdu_type == ber.INFORM_REQUEST:
            try:
                response = ber.encode_response(
                    msg.version, msg.community, msg.request_id, 0, 0, msg.varbinds)
                self.transport.write(response, addr)
            except Exception as err:  # an odd varbind, a socket error: still deliver
                counters.inc("inform_response_errors")
                self._limited("inform_response", addr[0],
                              "could not answer an inform from {source}: {error} "
                              "({suppressed} more suppressed in the last {interval} s)",
                              error=repr(err))
            else:
                counters.inc("informs_answered")
        self._deliver(trap, addr)

    def _deliver(self, trap: Trap, addr: tuple[str, int]) -> None:
        try:
            self.sink(trap)
        except Exception as err:
            self.counters.inc("sink_errors")
            self._limited("sink", addr[0], "trap sink failed on a trap from {source}: {error} "
                          "({suppressed} more suppressed in the last {interval} s)",
                          level="error", error=repr(err))
        else:
            self.counters.inc("traps_delivered")

    def _v3(self, data: bytes, addr: tuple[str, int]) -> None:
        handler = self.v3_handler
        if handler is None:
            self.counters.inc("v3_not_configured")
            return
        src = (normalize_address(addr[0]), addr[1])
        try:
            result = handler(data, src)
        except Exception as err:
            self.counters.inc("v3_errors")
            self._limited("v3", addr[0], "SNMPv3 handler failed on a datagram from {source}: "
                          "{error} ({suppressed} more suppressed in the last {interval} s)",
                          error=repr(err))
            return
        if result is None:
            return
        items = result if isinstance(result, tuple) else (result,)
        for item in items:
            if isinstance(item, (bytes, bytearray)):
                try:
                    self.transport.write(bytes(item), addr)
                except Exception:
                    self.counters.inc("v3_errors")
            elif isinstance(item, Trap):
                self._deliver(item, addr)
            elif item is not None:
                self.counters.inc("v3_errors")


def set_recv_buffer(sock: socket.socket, size: int) -> int:
    """Ask for a ``size``-byte receive buffer; return what the kernel granted.

    ``SO_RCVBUFFORCE`` first (needs CAP_NET_ADMIN; ignores
    ``net.core.rmem_max``), then ``SO_RCVBUF`` (capped at rmem_max).  Linux
    reports twice the size asked (its bookkeeping overhead); the value
    returned is what ``getsockopt`` says.
    """
    done = False
    if _SO_RCVBUFFORCE is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, size)
            done = True
        except OSError:
            pass
    if not done:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
        except OSError:
            pass
    return sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)


def listen(reactor: Any, address: str, port: int, sink: Sink,
           counters: Counters | None = None, **kwargs: Any) -> tuple[Any, TrapReceiver]:
    """Start a :class:`TrapReceiver` on ``address:port`` (UDP); returns
    ``(listening port, receiver)``.  ``address`` may be IPv4 (``0.0.0.0``)
    or IPv6 (``::``; on Linux a ``::`` socket also receives IPv4, whose
    senders the receiver reports as plain IPv4).  ``port`` 0 picks a free
    port (``listening_port.getHost().port``).  ``kwargs`` go to
    :class:`TrapReceiver`."""
    receiver = TrapReceiver(reactor, sink, counters, **kwargs)
    lport = reactor.listenUDP(port, receiver, interface=address, maxPacketSize=MAX_DATAGRAM)
    return lport, receiver


def listen_v4(reactor: Any, sink: Sink, port: int = 162, address: str = "0.0.0.0",
              counters: Counters | None = None, **kwargs: Any) -> tuple[Any, TrapReceiver]:
    """:func:`listen` on an IPv4 address (all interfaces by default)."""
    return listen(reactor, address, port, sink, counters, **kwargs)


def listen_v6(reactor: Any, sink: Sink, port: int = 162, address: str = "::",
              counters: Counters | None = None, **kwargs: Any) -> tuple[Any, TrapReceiver]:
    """:func:`listen` on an IPv6 address (all interfaces by default)."""
    return listen(reactor, address, port, sink, counters, **kwargs)
