"""The SNMP manager side of the poller: GET and table walks, v1/v2c/v3.

Every version runs over our own BER codec (:mod:`snmpwire.ber`) and a
Twisted ``DatagramProtocol``; v3 adds our own USM
(:mod:`connector_snmp.usm_manager`, over the trap receiver's
:mod:`snmpwire.usm`): engine discovery, time synchronisation and keys
localized per agent engine.

Transport
    One UDP socket per address family (IPv4, and IPv6 when the host has it),
    shared by every target, with a large receive buffer (``SO_RCVBUFFORCE``
    when running as root, else ``SO_RCVBUF``, capped by
    ``net.core.rmem_max``).  Every request gets a request-id from a counter
    with a random start that wraps at 2**31 (ids still in flight are
    skipped); a response is matched by request-id AND source (address, port).
    A v3 message uses that number as msgID and request-id and is matched by
    msgID AND source, then authenticated.  A datagram that does not decode,
    is not a Response, matches no request or (v3) does not authenticate is
    counted in ``counters["bad_packets"]`` and dropped.

Timeouts and retries
    Each try waits ``target.timeout`` seconds (``reactor.callLater``), then
    the SAME datagram (same request-id) is re-sent, ``target.retries`` times.
    Reusing the request-id means a late answer to an earlier try is still
    accepted, so a slow agent is not punished with extra round trips (all
    requests we send are reads, hence idempotent).  After the last try the
    call raises :class:`SnmpTimeout`, i.e. after about
    ``timeout * (retries + 1)`` seconds of being on the wire.

Bounded in-flight requests per agent
    At most ``max_in_flight_per_agent`` requests are on the wire to one
    (address, port) at a time, for every version; more wait in a small FIFO
    per agent.  A net-snmp agent sent 200 simultaneous GETs loses responses,
    which then come back only after the retry timeout (measured on loopback:
    ~1,900 varbinds/s, the CPU idle); an agent's answer is quicker than a
    timeout.  The timeout clock starts when the request is sent, not while
    it waits in the queue.

Requests
    ``get`` splits many OIDs into requests of at most 60 varbinds (sent
    concurrently; the per-agent bound orders them).  ``tooBig`` splits a
    request in halves and retries; v1 ``noSuchName`` reports that varbind as
    ``(oid, "NoSuchObject", None)`` and re-requests the rest.

    ``walk`` walks several columns together with GETBULK (v2c/v3,
    non-repeaters 0, ``target.max_repetitions``) or GETNEXT (v1).  A column
    ends when an OID leaves its prefix, at ``endOfMibView``, at v1
    ``noSuchName`` for its varbind, or when an OID does not increase
    (an agent bug: we stop that column instead of looping).  ``tooBig``
    halves max-repetitions, then the number of columns per request.  The
    GETBULKs of a walk ask for the rows the same table of the same agent had
    at the previous walk, plus one, minus the rows already received (at most
    max-repetitions; once a table outgrows that, max-repetitions): a poller
    walks the same tables again and again, and repetitions past the end of
    a table are wasted on both sides.

v3 specifics
    Per agent (address, port), the first request discovers the engine (a
    noAuthNoPriv Report of usmStatsUnknownEngineIDs gives its engine ID,
    boots and time; concurrent requests share one discovery), and the
    authenticated request that follows synchronises the clock (an
    authenticated usmStatsNotInTimeWindows Report gives boots/time; the
    request is sent again).  A Report of unknownEngineIDs/notInTimeWindows
    to a later request restarts discovery/synchronisation, at most twice per
    request.  Other Reports (usmStatsWrongDigests, UnknownUserNames,
    DecryptionErrors, ...) fail the request with :class:`SnmpError` naming
    the counter.  Those Reports are not authenticated (the agent cannot
    check our keys), so a datagram forged from the agent's address with
    the msgID of a request in flight can end that request or make it
    rediscover; it cannot replace an engine ID confirmed by an
    authenticated answer (see :mod:`connector_snmp.usm_manager`).  Keys
    are localized per (credentials, engine ID): agents may share a user
    name with different or identical passwords.
    ``V3Security.priv_protocol = "AES192"/"AES256"`` use the key extension of
    draft-blumenthal-aes-usm-04, what net-snmp calls ``AES-192``/``AES-256``
    (the default here); ``SnmpClient(..., aes_key_extension="reeder")``
    selects the other variant, net-snmp's ``AES-192-C``/``AES-256-C`` as
    Cisco devices use it.
"""

from __future__ import annotations

import collections
import ipaddress
import logging
import random
import socket
import time
from collections.abc import Sequence
from typing import Any

from twisted.internet import defer, threads
from twisted.internet.protocol import DatagramProtocol

from snmpwire import ber
from connector_snmp.model import SnmpTarget, Varbind
from connector_snmp.usm_manager import (
    Drop,
    EngineState,
    PendingV3,
    Reply,
    Report,
    UsmManager,
    is_v3,
    report_error,
)
from snmpwire.usm import UsmError, parse_message

__all__ = ["SnmpClient", "SnmpError", "SnmpTimeout", "MAX_VARBINDS_PER_REQUEST"]

log = logging.getLogger(__name__)

#: Largest number of varbinds we put in one request.
MAX_VARBINDS_PER_REQUEST = 60

_RID_MOD = 2**31

_GET = ber.GET_REQUEST
_NEXT = ber.GETNEXT_REQUEST
_BULK = ber.GETBULK_REQUEST

_TOO_BIG = 1
_NO_SUCH_NAME = 2

#: RFC 3416 error-status names.
ERROR_STATUS_NAMES = (
    "noError", "tooBig", "noSuchName", "badValue", "readOnly", "genErr", "noAccess",
    "wrongType", "wrongLength", "wrongEncoding", "wrongValue", "noCreation",
    "inconsistentValue", "resourceUnavailable", "commitFailed", "undoFailed",
    "authorizationError", "notWritable", "inconsistentName",
)

_SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)  # Linux


def _describe(target: SnmpTarget) -> str:
    """``address:port (version)`` -- never the community or keys."""
    host = f"[{target.address}]" if ":" in target.address else target.address
    return f"{host}:{target.port} ({target.version})"


class SnmpTimeout(Exception):
    """No answer from an agent after every try."""

    def __init__(self, target: SnmpTarget, tries: int | None = None) -> None:
        self.target = _describe(target)
        tries = tries if tries is not None else target.retries + 1
        super().__init__(f"no response from {self.target} after {tries} "
                         f"tr{'y' if tries == 1 else 'ies'} of {target.timeout:g} s")


class SnmpError(Exception):
    """The agent answered with an error-status (or a v3 engine error).

    ``status`` is the error-status number (0 for a v3 error indication),
    ``index`` the 1-based error-index, ``oid`` the OID it points to if known.
    """

    def __init__(self, target: SnmpTarget, status: int, index: int = 0,
                 oid: str | None = None, reason: str | None = None) -> None:
        self.target = _describe(target)
        self.status = status
        self.index = index
        self.oid = oid
        if reason is None:
            name = (ERROR_STATUS_NAMES[status] if 0 <= status < len(ERROR_STATUS_NAMES)
                    else f"error-status {status}")
            reason = f"{name} at varbind {index}" + (f" ({oid})" if oid else "")
        self.reason = reason
        super().__init__(f"{reason} from {self.target}")


# --------------------------------------------------------------------------
# OID ordering: index suffix -> tuple of ints, cached (a poller sees the
# same indexes at every poll and in every column).

_KEY_CACHE: dict[str, tuple[int, ...]] = {}
_KEY_CACHE_MAX = 200_000
_HINTS_MAX = 200_000  # remembered table sizes (see walk)


def _repetitions(reps: int, hint: int | None, have: int) -> tuple[int, int | None]:
    """The max-repetitions of the next GETBULK and the rows hint to keep.

    ``hint`` is the rows the table had at the last walk, ``have`` the rows
    read so far: ask for one past the hint (to see the end), at most ``reps``;
    a table that grew past its hint drops it.
    """
    if hint is None:
        return reps, None
    if have > hint:  # the table grew: stop guessing
        return reps, None
    return min(reps, hint + 1 - have), hint


def _suffix_key(suffix: str) -> tuple[int, ...]:
    key = tuple(map(int, suffix.split(".")))
    if len(_KEY_CACHE) >= _KEY_CACHE_MAX:
        _KEY_CACHE.clear()
    _KEY_CACHE[suffix] = key
    return key


def _norm_oid(oid: str) -> str:
    return oid[1:] if oid.startswith(".") else oid


# --------------------------------------------------------------------------
# v1/v2c transport


class _Pending:
    """One request on the wire."""

    __slots__ = ("rid", "dest", "data", "deferred", "tries_left", "call", "target", "family",
                 "v3")

    def __init__(self, rid: int, dest: tuple[str, int], family: int, data: bytes,
                 target: SnmpTarget, deferred: defer.Deferred) -> None:
        self.rid = rid
        self.dest = dest
        self.family = family
        self.data = data
        self.target = target
        self.deferred = deferred
        self.tries_left = target.retries
        self.call: Any = None
        self.v3: PendingV3 | None = None


class _Protocol(DatagramProtocol):
    def __init__(self, client: SnmpClient) -> None:
        self.datagramReceived = client._datagram  # type: ignore[method-assign]


class _Agent:
    """Per-(address, port) bound: requests in flight and the FIFO behind."""

    __slots__ = ("in_flight", "waiting")

    def __init__(self) -> None:
        self.in_flight = 0
        self.waiting: collections.deque[defer.Deferred] = collections.deque()


class SnmpClient:
    """Asynchronous SNMP manager: ``get`` and ``walk`` for many targets.

    Call :meth:`start` before use and :meth:`stop` at the end.  ``counters``
    holds: requests (PDUs sent, first tries), responses (matched), timeouts
    (requests given up), retries (re-sends), too_big, varbinds (received in
    matched responses), bad_packets (dropped datagrams), send_errors,
    non_increasing (walk columns stopped on an agent's ordering bug).
    """

    def __init__(self, reactor: Any, max_in_flight_per_agent: int = 4,
                 recv_buffer: int = 4 << 20, aes_key_extension: str = "blumenthal") -> None:
        if max_in_flight_per_agent < 1:
            raise ValueError("max_in_flight_per_agent must be >= 1")
        if aes_key_extension not in ("blumenthal", "reeder"):
            raise ValueError("aes_key_extension must be 'blumenthal' or 'reeder'")
        self.reactor = reactor
        self.max_in_flight_per_agent = max_in_flight_per_agent
        self.recv_buffer = recv_buffer
        self.aes_key_extension = aes_key_extension
        self.counters: dict[str, int] = dict.fromkeys(
            ("requests", "responses", "timeouts", "retries", "too_big", "varbinds",
             "bad_packets", "send_errors", "non_increasing"), 0)
        #: Receive buffer size the kernel granted, per family ("ipv4", "ipv6").
        self.rcvbuf: dict[str, int] = {}
        self._ports: dict[int, Any] = {}
        self._pending: dict[int, _Pending] = {}
        self._agents: dict[tuple[str, int], _Agent] = {}
        self._rid = random.randrange(1, _RID_MOD)
        self._resolved: dict[str, tuple[int, str, float]] = {}
        self._running = False
        self._rows_hint: dict[tuple, int] = {}
        # v3
        self._usm = UsmManager(aes_key_extension)
        self._discovering: dict[tuple[str, int], list[defer.Deferred]] = {}

    # ---------------------------------------------------------------- life

    def start(self) -> None:
        """Open the UDP sockets (IPv4, and IPv6 if available)."""
        if self._running:
            return
        proto = _Protocol(self)
        self._ports[socket.AF_INET] = self.reactor.listenUDP(
            0, proto, interface="0.0.0.0", maxPacketSize=65535)
        self._tune(self._ports[socket.AF_INET], "ipv4")
        if socket.has_ipv6:
            try:
                port6 = self.reactor.listenUDP(0, _Protocol(self), interface="::",
                                               maxPacketSize=65535)
            except Exception as exc:  # no IPv6 on this host
                log.info("SNMP client: no IPv6 socket (%s)", exc)
            else:
                self._ports[socket.AF_INET6] = port6
                self._tune(port6, "ipv6")
        self._running = True

    def _tune(self, port: Any, name: str) -> None:
        sock = port.getHandle()
        try:
            sock.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, self.recv_buffer)
        except OSError:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.recv_buffer)
            except OSError as exc:
                log.warning("SNMP client: cannot set SO_RCVBUF (%s)", exc)
        # Linux reports twice the size asked for (bookkeeping overhead).
        self.rcvbuf[name] = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)

    def stop(self) -> defer.Deferred:
        """Fail what is in flight (CancelledError), close the sockets."""
        self._running = False
        pending, self._pending = self._pending, {}
        for p in pending.values():
            if p.call is not None and p.call.active():
                p.call.cancel()
            p.deferred.errback(defer.CancelledError("SNMP client stopped"))
        agents, self._agents = self._agents, {}
        for agent in agents.values():
            while agent.waiting:
                agent.waiting.popleft().errback(defer.CancelledError("SNMP client stopped"))
        ds = [defer.maybeDeferred(port.stopListening) for port in self._ports.values()]
        self._ports = {}
        return defer.gatherResults(ds).addCallback(lambda _: None)

    # ------------------------------------------------------- per-agent bound

    async def _acquire(self, key: tuple[str, int]) -> None:
        agent = self._agents.get(key)
        if agent is None:
            agent = self._agents[key] = _Agent()
        if agent.in_flight < self.max_in_flight_per_agent:
            agent.in_flight += 1
            return
        waiting = agent.waiting

        def cancel(d: defer.Deferred) -> None:
            try:
                waiting.remove(d)
            except ValueError:
                pass

        d: defer.Deferred = defer.Deferred(cancel)
        waiting.append(d)
        await d  # the releasing request hands its slot over

    def _release(self, key: tuple[str, int]) -> None:
        agent = self._agents.get(key)
        if agent is None:
            return
        if agent.waiting:
            agent.waiting.popleft().callback(None)
        else:
            agent.in_flight -= 1
            if agent.in_flight <= 0:
                del self._agents[key]

    # -------------------------------------------------------------- v1/v2c

    async def _resolve(self, target: SnmpTarget) -> tuple[int, str]:
        """(family, normalized address literal), host names cached 5 min."""
        hit = self._resolved.get(target.address)
        if hit is not None and hit[2] > time.monotonic():
            return hit[0], hit[1]
        addr = target.address
        try:
            ip = ipaddress.ip_address(addr.split("%", 1)[0])
        except ValueError:
            infos = await threads.deferToThread(
                socket.getaddrinfo, addr, target.port, 0, socket.SOCK_DGRAM)
            families = [i for i in infos if i[0] in self._ports] or infos
            family, host = families[0][0], families[0][4][0]
            expires = time.monotonic() + 300.0
        else:
            family = socket.AF_INET if ip.version == 4 else socket.AF_INET6
            # the text form recvfrom() will report for this address
            host = socket.inet_ntop(family, ip.packed)
            expires = float("inf")
        if len(self._resolved) > 100_000:
            self._resolved.clear()
        self._resolved[addr] = (family, host, expires)
        return family, host

    def _next_rid(self) -> int:
        rid = self._rid
        pending = self._pending
        while True:
            rid += 1
            if rid >= _RID_MOD:
                rid = 1
            if rid not in pending:
                self._rid = rid
                return rid

    async def _udp_request(self, target: SnmpTarget, pdu: int, oids: list[str],
                           max_rep: int) -> ber.SnmpMessage:
        if not self._running:
            raise RuntimeError("SnmpClient is not started")
        family, host = await self._resolve(target)
        if family not in self._ports:
            raise SnmpError(target, 0, reason="no socket for this address family")
        dest = (host, target.port)
        await self._acquire(dest)
        try:
            rid = self._next_rid()
            if pdu == _BULK:
                data = ber.encode_getbulk(target.community, rid, 0, max_rep, oids)
            else:
                version = ber.VERSION_1 if target.version == "v1" else ber.VERSION_2C
                enc = ber.encode_get if pdu == _GET else ber.encode_getnext
                data = enc(version, target.community, rid, oids)

            def cancel(d: defer.Deferred) -> None:
                p = self._pending.pop(rid, None)
                if p is not None and p.call is not None and p.call.active():
                    p.call.cancel()

            d: defer.Deferred = defer.Deferred(cancel)
            p = _Pending(rid, dest, family, data, target, d)
            self._pending[rid] = p
            self.counters["requests"] += 1
            self._send(p)
            return await d
        finally:
            self._release(dest)

    def _send(self, p: _Pending) -> None:
        try:
            self._ports[p.family].write(p.data, p.dest)
        except Exception as exc:  # unreachable network, ...: the timeout decides
            self.counters["send_errors"] += 1
            log.debug("SNMP send to %s failed: %s", _describe(p.target), exc)
        p.call = self.reactor.callLater(p.target.timeout, self._expire, p)

    def _expire(self, p: _Pending) -> None:
        if self._pending.get(p.rid) is not p:
            return
        if p.tries_left > 0:
            p.tries_left -= 1
            self.counters["retries"] += 1
            self._send(p)
            return
        del self._pending[p.rid]
        self.counters["timeouts"] += 1
        p.deferred.errback(SnmpTimeout(p.target))

    def _datagram(self, data: bytes, addr: tuple) -> None:
        try:
            msg = ber.decode_message(data)
        except ber.BERError:
            if is_v3(data):
                self._v3_datagram(data, addr)
                return
            self.counters["bad_packets"] += 1
            return
        p = self._pending.get(msg.request_id)  # type: ignore[arg-type]
        if p is None or p.dest != addr or msg.pdu_type != ber.RESPONSE or p.v3 is not None:
            self.counters["bad_packets"] += 1
            return
        del self._pending[p.rid]
        p.call.cancel()
        c = self.counters
        c["responses"] += 1
        c["varbinds"] += len(msg.varbinds)
        p.deferred.callback(msg)

    # ------------------------------------------------------------------ v3

    def _v3_datagram(self, data: bytes, addr: tuple) -> None:
        """A v3 message: match by msgID and source, authenticate, decode."""
        c = self.counters
        try:
            m = parse_message(data)
        except UsmError:
            c["bad_packets"] += 1
            return
        p = self._pending.get(m.msg_id)
        if p is None or p.v3 is None or p.dest != addr:
            c["bad_packets"] += 1
            return
        answer: Reply | Report | UsmError
        try:
            answer = self._usm.read(p.v3, data, m, p.dest)
        except Drop as e:
            c["bad_packets"] += 1
            log.debug("SNMPv3 answer from %s dropped: %s", _describe(p.target), e.reason)
            return
        except UsmError as e:
            answer = e
        except Exception as e:  # pragma: no cover - defensive: never fail the reactor
            c["bad_packets"] += 1
            log.debug("SNMPv3 answer from %s dropped: %s", _describe(p.target), type(e).__name__)
            return
        del self._pending[p.rid]
        p.call.cancel()
        c["responses"] += 1
        if type(answer) is Reply:
            c["varbinds"] += len(answer.varbinds)
            p.deferred.callback(answer)
        elif type(answer) is Report:
            p.deferred.callback(answer)
        else:
            p.deferred.errback(SnmpError(p.target, 0, reason=f"SNMPv3: {answer}"))

    async def _v3_send(self, target: SnmpTarget, family: int, dest: tuple[str, int],
                       rid: int, data: bytes, pv: PendingV3) -> Reply | Report:
        """Send one v3 message (timeouts and retries as v1/v2c); its answer."""

        def cancel(d: defer.Deferred) -> None:
            p = self._pending.pop(rid, None)
            if p is not None and p.call is not None and p.call.active():
                p.call.cancel()

        d: defer.Deferred = defer.Deferred(cancel)
        p = _Pending(rid, dest, family, data, target, d)
        p.v3 = pv
        self._pending[rid] = p
        self.counters["requests"] += 1
        self._send(p)
        return await d

    async def _v3_discover(self, target: SnmpTarget, family: int,
                           dest: tuple[str, int]) -> EngineState:
        """Engine discovery (RFC 3414 4), one at a time per agent."""
        waiters = self._discovering.get(dest)
        if waiters is not None:
            w = waiters

            def forget(d: defer.Deferred) -> None:
                if d in w:
                    w.remove(d)

            d: defer.Deferred = defer.Deferred(forget)
            w.append(d)
            return await d
        waiters = self._discovering[dest] = []
        try:
            rid = self._next_rid()
            data, pv = self._usm.discovery_request(rid, rid)
            answer = await self._v3_send(target, family, dest, rid, data, pv)
            if (type(answer) is not Report or answer.reason != "unknown_engine_id"
                    or not answer.engine_id):
                what = answer.name if type(answer) is Report else "no Report"
                raise SnmpError(target, 0, reason=f"SNMPv3: engine discovery failed ({what})")
            st = self._usm.learn(dest, answer.engine_id, answer.boots, answer.time)
        except BaseException as exc:
            if self._discovering.get(dest) is waiters:
                del self._discovering[dest]
            for w2 in waiters:
                w2.errback(exc)
            raise
        if self._discovering.get(dest) is waiters:
            del self._discovering[dest]
        for w2 in waiters:
            w2.callback(st)
        return st

    async def _v3_request(self, target: SnmpTarget, pdu: int, oids: list[str],
                          max_rep: int) -> tuple[int, int, list[Varbind]]:
        sec = target.v3
        if sec is None:
            raise ValueError(f"{_describe(target)}: v3 target without V3Security")
        if not self._running:
            raise RuntimeError("SnmpClient is not started")
        family, host = await self._resolve(target)
        if family not in self._ports:
            raise SnmpError(target, 0, reason="no socket for this address family")
        dest = (host, target.port)
        usm = self._usm
        await self._acquire(dest)
        try:
            restarts = 0
            rediscover = False
            while True:
                st = None if rediscover else usm.engines.get(dest)
                if st is None:
                    # Against a confirmed engine, discovery gives a candidate
                    # at most (see connector_snmp.usm_manager).
                    st = await self._v3_discover(target, family, dest)
                rediscover = False
                rid = self._next_rid()
                try:
                    data, pv = usm.request(sec, st, rid, rid, pdu, oids, max_rep)
                except UsmError as e:
                    raise SnmpError(target, 0, reason=f"SNMPv3: {e}") from None
                answer = await self._v3_send(target, family, dest, rid, data, pv)
                if type(answer) is Reply:
                    return answer.error_status, answer.error_index, answer.varbinds
                assert type(answer) is Report
                if restarts < 2:
                    if answer.reason == "unknown_engine_id":
                        # the agent's engine changed (a new device?), or the
                        # Report is forged: discover again, keeping a confirmed engine
                        usm.suspect(dest, st)
                        rediscover = True
                        restarts += 1
                        continue
                    if (answer.reason == "not_in_time_window" and answer.authenticated
                            and answer.engine_id == st.engine_id):
                        # time synchronisation (RFC 3414 4, second step)
                        usm.learn(dest, answer.engine_id, answer.boots, answer.time, synced=True)
                        restarts += 1
                        continue
                raise SnmpError(target, 0, reason=f"SNMPv3: {report_error(answer)}")
        finally:
            self._release(dest)

    # ---------------------------------------------------------- dispatching

    async def _request(self, target: SnmpTarget, pdu: int, oids: list[str],
                       max_rep: int = 0) -> tuple[int, int, list[Varbind]]:
        if target.version == "v3":
            return await self._v3_request(target, pdu, oids, max_rep)
        if target.version not in ("v1", "v2c"):
            raise ValueError(f"unknown SNMP version {target.version!r}")
        msg = await self._udp_request(target, pdu, oids, max_rep)
        return msg.error_status, msg.error_index, msg.varbinds  # type: ignore[return-value]

    # ------------------------------------------------------------------ GET

    async def get(self, target: SnmpTarget, oids: Sequence[str]) -> list[Varbind]:
        """GET *oids*; the result has one ``(oid, tag, value)`` per OID, in order.

        A missing object is reported in its varbind (``NoSuchObject`` /
        ``NoSuchInstance``; v1's ``noSuchName`` becomes ``NoSuchObject``).
        Raises :class:`SnmpTimeout` or :class:`SnmpError`.
        """
        oids = [_norm_oid(o) for o in oids]
        if len(oids) <= MAX_VARBINDS_PER_REQUEST:
            return await self._get_chunk(target, oids) if oids else []
        step = MAX_VARBINDS_PER_REQUEST
        ds = [defer.ensureDeferred(self._get_chunk(target, oids[i:i + step]))
              for i in range(0, len(oids), step)]
        results = await defer.DeferredList(ds, consumeErrors=True)
        out: list[Varbind] = []
        for ok, value in results:
            if not ok:
                value.raiseException()
            out.extend(value)
        return out

    async def _get_chunk(self, target: SnmpTarget, oids: list[str]) -> list[Varbind]:
        status, index, vbs = await self._request(target, _GET, oids)
        if status == 0:
            if len(vbs) != len(oids):
                raise SnmpError(target, 0, reason=f"{len(vbs)} varbinds in the response "
                                                  f"to a GET of {len(oids)}")
            return vbs
        if status == _TOO_BIG:
            self.counters["too_big"] += 1
            if len(oids) > 1:
                half = len(oids) // 2
                first = await self._get_chunk(target, oids[:half])
                return first + await self._get_chunk(target, oids[half:])
        elif status == _NO_SUCH_NAME and 1 <= index <= len(oids):
            rest = oids[:index - 1] + oids[index:]
            out = await self._get_chunk(target, rest) if rest else []
            out.insert(index - 1, (oids[index - 1], ber.NO_SUCH_OBJECT, None))
            return out
        oid = oids[index - 1] if 1 <= index <= len(oids) else None
        raise SnmpError(target, status, index, oid)

    # ----------------------------------------------------------------- walk

    async def walk(self, target: SnmpTarget,
                   columns: Sequence[str]) -> dict[str, list[tuple[str, str, object]]]:
        """Walk table *columns* together.

        Returns ``{column: [(index suffix, tag, value), ...]}`` in OID order,
        keyed by the column OID as given (without a leading dot).
        """
        cols = list(dict.fromkeys(_norm_oid(c) for c in columns))
        result: dict[str, list[tuple[str, str, object]]] = {c: [] for c in cols}
        prefixes = [c + "." for c in cols]
        next_oid = list(cols)
        last_key: list[tuple[int, ...] | None] = [None] * len(cols)
        active = list(range(len(cols)))
        bulk = target.version != "v1"
        reps = max(1, int(target.max_repetitions))
        # Size the first GETBULK by the rows this table had last time, so
        # that the agent does not send (and we do not decode) repetitions
        # past the end of a short table; later requests use max_repetitions.
        hint_key = (target.address, target.port, tuple(cols))
        hint = self._rows_hint.get(hint_key)
        group = MAX_VARBINDS_PER_REQUEST
        while active:
            req = active[:group]
            oids = [next_oid[i] for i in req]
            used, hint = _repetitions(reps, hint, min(len(result[cols[i]]) for i in req))
            status, index, vbs = await self._request(
                target, _BULK if bulk else _NEXT, oids, used)
            done: set[int] = set()
            if status:
                if status == _TOO_BIG:
                    self.counters["too_big"] += 1
                    if bulk and used > 1:
                        reps = max(1, used // 2)
                        continue
                    if len(req) > 1:
                        group = max(1, len(req) // 2)
                        continue
                elif status == _NO_SUCH_NAME and 1 <= index <= len(req):
                    # v1's end of the MIB view for that varbind
                    done.add(req[index - 1])
                    active = [i for i in active if i not in done]
                    continue
                oid = oids[index - 1] if 1 <= index <= len(oids) else None
                raise SnmpError(target, status, index, oid)
            if not vbs:  # nothing at all: an agent bug, never loop on it
                done.update(req)
            for j, ci in enumerate(req):
                if not self._take_rows(target, cols[ci], prefixes[ci], vbs[j::len(req)],
                                       result[cols[ci]], next_oid, last_key, ci):
                    done.add(ci)
            if done:
                active = [i for i in active if i not in done]
        if bulk:
            if len(self._rows_hint) >= _HINTS_MAX:
                self._rows_hint.clear()
            self._rows_hint[hint_key] = max(map(len, result.values()), default=0)
        return result

    def _take_rows(self, target: SnmpTarget, col: str, prefix: str,
                   vbs: Sequence[tuple[str, str, object]], out: list[tuple[str, str, object]],
                   next_oid: list[str], last_key: list[tuple[int, ...] | None], ci: int) -> bool:
        """Append one response's rows of column ``ci`` to ``out``; False when the column ended.

        Called once per column per response: the loop over its varbinds stays here.
        """
        plen = len(prefix)
        last = last_key[ci]
        kcache = _KEY_CACHE
        end_tag = ber.END_OF_MIB_VIEW
        more = True
        for oid, tag, value in vbs:
            if tag == end_tag or not oid.startswith(prefix):
                more = False
                break
            suffix = oid[plen:]
            key = kcache.get(suffix)
            if key is None:
                key = _suffix_key(suffix)
            if last is not None and key <= last:
                self.counters["non_increasing"] += 1
                log.warning("SNMP agent %s: OID %s does not increase; column %s "
                            "stopped", _describe(target), oid, col)
                more = False
                break
            last = key
            out.append((suffix, tag, value))
            next_oid[ci] = oid
        last_key[ci] = last
        return more
