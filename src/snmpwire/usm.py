"""SNMPv3 on the wire: the User-based Security Model (RFC 3414) and message
processing (RFC 3412), with SHA-2 authentication (RFC 7860) and AES privacy
(RFC 3826). Both sides stand on it: the poller's manager
(``connector_snmp.usm_manager``) and the trap receiver (``connector_traps.usm``).

Keys
    A password is turned into a key (RFC 3414 A.2: 1 MiB of the repeated
    password hashed with the auth protocol's hash; the same for SHA-2,
    RFC 7860) and localized (H(Ku | engineID | Ku)): :func:`password_to_key`,
    :func:`localize_key`, :func:`localized_keys`. For AES-192/256 when the
    hash is too short, the localized key is extended the "Blumenthal" way
    (``Kul || H(Kul) || H(Kul || H(Kul)) ...``, what net-snmp's
    ``AES-192``/``AES-256`` do) or, per user (``key_extension="reeder"``,
    net-snmp's ``AES-192-C``/``AES-256-C``, Cisco), the "Reeder" way
    (password-to-key of Kul, localized, appended).

Messages
    :func:`parse_message` reads a message's header and security parameters
    (:class:`V3Message`); :func:`verify` checks its HMAC, :func:`decrypt`
    its privacy, :func:`scoped_pdu` gives the :class:`ScopedPdu` inside;
    :func:`encode_v3` and :func:`encode_notification` build messages.

Errors
    Every refusal is a :class:`UsmError` whose ``reason`` is a short class
    (the counter name: ``wrong_digest``, ``decryption_error``, ``malformed``...)
    and ``detail`` a sentence. Secrets (passwords, keys) never appear in a
    repr, a log or an error.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import secrets
import struct
from collections.abc import Iterable
from typing import Any

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

try:  # cryptography >= 43 keeps DES/3DES and CFB here
    from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES as _TripleDES
except ImportError:  # pragma: no cover - older cryptography
    from cryptography.hazmat.primitives.ciphers.algorithms import TripleDES as _TripleDES
try:
    from cryptography.hazmat.decrepit.ciphers.modes import CFB as _CFB
except ImportError:  # pragma: no cover - older cryptography
    _CFB = modes.CFB

from connector.settings import Secret
from snmpwire import ber
from snmpwire.ber import BERError
from snmpwire.oids import SNMP_TRAP_OID_0, SYS_UPTIME_0

__all__ = [
    "UsmError",
    "UsmConfigError",
    "UsmUser",
    "LocalizedKeys",
    "V3Message",
    "ScopedPdu",
    "AUTH_PROTOCOLS",
    "PRIV_PROTOCOLS",
    "NO_AUTH_NO_PRIV",
    "AUTH_NO_PRIV",
    "AUTH_PRIV",
    "INT31_MAX",
    "MAX_MSG_SIZE",
    "TIME_WINDOW",
    "USM_STATS",
    "password_to_key",
    "localize_key",
    "localized_keys",
    "parse_message",
    "decode_scoped_pdu",
    "verify",
    "decrypt",
    "scoped_pdu",
    "encode_v3",
    "encode_notification",
]

# --------------------------------------------------------------------------
# Protocols

#: auth protocol -> (hashlib name, digest size, truncated MAC length)
AUTH_PROTOCOLS: dict[str, tuple[str, int, int]] = {
    "MD5": ("md5", 16, 12),       # HMAC-MD5-96 (RFC 3414)
    "SHA": ("sha1", 20, 12),      # HMAC-SHA-96 (RFC 3414)
    "SHA224": ("sha224", 28, 16),  # HMAC-SHA-224-128 (RFC 7860)
    "SHA256": ("sha256", 32, 24),  # HMAC-SHA-256-192
    "SHA384": ("sha384", 48, 32),  # HMAC-SHA-384-256
    "SHA512": ("sha512", 64, 48),  # HMAC-SHA-512-384
}
#: priv protocol -> key length
PRIV_PROTOCOLS: dict[str, int] = {"DES": 16, "AES": 16, "AES192": 24, "AES256": 32}

_AUTH_ALIASES = {
    "NONE": "none", "": "none", "MD5": "MD5", "HMACMD5": "MD5",
    "SHA": "SHA", "SHA1": "SHA", "SHA-1": "SHA",
    "SHA224": "SHA224", "SHA-224": "SHA224", "SHA256": "SHA256", "SHA-256": "SHA256",
    "SHA384": "SHA384", "SHA-384": "SHA384", "SHA512": "SHA512", "SHA-512": "SHA512",
}
#: alias -> (protocol, key extension or None for "as the user says")
_PRIV_ALIASES: dict[str, tuple[str, str | None]] = {
    "NONE": ("none", None), "": ("none", None), "DES": ("DES", None),
    "AES": ("AES", None), "AES128": ("AES", None), "AES-128": ("AES", None),
    "AES192": ("AES192", None), "AES-192": ("AES192", None),
    "AES256": ("AES256", None), "AES-256": ("AES256", None),
    "AES192C": ("AES192", "reeder"), "AES-192-C": ("AES192", "reeder"),
    "AES256C": ("AES256", "reeder"), "AES-256-C": ("AES256", "reeder"),
}
KEY_EXTENSIONS = ("blumenthal", "reeder")

NO_AUTH_NO_PRIV, AUTH_NO_PRIV, AUTH_PRIV = 0, 1, 3
_LEVEL_NAMES = {0: "noAuthNoPriv", 1: "authNoPriv", 3: "authPriv"}
_FLAG_AUTH, _FLAG_PRIV, _FLAG_REPORTABLE = 1, 2, 4

_ONE_MIB = 1_048_576
INT31_MAX = 2**31 - 1
MAX_MSG_SIZE = 65507
TIME_WINDOW = 150  # seconds, RFC 3414 section 2.2.3

#: usmStats counters (RFC 3414 section 5), reported in Report PDUs.
USM_STATS = {
    "unsupported_security_level": "1.3.6.1.6.3.15.1.1.1.0",
    "not_in_time_window": "1.3.6.1.6.3.15.1.1.2.0",
    "unknown_user": "1.3.6.1.6.3.15.1.1.3.0",
    "unknown_engine_id": "1.3.6.1.6.3.15.1.1.4.0",
    "wrong_digest": "1.3.6.1.6.3.15.1.1.5.0",
    "decryption_error": "1.3.6.1.6.3.15.1.1.6.0",
}



class UsmError(ValueError):
    """A refused SNMPv3 message; ``reason`` is the counter name (a short class)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason, detail)
        self.reason = reason
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}" if self.detail else self.reason


class UsmConfigError(ValueError):
    """A bad user definition (the message never shows a secret)."""


def _norm_auth(p: object) -> str:
    key = "none" if p is None else str(p).strip().upper().replace("_", "-")
    norm = _AUTH_ALIASES.get(key.upper()) if key != "none" else "none"
    if norm is None:
        raise UsmConfigError(f"unknown auth protocol {p!r} (none, MD5, SHA, SHA224, SHA256, SHA384, SHA512)")
    return norm


def _norm_priv(p: object) -> tuple[str, str | None]:
    key = "NONE" if p is None else str(p).strip().upper().replace("_", "-")
    norm = _PRIV_ALIASES.get(key)
    if norm is None:
        raise UsmConfigError(f"unknown priv protocol {p!r} (none, DES, AES, AES192, AES256, AES192C, AES256C)")
    return norm


# --------------------------------------------------------------------------
# Keys


def password_to_key(password: str | bytes, auth_protocol: str) -> bytes:
    """Ku: RFC 3414 A.2 (1 MiB of the repeated password, hashed); RFC 7860 for SHA-2."""
    name = AUTH_PROTOCOLS[_norm_auth(auth_protocol)][0]
    pw = password.encode() if isinstance(password, str) else bytes(password)
    if not pw:
        raise UsmConfigError("empty password")
    buf = (pw * (_ONE_MIB // len(pw) + 1))[:_ONE_MIB]
    return hashlib.new(name, buf).digest()


def localize_key(ku: bytes, engine_id: bytes, auth_protocol: str) -> bytes:
    """Kul = H(Ku || engineID || Ku) (RFC 3414 A.2.1/A.2.2)."""
    name = AUTH_PROTOCOLS[_norm_auth(auth_protocol)][0]
    return hashlib.new(name, ku + engine_id + ku).digest()


def _extend(kul: bytes, size: int, engine_id: bytes, auth: str, extension: str) -> bytes:
    name = AUTH_PROTOCOLS[auth][0]
    if extension == "reeder":
        while len(kul) < size:
            kul += localize_key(password_to_key(kul, auth), engine_id, auth)
    else:  # blumenthal
        while len(kul) < size:
            kul += hashlib.new(name, kul).digest()
    return kul[:size]


class LocalizedKeys:
    """A user's keys localized for one engine ID, ready for the per-message path."""

    __slots__ = ("level", "auth_protocol", "auth_hash", "auth_key", "mac_len",
                 "priv_protocol", "priv_key", "des_pre_iv")

    def __init__(self, auth_protocol: str, auth_key: bytes | None, priv_protocol: str,
                 priv_key: bytes | None) -> None:
        self.auth_protocol = auth_protocol
        self.priv_protocol = priv_protocol
        if auth_protocol == "none":
            self.auth_hash, self.auth_key, self.mac_len = "", b"", 0
        else:
            self.auth_hash, _, self.mac_len = AUTH_PROTOCOLS[auth_protocol]
            self.auth_key = auth_key or b""
        self.des_pre_iv = b""
        if priv_protocol == "none":
            self.priv_key = b""
        elif priv_protocol == "DES":
            assert priv_key is not None
            self.priv_key = priv_key[:8] * 3  # single DES as 3DES with K1=K2=K3
            self.des_pre_iv = priv_key[8:16]
        else:
            self.priv_key = priv_key or b""
        self.level = NO_AUTH_NO_PRIV if auth_protocol == "none" else (
            AUTH_NO_PRIV if priv_protocol == "none" else AUTH_PRIV)

    def __repr__(self) -> str:
        return f"LocalizedKeys({self.auth_protocol}/{self.priv_protocol}, keys=***)"


def localized_keys(user: UsmUser, engine_id: bytes,
                   ku_cache: dict[tuple[str, str], bytes] | None = None) -> LocalizedKeys:
    """*user*'s keys localized with *engine_id* (slow: password-to-key, unless cached)."""
    def ku(secret: Secret) -> bytes:
        k = (user.auth_protocol, secret.reveal())
        if ku_cache is not None and k in ku_cache:
            return ku_cache[k]
        v = password_to_key(secret.reveal(), user.auth_protocol)
        if ku_cache is not None:
            if len(ku_cache) >= 10_000:
                ku_cache.clear()
            ku_cache[k] = v
        return v

    auth = priv = None
    if user.auth_protocol != "none":
        assert user.auth_key is not None
        auth = localize_key(ku(user.auth_key), engine_id, user.auth_protocol)
        if user.priv_protocol != "none":
            assert user.priv_key is not None
            priv = localize_key(ku(user.priv_key), engine_id, user.auth_protocol)
            priv = _extend(priv, PRIV_PROTOCOLS[user.priv_protocol], engine_id,
                           user.auth_protocol, user.key_extension)
    return LocalizedKeys(user.auth_protocol, auth, user.priv_protocol, priv)


# --------------------------------------------------------------------------
# Users


@dataclasses.dataclass(frozen=True)
class UsmUser:
    """One USM user.  ``engine_id`` set: a TRAP sender (keys localized with
    that engine ID); None: an INFORM sender (keys localized with ours).
    Keys are passwords (>= 8 characters), str or :class:`Secret`."""

    name: str
    auth_protocol: str = "none"
    auth_key: Secret | str | None = dataclasses.field(default=None, repr=False, compare=False)
    priv_protocol: str = "none"
    priv_key: Secret | str | None = dataclasses.field(default=None, repr=False, compare=False)
    engine_id: bytes | None = None
    key_extension: str = "blumenthal"  # for AES-192/256 with a short hash

    def __post_init__(self) -> None:
        def put(k: str, v: object) -> None:
            object.__setattr__(self, k, v)

        if not isinstance(self.name, str) or not 0 < len(self.name.encode()) <= 32:
            raise UsmConfigError("user name must be 1 to 32 octets of text")
        auth = _norm_auth(self.auth_protocol)
        priv, ext = _norm_priv(self.priv_protocol)
        ext = ext or str(self.key_extension).lower()
        if ext not in KEY_EXTENSIONS:
            raise UsmConfigError(f"user {self.name}: key_extension must be blumenthal or reeder")
        put("auth_protocol", auth)
        put("priv_protocol", priv)
        put("key_extension", ext)
        if priv != "none" and auth == "none":
            raise UsmConfigError(f"user {self.name}: privacy needs authentication")
        for field, proto in (("auth_key", auth), ("priv_key", priv)):
            v = getattr(self, field)
            if proto == "none":
                put(field, None)
                continue
            if isinstance(v, str):
                v = Secret(v)
            if not isinstance(v, Secret):
                raise UsmConfigError(f"user {self.name}: {field} is required for {proto}")
            if len(v.reveal().encode()) < 8:
                raise UsmConfigError(f"user {self.name}: {field} is shorter than 8 characters (RFC 3414 11.2)")
            put(field, v)
        if self.engine_id is not None:
            eid = bytes(self.engine_id)
            if not 5 <= len(eid) <= 32:
                raise UsmConfigError(f"user {self.name}: engine ID must be 5 to 32 octets")
            put("engine_id", eid)

    @property
    def level(self) -> int:
        """Security level as msgFlags bits: 0, 1 (auth) or 3 (auth+priv)."""
        if self.auth_protocol == "none":
            return NO_AUTH_NO_PRIV
        return AUTH_NO_PRIV if self.priv_protocol == "none" else AUTH_PRIV

    def __repr__(self) -> str:
        eid = self.engine_id.hex() if self.engine_id else "inform"
        return f"UsmUser({self.name!r} {self.auth_protocol}/{self.priv_protocol} engine={eid}, keys=***)"


# --------------------------------------------------------------------------
# Decoding


@dataclasses.dataclass(slots=True)
class V3Message:
    """An SNMPv3 message's header and USM security parameters (RFC 3412/3414).

    ``auth_offset`` is where msgAuthenticationParameters' content starts in
    the message; ``data_start``/``data_end`` delimit msgData's content (the
    ScopedPDU's TLV if plaintext, else the encrypted octets)."""

    msg_id: int
    max_size: int
    flags: int
    security_model: int
    engine_id: bytes
    boots: int
    time: int
    user: bytes
    auth_params: bytes
    priv_params: bytes
    auth_offset: int
    encrypted: bool
    data_start: int
    data_end: int

    @property
    def level(self) -> int:
        return self.flags & 3

    @property
    def reportable(self) -> bool:
        return bool(self.flags & _FLAG_REPORTABLE)


@dataclasses.dataclass(slots=True)
class ScopedPdu:
    """The decrypted scopedPDU of a v3 message: context and the PDU's fields."""

    context_engine_id: bytes
    context_name: bytes
    pdu_type: int
    request_id: int
    error_status: int
    error_index: int
    varbinds: list
    varbinds_tlv: bytes  # the variable-bindings SEQUENCE as received


_expect = ber._expect
_tl = ber._tl


def _uint(data: bytes, pos: int, end: int, lo: int, hi: int, what: str) -> tuple[int, int]:
    s, e = _expect(data, pos, end, 0x02, what)
    return ber._int_value(data, s, e, lo, hi, 5, what), e


def parse_message(data: bytes) -> V3Message:
    """Decode an SNMPv3 message's header and USM parameters; raise UsmError."""
    if type(data) is not bytes:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise UsmError("malformed", "not bytes")
        data = bytes(data)
    m = _fast_parse(data)
    return m if m is not None else _parse_message(data)


def _fast_parse(data: bytes) -> V3Message | None:
    """The usual message shape (short lengths inside, minimal integers), with
    few calls; None if anything differs: :func:`_parse_message` then decodes
    it or says why not.  Whatever this accepts, that one accepts the same."""
    # One piece on purpose: it runs for every SNMPv3 message received, and the
    # point is few calls; measure any split with bench/bench_usm.py (SHA/AES
    # traps, whole receive path: ~74,000 msg/s per CPU-second here).
    try:
        n = len(data)
        head = ber.outer_sequence(data)
        if head is None:
            return None
        p, ln = head
        if p + ln != n or data[p:p + 3] != b"\x02\x01\x03" or data[p + 3] != 0x30 or data[p + 4] >= 0x80:
            return None
        ge = p + 5 + data[p + 4]
        q = p + 5
        fb = int.from_bytes
        k = data[q + 1]
        if data[q] != 2 or not 0 < k <= 4:
            return None
        msg_id = fb(data[q + 2:q + 2 + k], "big", signed=True)
        q += 2 + k
        k = data[q + 1]
        if data[q] != 2 or not 0 < k <= 4:
            return None
        max_size = fb(data[q + 2:q + 2 + k], "big", signed=True)
        q += 2 + k
        if msg_id < 0 or max_size < 484 or data[q:q + 2] != b"\x04\x01" or data[q + 3:q + 6] != b"\x02\x01\x03":
            return None
        flags = data[q + 2]
        q += 6
        if q != ge or flags & 3 == _FLAG_PRIV or data[q] != 0x04:
            return None
        ln = data[q + 1]
        if ln < 0x80:
            ss = q + 2
        elif ln == 0x81:
            ln = data[q + 2]
            ss = q + 3
        else:
            return None
        se = ss + ln
        if data[ss] != 0x30 or data[ss + 1] != ln - 2:
            return None
        r = ss + 2
        k = data[r + 1]
        if data[r] != 0x04 or k > 32:
            return None
        engine_id = data[r + 2:r + 2 + k]
        r += 2 + k
        k = data[r + 1]
        if data[r] != 2 or not 0 < k <= 4:
            return None
        boots = fb(data[r + 2:r + 2 + k], "big", signed=True)
        r += 2 + k
        k = data[r + 1]
        if data[r] != 2 or not 0 < k <= 4:
            return None
        etime = fb(data[r + 2:r + 2 + k], "big", signed=True)
        r += 2 + k
        k = data[r + 1]
        if data[r] != 0x04 or k > 32:
            return None
        user = data[r + 2:r + 2 + k]
        r += 2 + k
        k = data[r + 1]
        if data[r] != 0x04 or k >= 0x80:
            return None
        as_ = r + 2
        auth_params = data[as_:as_ + k]
        r = as_ + k
        k = data[r + 1]
        if data[r] != 0x04 or k >= 0x80:
            return None
        priv_params = data[r + 2:r + 2 + k]
        r += 2 + k
        if r != se or boots < 0 or etime < 0:
            return None
        tag = data[se]
        encrypted = bool(flags & _FLAG_PRIV)
        if tag != (0x04 if encrypted else 0x30):
            return None
        ln = data[se + 1]
        if ln < 0x80:
            ds = se + 2
        elif ln == 0x81:
            ln = data[se + 2]
            ds = se + 3
        elif ln == 0x82:
            ln = (data[se + 2] << 8) | data[se + 3]
            ds = se + 4
        else:
            return None
        if ds + ln != n:
            return None
    except IndexError:
        return None
    return V3Message(msg_id, max_size, flags, 3, engine_id, boots, etime, user,
                     auth_params, priv_params, as_, encrypted, ds if encrypted else se, n)


def _parse_message(data: bytes) -> V3Message:
    """General decoder: every shape, precise reasons."""
    try:
        n = len(data)
        s, e = _expect(data, 0, n, 0x30, "message")
        if e != n:
            raise UsmError("malformed", "trailing octets after the message")
        vs, p = _expect(data, s, e, 0x02, "msgVersion")
        version = ber._int_value(data, vs, p, -(2**31), INT31_MAX, 5, "msgVersion")
        if version != 3:
            raise UsmError("unsupported_version", f"msgVersion {version}")
        gs, ge = _expect(data, p, e, 0x30, "msgGlobalData")
        msg_id, q = _uint(data, gs, ge, 0, INT31_MAX, "msgID")
        max_size, q = _uint(data, q, ge, 484, INT31_MAX, "msgMaxSize")
        fs, q = _expect(data, q, ge, 0x04, "msgFlags")
        if q - fs != 1:
            raise UsmError("malformed", "msgFlags is not one octet")
        flags = data[fs]
        model, q = _uint(data, q, ge, 1, INT31_MAX, "msgSecurityModel")
        if q != ge:
            raise UsmError("malformed", "trailing octets in msgGlobalData")
        if flags & 3 == _FLAG_PRIV:
            raise UsmError("malformed", "msgFlags: privacy without authentication")
        if model != 3:
            raise UsmError("unsupported_security_model", f"msgSecurityModel {model}")
        ss, p = _expect(data, ge, e, 0x04, "msgSecurityParameters")
        us, ue = _expect(data, ss, p, 0x30, "UsmSecurityParameters")
        if ue != p:
            raise UsmError("malformed", "trailing octets in msgSecurityParameters")
        es, q = _expect(data, us, ue, 0x04, "msgAuthoritativeEngineID")
        if q - es > 32:
            raise UsmError("malformed", "engine ID longer than 32 octets")
        engine_id = data[es:q]
        boots, q = _uint(data, q, ue, 0, INT31_MAX, "msgAuthoritativeEngineBoots")
        etime, q = _uint(data, q, ue, 0, INT31_MAX, "msgAuthoritativeEngineTime")
        ns, q = _expect(data, q, ue, 0x04, "msgUserName")
        if q - ns > 32:
            raise UsmError("malformed", "user name longer than 32 octets")
        user = data[ns:q]
        as_, q = _expect(data, q, ue, 0x04, "msgAuthenticationParameters")
        auth_params = data[as_:q]
        ps, q = _expect(data, q, ue, 0x04, "msgPrivacyParameters")
        priv_params = data[ps:q]
        if q != ue:
            raise UsmError("malformed", "trailing octets in UsmSecurityParameters")
        if p >= e:
            raise UsmError("malformed", "missing msgData")
        tag = data[p]
        if tag == 0x30:
            encrypted = False
        elif tag == 0x04:
            encrypted = True
        else:
            raise UsmError("malformed", f"msgData tag 0x{tag:02X}")
        if encrypted != bool(flags & _FLAG_PRIV):
            raise UsmError("malformed", "msgData form does not match msgFlags")
        ds, de = _tl(data, p, e, "msgData")
        if de != e:
            raise UsmError("malformed", "trailing octets after msgData")
    except BERError as exc:
        raise UsmError("malformed", exc.reason) from None
    except (IndexError, TypeError, OverflowError) as exc:  # pragma: no cover - defensive
        raise UsmError("malformed", type(exc).__name__) from None
    return V3Message(msg_id, max_size, flags, model, engine_id, boots, etime, user,
                     auth_params, priv_params, as_, encrypted,
                     p if not encrypted else ds, de)


_V2_PDUS = frozenset((ber.GET_REQUEST, ber.GETNEXT_REQUEST, ber.RESPONSE, ber.SET_REQUEST,
                      ber.GETBULK_REQUEST, ber.INFORM_REQUEST, ber.TRAP_V2, ber.REPORT))


def decode_scoped_pdu(data: bytes, start: int = 0, end: int | None = None,
                      max_trailing: int = 0) -> ScopedPdu:
    """Decode the ScopedPDU whose TLV starts at *start*; up to *max_trailing*
    octets may follow it before *end* (block-cipher padding).  UsmError if malformed."""
    if end is None:
        end = len(data)
    try:
        s, e = _expect(data, start, end, 0x30, "ScopedPDU")
        if end - e > max_trailing:
            raise UsmError("malformed", "trailing octets after the ScopedPDU")
        cs, p = _expect(data, s, e, 0x04, "contextEngineID")
        ns, q = _expect(data, p, e, 0x04, "contextName")
        if q >= e:
            raise UsmError("malformed", "missing PDU")
        pdu_type = data[q]
        if pdu_type not in _V2_PDUS:
            raise UsmError("malformed", f"PDU tag 0x{pdu_type:02X}")
        ps, pe = _tl(data, q, e, "PDU")
        if pe != e:
            raise UsmError("malformed", "trailing octets after the PDU")
        request_id, r = ber._int32_field(data, ps, pe, "request-id")
        es_, r = ber._uint31_field(data, r, pe, "error-status")
        ei, r = ber._uint31_field(data, r, pe, "error-index")
        ls, le = _expect(data, r, pe, 0x30, "variable-bindings")
        if le != pe:
            raise UsmError("malformed", "trailing octets after variable-bindings")
        varbinds = ber._varbinds(data, ls, le)
        return ScopedPdu(data[cs:p], data[ns:q], pdu_type, request_id, es_, ei, varbinds, data[r:le])
    except BERError as exc:
        raise UsmError("malformed", exc.reason) from None
    except (IndexError, TypeError, OverflowError) as exc:  # pragma: no cover - defensive
        raise UsmError("malformed", type(exc).__name__) from None


def verify(keys: LocalizedKeys, data: bytes, m: V3Message) -> None:
    n = keys.mac_len
    if len(m.auth_params) != n:
        raise UsmError("wrong_digest", "authentication parameters of the wrong length")
    o = m.auth_offset
    mac = hmac.digest(keys.auth_key, data[:o] + bytes(n) + data[o + n:], keys.auth_hash)
    if not hmac.compare_digest(mac[:n], m.auth_params):
        raise UsmError("wrong_digest", "wrong digest")


def decrypt(keys: LocalizedKeys, data: bytes, m: V3Message) -> bytes:
    salt = m.priv_params
    ct = data[m.data_start:m.data_end]
    if len(salt) != 8:
        raise UsmError("decryption_error", "privacy parameters are not 8 octets")
    if keys.priv_protocol == "DES":
        if not ct or len(ct) % 8:
            raise UsmError("decryption_error", "DES ciphertext is not a multiple of 8 octets")
        iv = bytes(a ^ b for a, b in zip(keys.des_pre_iv, salt))
        d = Cipher(_TripleDES(keys.priv_key), modes.CBC(iv)).decryptor()
    else:
        iv = struct.pack(">II", m.boots, m.time) + salt
        d = Cipher(algorithms.AES(keys.priv_key), _CFB(iv)).decryptor()
    return d.update(ct) + d.finalize()


def scoped_pdu(keys: LocalizedKeys | None, data: bytes, m: V3Message) -> ScopedPdu:
    if not m.encrypted:
        return decode_scoped_pdu(data, m.data_start, m.data_end)
    assert keys is not None
    plain = decrypt(keys, data, m)
    try:
        return decode_scoped_pdu(plain, 0, len(plain), 7 if keys.priv_protocol == "DES" else 0)
    except UsmError as e:
        # Wrong privacy key: the plaintext is noise (RFC 3414 3.2.8: decryptionError).
        raise UsmError("decryption_error", e.detail) from None


# --------------------------------------------------------------------------
# Encoding

_tlv = ber._tlv
_int_tlv = ber._int_tlv
_salt_counter = [int.from_bytes(secrets.token_bytes(8), "big")]


def _next_salt() -> int:
    _salt_counter[0] = (_salt_counter[0] + 1) & 0xFFFFFFFFFFFFFFFF
    return _salt_counter[0]


def _encrypt(keys: LocalizedKeys, plain: bytes, boots: int, etime: int,
             salt: bytes | None) -> tuple[bytes, bytes]:
    if keys.priv_protocol == "DES":
        if salt is None:  # RFC 3414 8.1.1.1: boots || a local counter
            salt = struct.pack(">II", boots & 0xFFFFFFFF, _next_salt() & 0xFFFFFFFF)
        iv = bytes(a ^ b for a, b in zip(keys.des_pre_iv, salt))
        pad = -len(plain) % 8
        enc = Cipher(_TripleDES(keys.priv_key), modes.CBC(iv)).encryptor()
        return enc.update(plain + bytes(pad)) + enc.finalize(), salt
    if salt is None:  # RFC 3826 3.1.2.1: a 64-bit counter
        salt = _next_salt().to_bytes(8, "big")
    iv = struct.pack(">II", boots, etime) + salt
    enc = Cipher(algorithms.AES(keys.priv_key), _CFB(iv)).encryptor()
    return enc.update(plain) + enc.finalize(), salt


def encode_v3(keys: LocalizedKeys | None, *, level: int, engine_id: bytes, boots: int,
              time: int, user: bytes | str, msg_id: int, pdu_type: int, request_id: int,
              varbinds: Iterable[Any] | bytes = (), error_status: int = 0, error_index: int = 0,
              reportable: bool = False, context_engine_id: bytes | None = None,
              context_name: bytes = b"", max_size: int = MAX_MSG_SIZE,
              salt: bytes | None = None) -> bytes:
    """An SNMPv3/USM message, authenticated and encrypted as *level* says
    (0, 1 = auth, 3 = auth+priv) with *keys* (localized with *engine_id*).
    *varbinds* is a list of ``(oid, tag, value)`` or an encoded
    variable-bindings SEQUENCE."""
    if level and (keys is None or keys.level < level):
        raise ValueError("keys do not support this security level")
    if isinstance(user, str):
        user = user.encode()
    vbl = varbinds if isinstance(varbinds, bytes) else ber._varbind_list(varbinds)
    pdu = _tlv(pdu_type, ber._pdu_head(request_id, error_status, error_index,
                                       "error_status", "error_index") + vbl)
    cei = engine_id if context_engine_id is None else context_engine_id
    scoped = _tlv(0x30, _tlv(0x04, cei) + _tlv(0x04, context_name) + pdu)
    priv_params = b""
    if level & _FLAG_PRIV:
        assert keys is not None
        ct, priv_params = _encrypt(keys, scoped, boots, time, salt)
        msg_data = _tlv(0x04, ct)
    else:
        msg_data = scoped
    mac_len = keys.mac_len if level & _FLAG_AUTH and keys else 0
    flags = level | (_FLAG_REPORTABLE if reportable else 0)
    head = (b"\x02\x01\x03"
            + _tlv(0x30, _int_tlv(2, msg_id) + _int_tlv(2, max_size) + bytes((4, 1, flags))
                   + b"\x02\x01\x03"))
    a = _tlv(0x04, engine_id) + _int_tlv(2, boots) + _int_tlv(2, time) + _tlv(0x04, user)
    usm_content = a + _tlv(0x04, bytes(mac_len)) + _tlv(0x04, priv_params)
    usm_seq = _tlv(0x30, usm_content)
    sp = _tlv(0x04, usm_seq)
    body = head + sp + msg_data
    msg = _tlv(0x30, body)
    if not mac_len:
        return msg
    assert keys is not None
    off = (len(msg) - len(body)) + len(head) + (len(sp) - len(usm_seq)) \
        + (len(usm_seq) - len(usm_content)) + len(a) + 2
    mac = hmac.digest(keys.auth_key, msg, keys.auth_hash)[:mac_len]
    return msg[:off] + mac + msg[off + mac_len:]


def encode_notification(keys: LocalizedKeys | None, *, engine_id: bytes, user: str | bytes,
                        trap_oid: str, varbinds: Iterable[Any] = (), uptime: int = 0,
                        inform: bool = False, boots: int = 1, time: int = 0,
                        msg_id: int = 1, request_id: int = 1,
                        salt: bytes | None = None) -> bytes:
    """An SNMPv3 SNMPv2-Trap (or InformRequest, reportable) at the level *keys* allow."""
    vbs = [(SYS_UPTIME_0, ber.TIMETICKS, uptime), (SNMP_TRAP_OID_0, ber.OBJECT_IDENTIFIER, trap_oid),
           *varbinds]
    return encode_v3(keys, level=keys.level if keys else 0, engine_id=engine_id, boots=boots,
                     time=time, user=user, msg_id=msg_id,
                     pdu_type=ber.INFORM_REQUEST if inform else ber.TRAP_V2,
                     request_id=request_id, varbinds=vbs, reportable=inform, salt=salt)
