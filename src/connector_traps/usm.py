"""SNMPv3 for the trap receiver: its user table and the receiving side of
message processing (RFC 3412), on the USM building blocks of :mod:`snmpwire.usm`.

What it does
    :class:`V3Receiver` turns one received UDP datagram into a
    :class:`V3Result`: the :class:`~connector_traps.model.Trap` it carries,
    the bytes to send back (a Report or the Response to an InformRequest) and
    the reason class of a refusal.  It never raises on input: anything
    malformed is refused as ``malformed`` and counted.

Who is authoritative (RFC 3412 section 6.4)
    * SNMPv2-Trap: the *sender*.  Its engine ID is in the message, and the
      user table is keyed by (engine ID, user name), so many senders may use
      one user name with different passwords.  An unknown engine or user is
      counted (``unknown_engine_id`` / ``unknown_user``); no Report is sent
      for a trap (it is not reportable).
    * InformRequest: *us*.  The sender first discovers our engine ID: a
      noAuthNoPriv reportable request with an empty engine ID is answered by
      a Report of usmStatsUnknownEngineIDs carrying our engine ID, boots and
      time (counted as ``discovery``).  The inform itself is checked against
      our engine ID, the time window (+-150 s, RFC 3414 3.2.7: outside it a
      Report of usmStatsNotInTimeWindows, authenticated, lets the sender
      resynchronise) and the user's keys localized with OUR engine ID; the
      answer is a Response PDU (same request-id and varbinds) at the same
      security level.

Security level
    A message must use exactly the security level its user is configured
    with: a lower level (e.g. a noAuthNoPriv trap under an authPriv user's
    name) is refused as ``unsupported_security_level``, not only a higher one
    (RFC 3414 would accept a lower one and leave it to access control, which
    a trap receiver does not have).

Timeliness and replays (RFC 3414 3.2 step 7)
    Only authenticated messages are checked (a noAuthNoPriv one can be forged
    at will anyway).
    * Traps (the sender is authoritative): per sender engine ID, the latest
      boots and time seen and when (``_remote``), as step 7 b says: a message
      with higher boots, or the same boots and a time later than the latest,
      updates them; one with lower boots, or the same boots and a time more
      than ``trap_time_window`` (150 s, ``[traps] v3_time_window``) behind our
      estimate of the sender's clock, is refused as ``not_in_time_window``.
      net-snmp's ``snmptrap`` sends engineBoots 1 and, as engineTime, the
      host's uptime in *hundredths* of a second: its clock runs 100 times too
      fast, which passes the check; but it goes back when that host reboots,
      and its traps are then refused until our own restart (such senders
      should give ``-Z boots,time``, e.g. ``-Z 1,$(date +%s)``).
      ``trap_time_window=None`` switches the check off (the service logs it).
    * Informs (we are authoritative): the boots must be ours and the time
      within +-``time_window`` (150 s) of ours.  Our boots are persisted and
      grow at each start (:mod:`connector_traps.boots`, :meth:`V3Receiver.start`),
      so that an inform captured in an earlier run is refused.
    * Replays within the window: every authenticated message that passed is
      remembered as a digest of (engine ID, msgID, msgAuthenticationParameters
      -- the HMAC of the whole message) for as long as a copy could pass the
      time check (:class:`ReplayMemory`: the trap window, or twice the inform
      window, whichever is longer), at most ``replay_entries`` (100,000, about
      18 MB) of them, the oldest forgotten first.  A copy is refused as
      ``replayed``; a copy of an inform still gets its Response (an agent that
      lost ours may send the same bytes again) but is not handed on again.
    The state (our boots and start, the senders' clocks, the replay memory)
    survives a reload of the users: :meth:`V3Receiver.adopt`.

Keys
    A password is turned into a key (RFC 3414 A.2: 1 MiB of the repeated
    password hashed with the auth protocol's hash; the same for SHA-2,
    RFC 7860) once per (hash, password), and localized (H(Ku | engineID |
    Ku)) once per (user, engine ID); :class:`UserTable` caches both.  For
    AES-192/256 when the hash is too short, the localized key is extended
    the "Blumenthal" way (``Kul || H(Kul) || H(Kul || H(Kul)) ...``, what
    net-snmp's ``AES-192``/``AES-256`` do -- checked against snmptrap) or,
    per user (``key_extension="reeder"``, net-snmp's ``AES-192-C``/``AES-256-C``,
    Cisco), the "Reeder" way (password-to-key of Kul, localized, appended).

Counters (``V3Receiver.counters``, reason -> count)
    ``accepted``, ``responses``, ``reports``, ``discovery``,
    ``unknown_engine_id``, ``unknown_user``, ``wrong_digest``,
    ``decryption_error``, ``not_in_time_window``, ``replayed``,
    ``unsupported_security_level``, ``unsupported_security_model``,
    ``unsupported_version``, ``malformed``, ``wrong_pdu``, ``no_trap_oid``.

Secrets (passwords, keys) never appear in a repr, a log or an error.
:func:`loose_user_files` names the users file when a key is written in it
and someone other than the daemon may read it, and every ``file:`` key that
its group or others may read (the service logs them at start and reload).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping

from connector.settings import (
    InvalidValue,
    ParseContext,
    Secret,
    SecretText,
    Str,
    secret_file_problem,
    secret_holder_problem,
)
from connector_traps.convert import ConvertError, normalize_address, split_v2_varbinds
from connector_traps.model import Trap
from snmpwire import ber
from snmpwire.ber import BERError
from snmpwire.usm import (
    AUTH_NO_PRIV,
    INT31_MAX,
    NO_AUTH_NO_PRIV,
    USM_STATS,
    ScopedPdu,
    decode_scoped_pdu,
    encode_v3,
    TIME_WINDOW,
    LocalizedKeys,
    UsmConfigError,
    UsmError,
    UsmUser,
    V3Message,
    localized_keys,
    parse_message,
    scoped_pdu,
    verify,
)

__all__ = ["REASONS", "REPLAY_ENTRIES", "ReplayMemory", "UserTable", "V3Result", "V3Receiver",
           "load_users", "loose_user_files"]

#: Every counter of :attr:`V3Receiver.counters` (all present from the start).
REASONS = (
    "accepted", "responses", "reports", "discovery",
    "unknown_engine_id", "unknown_user", "wrong_digest", "decryption_error",
    "not_in_time_window", "replayed", "unsupported_security_level", "unsupported_security_model",
    "unsupported_version", "malformed", "wrong_pdu", "no_trap_oid",
)


# --------------------------------------------------------------------------
# Users


class _Entry:
    __slots__ = ("user", "name", "keys")

    def __init__(self, user: UsmUser) -> None:
        self.user = user
        self.name = user.name.encode()
        self.keys: dict[bytes, LocalizedKeys] = {}


class UserTable:
    """USM users: TRAP senders by (engine ID, user name), INFORM senders by
    user name.  Localized keys are computed on first use and cached."""

    def __init__(self, users: Iterable[UsmUser] = ()) -> None:
        self._trap: dict[tuple[bytes, bytes], _Entry] = {}
        self._inform: dict[bytes, _Entry] = {}
        self._engines: dict[bytes, int] = {}
        self._ku: dict[tuple[str, str], bytes] = {}
        for u in users:
            self.add(u)

    def add(self, user: UsmUser) -> None:
        e = _Entry(user)
        if user.engine_id is not None:
            k = (user.engine_id, e.name)
            if k in self._trap:
                raise UsmConfigError(f"user {user.name} of engine {user.engine_id.hex()} defined twice")
            self._trap[k] = e
            self._engines[user.engine_id] = self._engines.get(user.engine_id, 0) + 1
        else:
            if e.name in self._inform:
                raise UsmConfigError(f"inform user {user.name} defined twice")
            self._inform[e.name] = e

    def __len__(self) -> int:
        return len(self._trap) + len(self._inform)

    def __repr__(self) -> str:
        return f"UserTable({len(self._trap)} trap users, {len(self._engines)} engines, {len(self._inform)} inform users)"

    def users(self) -> list[UsmUser]:
        return [e.user for e in self._trap.values()] + [e.user for e in self._inform.values()]

    def knows_engine(self, engine_id: bytes) -> bool:
        return engine_id in self._engines

    def trap_user(self, engine_id: bytes, name: bytes) -> UsmUser | None:
        e = self._trap.get((engine_id, name))
        return e.user if e else None

    def inform_user(self, name: bytes) -> UsmUser | None:
        e = self._inform.get(name)
        return e.user if e else None

    def _keys(self, e: _Entry, engine_id: bytes) -> LocalizedKeys:
        k = e.keys.get(engine_id)
        if k is None:
            k = e.keys[engine_id] = localized_keys(e.user, engine_id, self._ku)
        return k

    def trap_keys(self, engine_id: bytes, name: bytes) -> LocalizedKeys | None:
        """Keys of the trap user (engine_id, name), localized with engine_id."""
        e = self._trap.get((engine_id, name))
        return None if e is None else self._keys(e, engine_id)

    def inform_keys(self, name: bytes, our_engine_id: bytes) -> LocalizedKeys | None:
        """Keys of the inform user *name* localized with our engine ID (a trap
        user defined with our own engine ID also qualifies)."""
        e = self._trap.get((our_engine_id, name)) or self._inform.get(name)
        return None if e is None else self._keys(e, our_engine_id)

    def warm(self, our_engine_id: bytes | None = None) -> None:
        """Derive every key now (start-up) instead of at each user's first message."""
        for (eid, _), e in self._trap.items():
            self._keys(e, eid)
        if our_engine_id is not None:
            for e in self._inform.values():
                self._keys(e, our_engine_id)


def _parse_hex_engine(raw: object, where: str) -> bytes:
    text = str(raw).strip().lower()
    if text.startswith("0x"):
        text = text[2:]
    text = text.replace(":", "").replace(" ", "")
    try:
        eid = bytes.fromhex(text)
    except ValueError:
        raise UsmConfigError(f"{where}: engine_id is not hexadecimal") from None
    if not 5 <= len(eid) <= 32:
        raise UsmConfigError(f"{where}: engine_id must be 5 to 32 octets, got {len(eid)}")
    return eid


def load_users(path: str | os.PathLike[str], *, environ: Mapping[str, str] | None = None) -> UserTable:
    """A :class:`UserTable` from a YAML list of ``{user, engine_id (hex,
    optional: inform-only user), auth_protocol, auth_key, priv_protocol,
    priv_key, key_extension (optional)}``; keys may be ``env:NAME`` or
    ``file:/path``.  Raises :class:`UsmConfigError` (never showing a secret)."""
    from centaure_shared.yamlfile import YamlError, load_yaml_file

    shown = os.fspath(path)
    try:
        doc = load_yaml_file(shown)
    except YamlError as e:
        raise UsmConfigError(str(e)) from None
    if isinstance(doc, dict) and set(doc) == {"users"}:
        doc = doc["users"]
    if doc is None:
        doc = []
    if not isinstance(doc, list):
        raise UsmConfigError(f"{shown}: expected a list of users")
    ctx = ParseContext(os.environ if environ is None else environ)
    allowed = {"user", "engine_id", "auth_protocol", "auth_key", "priv_protocol", "priv_key", "key_extension"}
    table = UserTable()
    for i, item in enumerate(doc, 1):
        where = f"{shown}: user #{i}"
        if not isinstance(item, dict):
            raise UsmConfigError(f"{where}: expected a mapping")
        extra = set(item) - allowed
        if extra:
            raise UsmConfigError(f"{where}: unknown keys {', '.join(sorted(map(str, extra)))}")
        name = item.get("user")
        if not isinstance(name, (str, int)) or str(name) == "":
            raise UsmConfigError(f"{where}: 'user' is required")
        where = f"{shown}: user {name}"
        keys: dict[str, Secret | None] = {}
        for k in ("auth_key", "priv_key"):
            raw = item.get(k)
            if raw is None:
                keys[k] = None
                continue
            try:
                keys[k] = SecretText(Str()).parse(str(raw), ctx)
            except InvalidValue as e:
                raise UsmConfigError(f"{where}: {k}: {e.detail or e.allowed}") from None
        eid = item.get("engine_id")
        try:
            table.add(UsmUser(
                str(name), item.get("auth_protocol") or "none", keys["auth_key"],
                item.get("priv_protocol") or "none", keys["priv_key"],
                None if eid in (None, "") else _parse_hex_engine(eid, where),
                item.get("key_extension") or "blumenthal",
            ))
        except UsmConfigError as e:
            raise UsmConfigError(f"{shown}: {e}") from None
    return table


def loose_user_files(path: str | os.PathLike[str], users: UserTable) -> list[str]:
    """One line per file of the users file ``path`` (loaded as ``users``) that
    someone other than the daemon may read; never a secret.

    The users file itself when a key is written in it
    (:func:`connector.settings.secret_holder_problem`: others, or a group
    other than the daemon's), then each ``file:`` key its group or others may
    read (:func:`connector.settings.secret_file_problem`), each file once.
    """
    shown = os.fspath(path)
    lines: list[str] = []
    keys = [(u.name, k, v) for u in users.users() for k in ("auth_key", "priv_key")
            if isinstance(v := getattr(u, k), Secret)]
    literal = sorted({k for _, k, v in keys if v.source == "literal"})
    if literal:
        problem = secret_holder_problem(shown, "SNMPv3 " + ", ".join(literal))
        if problem is not None:
            lines.append(problem)
    seen: set[str] = set()
    for name, k, v in keys:
        if v.source in seen:
            continue
        seen.add(v.source)
        problem = secret_file_problem(v.source)
        if problem is not None:
            lines.append(f"{shown}: user {name} {k}: {problem}")
    return lines


# --------------------------------------------------------------------------
# Replays

#: Default bound of :class:`ReplayMemory` (about 18 MB when full).
REPLAY_ENTRIES = 100_000


class ReplayMemory:
    """Digests of recently accepted messages, to refuse a copy while it could
    still pass the time check.

    Each digest is kept ``seconds`` after it was first seen; at most
    ``max_entries`` are kept, the oldest forgotten first when the memory is
    full (counted in :attr:`evicted`: past ``max_entries / seconds``
    messages/s, about 333/s for the receiver's default 300 s, a copy may pass
    the time window unnoticed).  ``max_entries=0`` remembers nothing.
    """

    def __init__(self, seconds: float, max_entries: int = REPLAY_ENTRIES) -> None:
        if not seconds > 0:
            raise ValueError("the replay memory's duration must be positive")
        if max_entries < 0:
            raise ValueError("the replay memory's bound must be 0 or more")
        self.seconds = float(seconds)
        self.max_entries = max_entries
        self.evicted = 0
        # digest -> expiry, in insertion order (OrderedDict: popping the oldest is O(1)).
        self._expiry: OrderedDict[bytes, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._expiry)

    def __repr__(self) -> str:
        return f"ReplayMemory({len(self)}/{self.max_entries} for {self.seconds:g} s)"

    @staticmethod
    def key(m: V3Message) -> bytes:
        """The digest remembered for *m*: engine ID, msgID and its HMAC."""
        eid = m.engine_id
        return hashlib.blake2b(bytes((len(eid),)) + eid + m.msg_id.to_bytes(4, "big")
                               + m.auth_params, digest_size=16).digest()

    def seen(self, key: bytes, now: float) -> bool:
        """True if *key* was remembered less than ``seconds`` ago; otherwise remember it now."""
        if not self.max_entries:
            return False
        expiry = self._expiry
        until = expiry.get(key)
        if until is not None and until >= now:
            return True
        while expiry:
            oldest, t = next(iter(expiry.items()))
            if t >= now:
                break
            del expiry[oldest]
        expiry.pop(key, None)
        while len(expiry) >= self.max_entries:
            expiry.popitem(last=False)
            self.evicted += 1
        expiry[key] = now + self.seconds
        return False


# --------------------------------------------------------------------------
# The receiver


@dataclasses.dataclass(slots=True)
class V3Result:
    """What one datagram gave: a trap, bytes to send back, a refusal reason."""

    trap: Trap | None = None
    response: bytes | None = None
    error: str | None = None


class V3Receiver:
    """SNMPv3 message processing for a trap/inform receiver (see the module doc)."""

    def __init__(self, users: UserTable, engine_id: bytes, clock: Callable[[], float] = time.time,
                 boots: int = 1, *, time_window: int = TIME_WINDOW,
                 trap_time_window: float | None = TIME_WINDOW,
                 replay_entries: int = REPLAY_ENTRIES) -> None:
        engine_id = bytes(engine_id)
        if not 5 <= len(engine_id) <= 32:
            raise ValueError("engine ID must be 5 to 32 octets")
        if not 0 <= boots <= INT31_MAX:
            raise ValueError("boots out of range")
        if trap_time_window is not None and not trap_time_window > 0:
            raise ValueError("the trap time window must be positive (None: no time window)")
        self.users = users
        self.engine_id = engine_id
        self.clock = clock
        self.boots = boots
        self.time_window = time_window
        self.trap_time_window = trap_time_window
        self._start = clock()
        self.counters: dict[str, int] = dict.fromkeys(REASONS, 0)
        self._stats: dict[str, int] = dict.fromkeys(USM_STATS, 0)  # RFC 3414 usmStats
        # Sender engine -> (boots, latest time received, our clock then): step 7 b's notion.
        self._remote: dict[bytes, tuple[int, int, float]] = {}
        # An inform passes while its time is within +-time_window of ours: 2 windows.
        self.replay = ReplayMemory(max(2 * time_window, trap_time_window or 0), replay_entries)

    def start(self, boots: int, started: float | None = None) -> None:
        """Our engine (re)starts: *boots* (persisted, grown at each start) and
        snmpEngineTime counted from *started* (default: now)."""
        if not 0 <= boots <= INT31_MAX:
            raise ValueError("boots out of range")
        self.boots = boots
        self._start = self.clock() if started is None else started

    def adopt(self, previous: "V3Receiver") -> None:
        """Take over *previous*'s state (a reload of the users): our boots and
        start, the senders' clocks and the replay memory."""
        if previous.engine_id == self.engine_id:
            self.boots = previous.boots
            self._start = previous._start
        self._remote = previous._remote
        if previous.replay.seconds == self.replay.seconds:
            self.replay = previous.replay

    def __repr__(self) -> str:
        return f"V3Receiver(engine={self.engine_id.hex()}, {self.users!r})"

    def engine_time(self) -> int:
        """snmpEngineTime: seconds since our start (within these boots)."""
        return min(max(int(self.clock() - self._start), 0), INT31_MAX)

    # -- entry point

    def handle(self, data: bytes, source: tuple[str, int]) -> V3Result:
        """Process one datagram; never raises on input."""
        try:
            return self._handle(data, source)
        except UsmError as e:
            return self._refuse(e.reason)
        except (BERError, IndexError, TypeError, OverflowError, ValueError):  # pragma: no cover
            return self._refuse("malformed")

    def _refuse(self, reason: str, m: V3Message | None = None, data: bytes = b"", *,
                report: str | None = None, keys: LocalizedKeys | None = None,
                level: int = NO_AUTH_NO_PRIV) -> V3Result:
        """Count a refusal; with *report* (a usmStats name) answer a Report PDU."""
        self.counters[reason] = self.counters.get(reason, 0) + 1
        stat = report or reason
        if stat in self._stats:
            self._stats[stat] += 1
        response = None
        if report is not None and m is not None:
            response = self._report(m, data, report, keys=keys, level=level)
            if response is not None:
                self.counters["reports"] += 1
        return V3Result(None, response, reason)

    def _handle(self, data: bytes, source: tuple[str, int]) -> V3Result:
        if type(data) is not bytes:
            data = bytes(data)
        m = parse_message(data)
        eid = m.engine_id
        if eid == self.engine_id:
            return self._authoritative(data, m, source)
        users = self.users
        keys = users.trap_keys(eid, m.user) if eid else None
        if keys is None:
            if m.reportable:
                # A request meant for us with an empty (discovery) or another engine ID.
                reason = "discovery" if not eid and m.level == 0 else "unknown_engine_id"
                return self._refuse(reason, m, data, report="unknown_engine_id")
            if eid and users.knows_engine(eid):
                return self._refuse("unknown_user")
            return self._refuse("unknown_engine_id")
        # A trap: the sender is authoritative.
        if m.level != keys.level:
            return self._refuse("unsupported_security_level")
        if keys.level:
            verify(keys, data, m)
            now = self.clock()
            if self.trap_time_window is not None:
                self._check_remote_time(m, now)
            if self.replay.seen(ReplayMemory.key(m), now):
                return self._refuse("replayed")
        scoped = scoped_pdu(keys, data, m)
        if scoped.pdu_type != ber.TRAP_V2:
            return self._refuse("wrong_pdu")
        trap = self._trap(scoped, source, m, "trap")
        self.counters["accepted"] += 1
        return V3Result(trap, None, None)

    def _check_remote_time(self, m: V3Message, now: float) -> None:
        """RFC 3414 3.2.7 b, for traps (we are not authoritative)."""
        if m.boots == INT31_MAX:
            raise UsmError("not_in_time_window", "engine boots at its maximum")
        seen = self._remote.get(m.engine_id)
        if seen is None or m.boots > seen[0] or (m.boots == seen[0] and m.time > seen[1]):
            # Later than anything this engine sent: its clock as we know it moves on.
            self._remote[m.engine_id] = (m.boots, m.time, now)
            return
        boots, latest, at = seen
        if m.boots < boots or m.time < latest + (now - at) - self.trap_time_window:
            raise UsmError("not_in_time_window", "older than the latest message of this engine")

    def _authoritative(self, data: bytes, m: V3Message, source: tuple[str, int]) -> V3Result:
        """A message to our engine: an inform (or a trap sent with our engine ID)."""
        keys = self.users.inform_keys(m.user, self.engine_id)
        rep = m.reportable
        if keys is None:
            return self._refuse("unknown_user", m, data, report="unknown_user" if rep else None)
        if m.level != keys.level:
            return self._refuse("unsupported_security_level", m, data,
                                report="unsupported_security_level" if rep else None)
        if keys.level:
            try:
                verify(keys, data, m)
            except UsmError:
                return self._refuse("wrong_digest", m, data, report="wrong_digest" if rep else None)
            etime = self.engine_time()
            if (m.boots != self.boots or self.boots == INT31_MAX
                    or abs(m.time - etime) > self.time_window):
                # An authenticated Report, so that the sender may resynchronise.
                return self._refuse("not_in_time_window", m, data,
                                    report="not_in_time_window" if rep else None,
                                    keys=keys, level=AUTH_NO_PRIV)
        replayed = bool(keys.level) and self.replay.seen(ReplayMemory.key(m), self.clock())
        try:
            scoped = scoped_pdu(keys, data, m)
        except UsmError as e:
            if e.reason == "decryption_error":
                return self._refuse("decryption_error", m, data,
                                    report="decryption_error" if rep else None)
            raise
        if scoped.pdu_type == ber.TRAP_V2:
            kind = "trap"
        elif scoped.pdu_type == ber.INFORM_REQUEST:
            kind = "inform"
        else:
            return self._refuse("wrong_pdu")
        if replayed and kind == "trap":
            return self._refuse("replayed")
        trap = None if replayed else self._trap(scoped, source, m, kind)
        response = None
        if kind == "inform":
            response = encode_v3(
                keys, level=m.level, engine_id=self.engine_id, boots=self.boots,
                time=self.engine_time(), user=m.user, msg_id=m.msg_id, pdu_type=ber.RESPONSE,
                request_id=scoped.request_id, varbinds=scoped.varbinds_tlv,
                context_engine_id=scoped.context_engine_id, context_name=scoped.context_name)
            self.counters["responses"] += 1
        if replayed:
            # Answered again (the sender may have lost our Response), never handed on twice.
            self._refuse("replayed")
            return V3Result(None, response, "replayed")
        self.counters["accepted"] += 1
        return V3Result(trap, response, None)

    def _report(self, m: V3Message, data: bytes, stat: str, *, keys: LocalizedKeys | None = None,
                level: int = NO_AUTH_NO_PRIV) -> bytes | None:
        """A Report PDU of usmStats *stat* for the request *m* (RFC 3412 7.1 3)."""
        request_id = 0
        context_name = b""
        if not m.encrypted:
            try:
                sp = decode_scoped_pdu(data, m.data_start, m.data_end)
                request_id = sp.request_id
                context_name = sp.context_name
            except UsmError:
                pass
        value = min(self._stats[stat], 0xFFFFFFFF)
        try:
            return encode_v3(
                keys, level=level, engine_id=self.engine_id, boots=self.boots,
                time=self.engine_time(), user=m.user, msg_id=m.msg_id, pdu_type=ber.REPORT,
                request_id=request_id, varbinds=[(USM_STATS[stat], ber.COUNTER32, value)],
                context_engine_id=self.engine_id, context_name=context_name)
        except (ValueError, TypeError):  # pragma: no cover - defensive
            return None

    def _trap(self, sp: ScopedPdu, source: tuple[str, int], m: V3Message, kind: str) -> Trap:
        try:
            uptime, trap_oid, rest = split_v2_varbinds(sp.varbinds)
        except ConvertError as e:
            raise UsmError(e.reason, str(e)) from None
        host = normalize_address(source[0])
        return Trap(
            source=(host, source[1]), version="v3", pdu=kind, trap_oid=trap_oid,  # type: ignore[arg-type]
            uptime=uptime, agent_address=host, varbinds=rest, received=self.clock(),
            user=m.user.decode("utf-8", "backslashreplace"), engine_id=m.engine_id,
            request_id=sp.request_id, context_engine_id=sp.context_engine_id,
        )
