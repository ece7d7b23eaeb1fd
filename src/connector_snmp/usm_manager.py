"""SNMPv3 for the poller (command generator side): USM (RFC 3414) with SHA-2
(RFC 7860) and AES (RFC 3826), over the USM building blocks
(:mod:`snmpwire.usm`: keys, message parsing, HMAC, ciphers).

What it does
    :class:`UsmManager` keeps, per agent (address, port), what the manager
    knows of the agent's engine (:class:`EngineState`: engine ID, boots,
    engine time and the local monotonic time it was learnt), builds the
    datagrams of a request (:meth:`UsmManager.discovery_request`,
    :meth:`UsmManager.request`) and reads the answers
    (:meth:`UsmManager.read`).  It does no I/O: the client
    (:class:`connector_snmp.client.SnmpClient`) sends, times out, retries and
    drives the state machine below.

Discovery and time synchronisation (RFC 3414 section 4)
    1. Unknown agent: a noAuthNoPriv, reportable GET with an empty engine ID
       and user name, no varbinds.  The agent answers a Report of
       usmStatsUnknownEngineIDs carrying its engine ID, boots and time.
    2. The request itself, authenticated with the keys localized for that
       engine ID and the boots/time of step 1, is the time synchronisation:
       an authenticated Response confirms the clock; an authenticated
       Report of usmStatsNotInTimeWindows carries the agent's boots/time,
       which replace ours, and the request is sent again.
    3. Later requests send boots and ``time + (now - learnt at)``.
       Authenticated responses move the estimate forward (RFC 3414 3.2.7 b).
    A Report of usmStatsUnknownEngineIDs to a normal request (the agent was
    replaced) starts discovery again.  The client bounds these restarts per
    request.

What an unauthenticated datagram can do
    The agent's own Reports of usmStatsUnknownEngineIDs,
    usmStatsUnknownUserNames, usmStatsWrongDigests,
    usmStatsUnsupportedSecLevels and usmStatsDecryptionErrors cannot be
    authenticated (the agent could not check our keys), so they are taken
    as they come, as RFC 3414 expects, and anyone able to send a datagram
    from the agent's address that carries the msgID of a request in flight
    can forge them:

    * such a Report ends that request with :class:`UsmError` (the client's
      ``SnmpError``), or makes it start discovery again (unknownEngineIDs);
    * a discovery answer (a noAuthNoPriv Report) gives the engine ID the
      next requests are authenticated for.

    What it cannot do is change an engine already confirmed by an
    authenticated message (``EngineState.synced``): an engine ID learnt
    from an unauthenticated answer while another one is confirmed is only
    a *candidate* (:meth:`UsmManager.learn`); requests may be sent to it,
    and it replaces the confirmed engine only when an answer authenticated
    with the keys localized for it arrives.  Until then, every request
    after the current one uses the confirmed engine and its clock.  A
    usmStatsNotInTimeWindows Report moves the clock only when it is
    authenticated.  With a noAuthNoPriv user nothing is ever authenticated
    and nothing is confirmed.

Errors
    :class:`UsmError` (``reason`` a short class, ``detail`` a sentence; never
    a key nor a password) for what ends a request: Reports such as
    usmStatsWrongDigests, usmStatsUnknownUserNames,
    usmStatsDecryptionErrors (authenticated or not, see above), a bad
    configuration, an undecodable but authenticated answer.  :class:`Drop`
    for a datagram that is neither a Report nor an authenticated answer to
    the request (wrong msgID, engine, user, security level, digest or
    time): the client counts it as a bad packet and keeps waiting.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence

from snmpwire import ber
from connector_snmp.model import V3Security, Varbind
from snmpwire.usm import (
    LocalizedKeys,
    NO_AUTH_NO_PRIV,
    TIME_WINDOW,
    USM_STATS,
    UsmConfigError,
    UsmError,
    UsmUser,
    V3Message,
    decode_scoped_pdu,
    decrypt,
    encode_v3,
    localized_keys,
    parse_message,
    verify,
)

__all__ = ["UsmManager", "EngineState", "Drop", "Reply", "Report",
           "PendingV3", "REPORT_REASONS", "is_v3"]

_INT31 = 2**31 - 1
_FLAG_AUTH = 1

#: Report varbind OID -> (reason class, the counter's name).
REPORT_REASONS: dict[str, tuple[str, str]] = {
    USM_STATS["unsupported_security_level"]: ("unsupported_security_level",
                                              "usmStatsUnsupportedSecLevels"),
    USM_STATS["not_in_time_window"]: ("not_in_time_window", "usmStatsNotInTimeWindows"),
    USM_STATS["unknown_user"]: ("unknown_user", "usmStatsUnknownUserNames"),
    USM_STATS["unknown_engine_id"]: ("unknown_engine_id", "usmStatsUnknownEngineIDs"),
    USM_STATS["wrong_digest"]: ("wrong_digest", "usmStatsWrongDigests"),
    USM_STATS["decryption_error"]: ("decryption_error", "usmStatsDecryptionErrors"),
    "1.3.6.1.6.3.11.2.1.1.0": ("unknown_security_model", "snmpUnknownSecurityModels"),
    "1.3.6.1.6.3.11.2.1.2.0": ("invalid_message", "snmpInvalidMsgs"),
    "1.3.6.1.6.3.11.2.1.3.0": ("unknown_pdu_handler", "snmpUnknownPDUHandlers"),
    "1.3.6.1.6.3.12.1.4.0": ("unavailable_context", "snmpUnavailableContexts"),
    "1.3.6.1.6.3.12.1.5.0": ("unknown_context", "snmpUnknownContexts"),
}



class Drop(Exception):
    """This datagram is not an acceptable answer: ignore it, keep waiting."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclasses.dataclass(slots=True)
class EngineState:
    """An agent's engine as the manager knows it."""

    engine_id: bytes
    boots: int
    time: int
    at: float  # local (monotonic) time when boots/time were learnt
    synced: bool = False  # confirmed by an authenticated message

    def now(self, clock_now: float) -> int:
        return min(max(self.time + int(clock_now - self.at), 0), _INT31)


@dataclasses.dataclass(slots=True)
class Reply:
    """A verified Response PDU."""

    error_status: int
    error_index: int
    varbinds: list[Varbind]


@dataclasses.dataclass(slots=True)
class Report:
    """A Report PDU: *reason* from its first varbind, the agent's engine
    parameters, and whether it was authenticated with our keys."""

    reason: str
    name: str
    engine_id: bytes
    boots: int
    time: int
    authenticated: bool


class PendingV3:
    """What :meth:`UsmManager.read` needs to check an answer to one message."""

    __slots__ = ("msg_id", "request_id", "user", "level", "engine_id", "keys", "discovery")

    def __init__(self, msg_id: int, request_id: int, user: bytes, level: int,
                 engine_id: bytes, keys: LocalizedKeys | None, discovery: bool) -> None:
        self.msg_id = msg_id
        self.request_id = request_id
        self.user = user
        self.level = level
        self.engine_id = engine_id
        self.keys = keys
        self.discovery = discovery


def is_v3(data: bytes) -> bool:
    """Does this datagram claim to be SNMPv3 (msgVersion 3)?  Cheap."""
    try:
        ln = data[1]
        o = 2 if ln < 0x80 else 2 + (ln & 0x7F)
        return data[0] == 0x30 and data[o:o + 3] == b"\x02\x01\x03"
    except IndexError:
        return False


class UsmManager:
    """Per-agent engine state, keys per (credentials, engine ID), encoding
    and decoding of v3 messages (see the module doc)."""

    def __init__(self, aes_key_extension: str = "blumenthal",
                 clock: Callable[[], float] = time.monotonic,
                 max_agents: int = 200_000) -> None:
        if aes_key_extension not in ("blumenthal", "reeder"):
            raise ValueError("aes_key_extension must be 'blumenthal' or 'reeder'")
        self.aes_key_extension = aes_key_extension
        self.clock = clock
        self.max_agents = max_agents
        self.engines: dict[tuple[str, int], EngineState] = {}
        #: Engines learnt without authentication while another one is confirmed.
        self.candidates: dict[tuple[str, int], EngineState] = {}
        self._users: dict[V3Security, UsmUser] = {}
        self._keys: dict[tuple[V3Security, bytes], LocalizedKeys | None] = {}
        self._ku: dict[tuple[str, str], bytes] = {}

    def __repr__(self) -> str:
        return f"UsmManager({len(self.engines)} engines, {len(self._users)} users)"

    # ------------------------------------------------------------ keys

    def user(self, sec: V3Security) -> UsmUser:
        u = self._users.get(sec)
        if u is None:
            try:
                u = UsmUser(sec.user, sec.auth_protocol, sec.auth_key or None,
                            sec.priv_protocol, sec.priv_key or None,
                            key_extension=self.aes_key_extension)
            except UsmConfigError as e:
                raise UsmError("bad_credentials", str(e)) from None
            if len(self._users) >= 100_000:
                self._users.clear()
            self._users[sec] = u
        return u

    def keys(self, sec: V3Security, engine_id: bytes) -> LocalizedKeys | None:
        """*sec*'s keys localized for *engine_id* (None for noAuthNoPriv), cached."""
        k = (sec, engine_id)
        try:
            return self._keys[k]
        except KeyError:
            pass
        u = self.user(sec)
        keys = localized_keys(u, engine_id, self._ku) if u.level else None
        if len(self._keys) >= 200_000:
            self._keys.clear()
        self._keys[k] = keys
        return keys

    # ---------------------------------------------------------- engines

    def engine(self, agent: tuple[str, int]) -> EngineState | None:
        """The engine requests to ``agent`` use (confirmed or not), or None."""
        return self.engines.get(agent)

    def forget(self, agent: tuple[str, int]) -> None:
        """Forget ``agent``'s engine and any candidate."""
        self.engines.pop(agent, None)
        self.candidates.pop(agent, None)

    def suspect(self, agent: tuple[str, int], st: EngineState) -> None:
        """An unauthenticated Report says ``st`` is not the agent's engine.

        A confirmed engine is kept (discovery may find a candidate, see the
        module doc); an unconfirmed one, or a candidate, is forgotten.
        """
        if self.engines.get(agent) is st and not st.synced:
            del self.engines[agent]
        if self.candidates.get(agent) is st:
            del self.candidates[agent]

    def learn(self, agent: tuple[str, int], engine_id: bytes, boots: int, etime: int,
              synced: bool = False) -> EngineState:
        """Record what the agent said of its engine; the engine to send requests to.

        ``synced``: said in an authenticated message, it replaces what was
        known.  Otherwise it replaces an unconfirmed engine only; against a
        confirmed one, the same engine ID gives the confirmed engine as it
        is, another one a candidate (not used by later requests until an
        authenticated answer confirms it).
        """
        if not engine_id:
            raise UsmError("discovery_failed", "the agent reported an empty engine ID")
        known = self.engines.get(agent)
        if not synced and known is not None and known.synced:
            if known.engine_id == engine_id:
                self.candidates.pop(agent, None)
                return known
            if len(self.candidates) >= self.max_agents and agent not in self.candidates:
                self.candidates.clear()
            st = self.candidates[agent] = EngineState(engine_id, boots, etime, self.clock())
            return st
        if len(self.engines) >= self.max_agents and known is None:
            self.engines.clear()
        self.candidates.pop(agent, None)
        st = self.engines[agent] = EngineState(engine_id, boots, etime, self.clock(), synced)
        return st

    def _confirmed(self, agent: tuple[str, int], m: V3Message) -> EngineState | None:
        """The confirmed engine an authenticated ``m`` is checked against.

        None when there is none, or when ``m`` confirms the candidate: that
        one is adopted, with ``m``'s clock.
        """
        st = self.engines.get(agent)
        if st is not None and st.engine_id == m.engine_id:
            return st
        cand = self.candidates.get(agent)
        if cand is None or cand.engine_id != m.engine_id:
            return None
        # Authenticated with keys localized for the candidate: the agent's
        # engine is that one, and its clock is the one this message gives.
        del self.candidates[agent]
        cand.boots, cand.time, cand.at, cand.synced = m.boots, m.time, self.clock(), True
        self.engines[agent] = cand
        return None

    def _seen(self, st: EngineState, m: V3Message) -> None:
        """An authenticated message from the agent: RFC 3414 3.2.7 b."""
        now = self.clock()
        if m.boots > st.boots or (m.boots == st.boots and m.time > st.now(now)):
            st.boots, st.time, st.at = m.boots, m.time, now
        st.synced = True

    # --------------------------------------------------------- encoding

    def discovery_request(self, msg_id: int, request_id: int) -> tuple[bytes, PendingV3]:
        """The noAuthNoPriv reportable GET with an empty engine ID (RFC 3414 4)."""
        data = encode_v3(None, level=NO_AUTH_NO_PRIV, engine_id=b"", boots=0, time=0, user=b"",
                         msg_id=msg_id, pdu_type=ber.GET_REQUEST, request_id=request_id,
                         varbinds=b"\x30\x00", reportable=True)
        return data, PendingV3(msg_id, request_id, b"", NO_AUTH_NO_PRIV, b"", None, True)

    def request(self, sec: V3Security, st: EngineState, msg_id: int, request_id: int,
                pdu_type: int, oids: Sequence[str], max_repetitions: int = 0
                ) -> tuple[bytes, PendingV3]:
        """GET / GETNEXT / GETBULK (non-repeaters 0) of *oids* to the engine *st*."""
        user = self.user(sec)
        keys = self.keys(sec, st.engine_id)
        level = user.level
        if level:
            boots, etime = st.boots, st.now(self.clock())
        else:
            boots, etime = 0, 0
        name = sec.user.encode()
        if pdu_type == ber.GETBULK_REQUEST:
            es, ei = 0, max_repetitions
        else:
            es, ei = 0, 0
        try:
            data = encode_v3(keys, level=level, engine_id=st.engine_id, boots=boots, time=etime,
                             user=name, msg_id=msg_id, pdu_type=pdu_type, request_id=request_id,
                             varbinds=ber._null_list(oids), error_status=es, error_index=ei,
                             reportable=True, context_engine_id=st.engine_id,
                             context_name=sec.context_name.encode())
        except (ValueError, TypeError) as e:  # an OID we cannot encode, ...
            raise UsmError("bad_request", str(e)) from None
        return data, PendingV3(msg_id, request_id, name, level, st.engine_id, keys, False)

    # --------------------------------------------------------- decoding

    def read(self, p: PendingV3, data: bytes, m: V3Message | None = None,
             agent: tuple[str, int] | None = None) -> Reply | Report:
        """Check and decode an answer to *p*.

        Returns a :class:`Reply` (a Response) or a :class:`Report`; raises
        :class:`Drop` (not an answer to *p*: ignore it) or :class:`UsmError`
        (an authenticated answer we cannot use).  With *agent*, an
        authenticated answer updates that agent's engine time."""
        if m is None:
            try:
                m = parse_message(data)
            except UsmError as e:
                raise Drop(e.reason) from None
        if m.msg_id != p.msg_id:
            raise Drop("wrong_msg_id")
        authenticated = False
        if m.flags & _FLAG_AUTH:
            keys = p.keys
            if keys is None or not keys.mac_len or m.engine_id != p.engine_id or m.user != p.user:
                raise Drop("unexpected_authentication")
            try:
                verify(keys, data, m)
            except UsmError:
                raise Drop("wrong_digest") from None
            authenticated = True
        if m.encrypted:
            # parse_message refuses privacy without authentication
            assert p.keys is not None
            try:
                plain = decrypt(p.keys, data, m)
                sp = decode_scoped_pdu(plain, 0, len(plain), 7 if p.keys.priv_protocol == "DES" else 0)
            except UsmError:
                raise UsmError("decryption_error", "cannot decrypt the response") from None
        else:
            try:
                sp = decode_scoped_pdu(data, m.data_start, m.data_end)
            except UsmError as e:
                if authenticated:
                    raise UsmError("malformed", e.detail) from None
                raise Drop("malformed") from None
        if sp.pdu_type == ber.REPORT:
            oid = sp.varbinds[0][0] if sp.varbinds else ""
            reason, name = REPORT_REASONS.get(oid, ("report", f"Report {oid or 'without varbind'}"))
            if authenticated and agent is not None:
                st = self._confirmed(agent, m)
                if st is not None and reason != "not_in_time_window":
                    self._seen(st, m)
            return Report(reason, name, m.engine_id, m.boots, m.time, authenticated)
        if sp.pdu_type != ber.RESPONSE or p.discovery:
            raise Drop("not_a_response")
        if m.level != p.level or m.user != p.user or m.engine_id != p.engine_id:
            raise Drop("wrong_security_parameters")
        if sp.request_id != p.request_id:
            raise Drop("wrong_request_id")
        if authenticated and agent is not None:
            st = self._confirmed(agent, m)
            if st is not None:
                now = self.clock()
                if m.boots < st.boots or (m.boots == st.boots and m.time < st.now(now) - TIME_WINDOW):
                    raise Drop("not_in_time_window")  # a replayed old answer
                self._seen(st, m)
        return Reply(sp.error_status, sp.error_index, sp.varbinds)


def report_error(report: Report) -> UsmError:
    """The error ending a request refused by a Report."""
    return UsmError(report.reason, f"the agent answered a Report ({report.name})")

