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

Who a trap is about: each trap goes to the sink through
:func:`connector_traps.relays.attribute`, so that its ``agent_address`` is
the UDP source unless the source is one of ``trusted_relays`` (then the
agent address the trap names, v1 agent-addr or snmpTrapAddress.0).

Reports: an SNMPv3 answer that comes without a trap -- a Report (engine
discovery, unknown user, wrong digest...), or the Response to a copy of an
inform already handed on -- is sent only if ``reports`` (a
:class:`~connector_traps.storm.ReportLimiter`, shared by the receivers of a
daemon) allows it: a Report is bigger than the forgeable datagram it
answers, and a copy can be sent by anyone who captured the original.
Suppressed ones are counted (``reports_suppressed_source``,
``reports_suppressed_global``) and logged at most every ``log_interval``.
The Response to an inform handed on (with its trap) is always sent.

Communities: ``communities`` is a set of accepted community strings
(``bytes``); an EMPTY set accepts any community (for a lab, or a receiver that
trusts its network filtering).  The settings default to ``{b"public"}``.

Counters (in the ``Counters`` given at construction), every failure by reason:
``datagrams_received``, ``dropped_queue_full``, ``malformed`` and
``malformed_<class>`` (truncated, length, tag, integer, oid, trailing, other:
the class of the :class:`~snmpwire.ber.BERError`), ``unsupported_version``,
``wrong_pdu``, ``bad_community``, ``no_trap_oid``, ``bad_v1_trap``,
``v3_not_configured``, ``v3_errors``, ``inform_response_errors``,
``informs_answered``, ``reports_sent``, ``reports_suppressed_source``,
``reports_suppressed_global``, ``traps_delivered``, ``sink_errors``, ``dropped_at_stop``,
``internal_errors`` (a bug: should stay 0); gauges
``queue_depth``, ``queue_high_water``, ``recv_buffer_bytes``.

Log lines about a source (bad community, malformed datagrams, sink errors)
are rate-limited: at most one per ``log_interval`` (10 s) per source address
and kind, the next one saying how many were suppressed meanwhile.
"""

from __future__ import annotations

import dataclasses
import marshal
import socket
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from twisted.internet import defer
from twisted.internet.protocol import DatagramProtocol
from twisted.python.failure import Failure
from twisted.logger import Logger

from connector.droplog import DropLog
from connector.metrics import Counters
from snmpwire import ber
from connector_traps.convert import ConvertError, normalize_address, trap_from_message
from connector_traps.journal import KIND_ANSWERED, KIND_RAW, KIND_TRAP, Journal
from connector_traps.model import Trap
from connector_traps.relays import TrustedRelays, attribute
from connector_traps.storm import ReportLimiter

__all__ = [
    "TrapReceiver",
    "listen",
    "listen_v4",
    "listen_v6",
    "peek_version",
    "malformed_class",
    "DEFAULT_QUEUE_SIZE",
    "DEFAULT_RECV_BUFFER",
    "DEFAULT_QUEUE_BYTES",
    "DEFAULT_MAX_DATAGRAM",
    "DropLog",
    "JournalPump",
    "trap_to_bytes",
    "trap_from_bytes",
]

DEFAULT_QUEUE_SIZE = 100_000
DEFAULT_QUEUE_BYTES = 16 * 1024 * 1024
DEFAULT_MAX_DATAGRAM = 16 * 1024
DEFAULT_WINDOW = 5_000
DEFAULT_WINDOW_BYTES = 16 * 1024 * 1024
DEFAULT_RECV_BUFFER = 16 * 1024 * 1024
DEFAULT_SLICE_MAX = 2_000
DEFAULT_SLICE_SECONDS = 0.020
DEFAULT_READ_PER_TURN = 1024 * 1024
DEFAULT_REPORT_RATE_PER_SOURCE = 10.0
DEFAULT_REPORT_RATE_TOTAL = 200.0
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
        queue_bytes: int = DEFAULT_QUEUE_BYTES,
        max_datagram: int = MAX_DATAGRAM,
        pump: "JournalPump | None" = None,
        drops: "DropLog | None" = None,
        trusted_relays: TrustedRelays | None = None,
        reports: ReportLimiter | None = None,
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
        self.queue_bytes = queue_bytes
        self.max_datagram = max_datagram
        self._queued_bytes = 0
        self.pump = pump
        self.drops = drops if drops is not None else DropLog(
            reactor, self.counters, self.log, log_interval)
        self.trusted_relays = trusted_relays if trusted_relays is not None else TrustedRelays()
        self.reports = reports if reports is not None else ReportLimiter(
            DEFAULT_REPORT_RATE_PER_SOURCE, DEFAULT_REPORT_RATE_TOTAL, reactor.seconds)

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
            self._queued_bytes = 0

    # -- intake: the hot path, nothing but a bounded append ----------------------

    def datagramReceived(self, data: bytes, addr: tuple[str, int]) -> None:
        self.counters.inc("datagrams_read")
        if len(data) > self.max_datagram:
            self.drops.drop("oversized")
            return
        pump = self.pump
        if pump is not None:
            self._journal(pump, data, addr)
            return
        q = self.queue
        size = len(data)
        if len(q) >= self.queue_size or self._queued_bytes + size > self.queue_bytes:
            self.drops.drop("queue_full")
        else:
            q.append((data, addr, self._time()))
            self._queued_bytes += size
        if self._pending is None:
            self._pending = self.reactor.callLater(0, self._drain_slice)

    def _journal(self, pump: "JournalPump", data: bytes, addr: tuple[str, int]) -> None:
        """The journaled intake: requests (informs, v3 discovery) answered now, SNMPv3
        traps decided now, the rest stored.  An SNMPv3 trap's time window and replay
        checks must hold at reception, once: a record read again after a publisher
        failure is no replay."""
        kind = KIND_RAW
        payload = data
        try:
            decide_now = is_request(data) or peek_version(data) == _VERSION_3
        except ber.BERError:
            decide_now = False
        if decide_now:
            if not pump.has_room(len(data) + 1024):
                # Not answered: the agent sends it again later.
                self.drops.drop("journal_full")
                return
            answered = self._answer_now(data, addr)
            if answered is None:
                return
            kind, payload = answered
        if not pump.append(kind, self._time(), addr[0], addr[1], payload):
            self.drops.drop("journal_full")

    def _answer_now(self, data: bytes, addr: tuple[str, int]) -> tuple[int, bytes] | None:
        """Answer a request at once; (kind, payload) to journal, or None (nothing to keep)."""
        try:
            version = peek_version(data)
        except ber.BERError:
            return KIND_RAW, data
        if version == _VERSION_3:
            handler = self.v3_handler
            if handler is None:
                return KIND_RAW, data
            src = (normalize_address(addr[0]), addr[1])
            try:
                result = handler(data, src)
            except Exception:
                return KIND_RAW, data  # counted when processed
            trap = self._answer_v3(result, addr)
            if trap is None:
                return None
            try:
                return KIND_TRAP, trap_to_bytes(trap)
            except ValueError:
                self.counters.inc("internal_errors")
                return None
        try:
            msg = ber.decode_message(data)
        except ber.BERError:
            return KIND_RAW, data
        communities = self.communities
        if communities and msg.community not in communities:
            return KIND_RAW, data  # counted (bad_community) when processed
        if msg.pdu_type != ber.INFORM_REQUEST:
            return KIND_RAW, data
        try:
            response = ber.encode_response(
                msg.version, msg.community, msg.request_id, 0, 0, msg.varbinds)
            self.transport.write(response, addr)
        except Exception:
            return KIND_RAW, data  # answered (or counted) when processed
        self.counters.inc("informs_answered")
        return KIND_ANSWERED, data

    def process_record(self, kind: int, received: float, host: str, port: int, data: bytes):
        """Handle one journal record; the sink's result (a Deferred, or None)."""
        addr = (host, port)
        self.counters.inc("datagrams_received")
        try:
            if kind == KIND_TRAP:
                return self._deliver(trap_from_bytes(data), addr)
            return self.handle_datagram(data, addr, received, answer=kind == KIND_RAW)
        except Exception:
            self.counters.inc("internal_errors")
            self.log.failure("trap receiver: unexpected error on a datagram from {addr}",
                             addr=addr)
            return None

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
                self._queued_bytes -= len(data)
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

    def handle_datagram(self, data: bytes, addr: tuple[str, int], received: float,
                        answer: bool = True):
        """Decode one datagram and deliver its trap (counting every failure); the sink's
        result.  ``answer=False``: an inform answered already by the reading loop."""
        counters = self.counters
        try:
            version = peek_version(data)
            if version == _VERSION_3:
                return self._v3(data, addr)
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
        if answer and msg.pdu_type == ber.INFORM_REQUEST:
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
        return self._deliver(trap, addr)

    def _deliver(self, trap: Trap, addr: tuple[str, int]):
        try:
            result = self.sink(attribute(trap, self.trusted_relays))
        except Exception as err:
            self.counters.inc("sink_errors")
            self._limited("sink", addr[0], "trap sink failed on a trap from {source}: {error} "
                          "({suppressed} more suppressed in the last {interval} s)",
                          level="error", error=repr(err))
        else:
            self.counters.inc("traps_delivered")
            return result
        return None

    def _v3(self, data: bytes, addr: tuple[str, int]):
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
            return None
        trap = self._answer_v3(result, addr)
        return None if trap is None else self._deliver(trap, addr)

    def _answer_v3(self, result, addr) -> Trap | None:
        """Send the USM handler's answers (Reports, inform Responses); the trap it decoded."""
        items = result if isinstance(result, tuple) else (result,)
        trap = None
        for item in items:
            if isinstance(item, Trap):
                trap = item
        for item in items:
            if isinstance(item, (bytes, bytearray)):
                if trap is None and not self._report_allowed(addr):
                    continue
                try:
                    self.transport.write(bytes(item), addr)
                except Exception:
                    self.counters.inc("v3_errors")
            elif item is not None and not isinstance(item, Trap):
                self.counters.inc("v3_errors")
        return trap

    def _report_allowed(self, addr: tuple[str, int]) -> bool:
        """Whether the report limiter lets one more Report go to ``addr``; counted."""
        reports = self.reports
        if reports.allow(normalize_address(addr[0])):
            self.counters.inc("reports_sent")
            return True
        self.counters.inc("reports_suppressed_" + reports.last_denial)
        # One line for all sources: forged sources would otherwise each get theirs.
        self._limited("report_rate", "any source",
                      "SNMPv3 Reports suppressed by [traps] report_rate_per_source / "
                      "report_rate_total (the latest to {to}); {suppressed} more in the last "
                      "{interval} s", to=addr[0])
        return False


_TRAP_FIELDS = tuple(f.name for f in dataclasses.fields(Trap))


def trap_to_bytes(trap: Trap) -> bytes:
    """A decoded trap as bytes for the journal (``marshal``: plain values, tuples kept).

    Raises ValueError if a field holds something marshal cannot write."""
    return marshal.dumps(tuple(getattr(trap, f) for f in _TRAP_FIELDS))


def trap_from_bytes(data: bytes) -> Trap:
    """The :class:`Trap` :func:`trap_to_bytes` wrote."""
    return Trap(*marshal.loads(data))


def is_request(data: bytes) -> bool:
    """Whether a datagram asks for an answer: a v1/v2c InformRequest, or an SNMPv3
    message with the reportable flag (an inform, an engine discovery).  Reads a few
    octets only; False when the start is not the usual shape (the processing side
    then decodes it and answers, later)."""
    try:
        if len(data) < 8 or data[0] != 0x30:
            return False
        p = 2
        ln = data[1]
        if ln & 0x80:
            p += ln & 0x7F
        if data[p] != 0x02 or data[p + 1] != 1:
            return False
        version = data[p + 2]
        p += 3
        if version == _VERSION_3:
            if data[p] != 0x30:
                return False
            ln = data[p + 1]
            p += 2 + ((ln & 0x7F) if ln & 0x80 else 0)
            for _ in range(2):  # msgID, msgMaxSize
                if data[p] != 0x02 or data[p + 1] & 0x80:
                    return False
                p += 2 + data[p + 1]
            if data[p] != 0x04 or data[p + 1] != 1:
                return False
            return bool(data[p + 2] & 0x04)
        if version > 1 or data[p] != 0x04:
            return False
        ln = data[p + 1]
        if ln & 0x80:
            k = ln & 0x7F
            ln = int.from_bytes(data[p + 2:p + 2 + k], "big")
            p += 2 + k + ln
        else:
            p += 2 + ln
        return data[p] == ber.INFORM_REQUEST
    except IndexError:
        return False


class JournalPump:
    """Feeds the journal from the reading loop and the processing side from the journal.

    ``append`` adds a record to the journal's batch; the batch is written at the end
    of the reactor turn (or every ``flush_bytes``).  The processing reads written
    records in slices (``slice_max`` records or ``slice_seconds`` per reactor turn) and
    hands each to ``handle(kind, received, host, port, data)``, which returns a
    Deferred firing once the record's event is accepted by the publisher (or None:
    nothing to wait for).  At most ``window`` records (``window_bytes`` of datagrams)
    wait for that; the journal's committed position advances over the records done,
    in order.  A failed Deferred (the publisher refused the event) stops the
    processing for ``retry_delay`` and reads again from the committed position: what
    the journal holds is never given up (repeats carry the same message id).
    """

    log = Logger()

    def __init__(self, reactor: Any, journal: Journal, counters: Counters, *,
                 window: int = DEFAULT_WINDOW, window_bytes: int = DEFAULT_WINDOW_BYTES,
                 slice_max: int = DEFAULT_SLICE_MAX, slice_seconds: float = DEFAULT_SLICE_SECONDS,
                 retry_delay: float = 1.0) -> None:
        self.reactor = reactor
        self.journal = journal
        self.counters = counters
        self.window = window
        self.window_bytes = window_bytes
        self.slice_max = slice_max
        self.slice_seconds = slice_seconds
        self.retry_delay = retry_delay
        self.handle: Callable[..., Any] | None = None
        self._outstanding: deque[list] = deque()  # [segment, end offset, done, size, generation]
        self._outstanding_bytes = 0
        self._generation = 0
        self._flush_call = None
        self._process_call = None
        self._retry_call = None
        self._gauges = None
        self._failed_logged = 0.0
        self.running = False

    def start(self) -> None:
        from twisted.internet import task

        self.running = True
        recovered = self.journal.recovered_records
        self.counters.set("journal_recovered", recovered)
        if recovered:
            self.log.info("trap journal {path}: {n} traps read before the last stop are "
                          "processed again (repeats keep their message id)",
                          path=self.journal.path, n=recovered)
        self._gauges = task.LoopingCall(self._tick)
        self._gauges.clock = self.reactor
        self._gauges.start(0.5, now=True)
        self._schedule()

    def stop(self) -> None:
        self.running = False
        for call in (self._flush_call, self._process_call, self._retry_call):
            if call is not None and call.active():
                call.cancel()
        self._flush_call = self._process_call = self._retry_call = None
        if self._gauges is not None and self._gauges.running:
            self._gauges.stop()
        self.journal.close()

    # -- reading side ---------------------------------------------------------

    def has_room(self, size: int) -> bool:
        j = self.journal
        return j.used_bytes + size <= j.max_bytes

    def append(self, kind: int, received: float, host: str, port: int, data: bytes) -> bool:
        if not self.journal.append(kind, received, host, port, data):
            return False
        if self._flush_call is None:
            self._flush_call = self.reactor.callLater(0, self._flush)
        return True

    def _flush(self) -> None:
        self._flush_call = None
        if not self.running:
            return
        try:
            self.journal.flush()
        except OSError as e:
            # A full disk: the batch is gone; counted, and said (rate-limited by the caller's log).
            self.counters.inc("journal_write_errors")
            self.log.error("trap journal {path}: write failed: {error}",
                           path=self.journal.path, error=e)
        self._schedule()

    # -- processing side ------------------------------------------------------

    def _room(self) -> bool:
        return len(self._outstanding) < self.window and self._outstanding_bytes < self.window_bytes

    def _schedule(self) -> None:
        if (self._process_call is None and self._retry_call is None and self.running
                and self._room() and self.journal.unread()):
            self._process_call = self.reactor.callLater(0, self._process)

    def _process(self) -> None:
        self._process_call = None
        journal = self.journal
        handle = self.handle
        out = self._outstanding
        gen = self._generation
        deadline = time.perf_counter() + self.slice_seconds
        done = 0
        while done < self.slice_max and self._room() and self._retry_call is None:
            records = journal.read(min(256, self.window - len(out), self.slice_max - done))
            if not records:
                break
            for seg, off, kind, received, host, port, data in records:
                entry = [seg, off, False, len(data), gen]
                out.append(entry)
                self._outstanding_bytes += len(data)
                result = handle(kind, received, host, port, data)
                if isinstance(result, defer.Deferred):
                    result.addBoth(self._accepted, entry)
                else:
                    entry[2] = True
            done += len(records)
            if time.perf_counter() >= deadline:
                break
        self._advance()
        self._schedule()

    def _accepted(self, result: Any, entry: list) -> None:
        if entry[4] != self._generation:
            return None
        if isinstance(result, Failure):
            self.counters.inc("journal_retries")
            now = self.reactor.seconds()
            if now - self._failed_logged >= LOG_INTERVAL:
                self._failed_logged = now
                self.log.warn("the publisher refused an event ({error}): trap processing "
                              "pauses {delay} s and reads the journal again from the last "
                              "accepted trap", error=result.getErrorMessage(),
                              delay=self.retry_delay)
            if self._retry_call is None and self.running:
                if self._process_call is not None and self._process_call.active():
                    self._process_call.cancel()
                self._process_call = None
                self._retry_call = self.reactor.callLater(self.retry_delay, self._retry)
            return None
        entry[2] = True
        out = self._outstanding
        if out and out[0] is entry:
            self._advance()
            self._schedule()
        return None

    def _retry(self) -> None:
        self._retry_call = None
        self._generation += 1
        self._outstanding.clear()
        self._outstanding_bytes = 0
        self.journal.rewind()
        self._schedule()

    def _advance(self) -> None:
        out = self._outstanding
        last = None
        while out and out[0][2]:
            last = out.popleft()
            self._outstanding_bytes -= last[3]
        if last is not None and self.running:
            self.journal.commit(last[0], last[1])

    def _tick(self) -> None:
        j = self.journal
        self.counters.set("journal_bytes", j.used_bytes)
        self.counters.set("journal_waiting", len(self._outstanding))
        if self.running:
            j.save()


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
