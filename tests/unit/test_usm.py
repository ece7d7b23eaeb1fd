"""connector_traps.usm: keys against RFC 3414 A.3 and pysnmp 7, every auth x
priv combination through our encoder and the receiver, the inform exchange
(discovery, time window, Response), users keyed by engine ID, user files,
and malformed input (truncations, random mutations) only ever refused."""

from __future__ import annotations

import itertools
import random
import time
from hashlib import md5, sha1, sha224, sha256, sha384, sha512

import pytest
from pyasn1.codec.ber import decoder as pyasn1_decoder
from pyasn1.type import univ
from pysnmp.proto.mpmod.rfc3412 import SNMPv3Message
from pysnmp.proto.secmod.rfc3414.service import UsmSecurityParameters  # first: import cycle
from pysnmp.proto.secmod.eso.priv import aes192, aes256  # noqa: I001
from pysnmp.proto.secmod.rfc3414 import localkey
from pysnmp.proto.secmod.rfc3414.auth import hmacmd5, hmacsha
from pysnmp.proto.secmod.rfc7860.auth import hmacsha2

from snmpwire import ber
from snmpwire import usm
from connector_traps.usm import REPLAY_ENTRIES, ReplayMemory, UserTable, V3Receiver, load_users
from snmpwire.usm import (
    LocalizedKeys,
    UsmConfigError,
    UsmError,
    UsmUser,
    decode_scoped_pdu,
    encode_notification,
    encode_v3,
    localize_key,
    localized_keys,
    parse_message,
    password_to_key,
)

RFC_ENGINE = bytes.fromhex("000000000000000000000002")
OURS = bytes.fromhex("80001f8804") + b"centaure"
E1 = bytes.fromhex("8000000001020304")
E2 = bytes.fromhex("80000000010203ff")
AUTHS = ("none", "MD5", "SHA", "SHA224", "SHA256", "SHA384", "SHA512")
PRIVS = ("none", "DES", "AES", "AES192", "AES256")
HASHES = {"MD5": md5, "SHA": sha1, "SHA224": sha224, "SHA256": sha256, "SHA384": sha384, "SHA512": sha512}
PYSNMP_AUTH = {
    "MD5": hmacmd5.HmacMd5.SERVICE_ID, "SHA": hmacsha.HmacSha.SERVICE_ID,
    "SHA224": hmacsha2.HmacSha2.SHA224_SERVICE_ID, "SHA256": hmacsha2.HmacSha2.SHA256_SERVICE_ID,
    "SHA384": hmacsha2.HmacSha2.SAH384_SERVICE_ID, "SHA512": hmacsha2.HmacSha2.SHA512_SERVICE_ID,
}
VARBINDS = [
    ("1.3.6.1.2.1.1.5.0", ber.OCTET_STRING, b"router-1"),
    ("1.3.6.1.2.1.2.2.1.1.7", ber.INTEGER, 7),
    ("1.3.6.1.2.1.31.1.1.1.6.7", ber.COUNTER64, 2**40),
    ("1.3.6.1.6.3.18.1.3.0", ber.IP_ADDRESS, "192.0.2.1"),
]


class Clock:
    def __init__(self, t: float = 1_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def combos():
    for a, p in itertools.product(AUTHS, PRIVS):
        if a == "none" and p != "none":
            continue
        yield a, p


def user(name, auth, priv, engine=E1, ext="blumenthal"):
    return UsmUser(name, auth, "auth-pass-1" if auth != "none" else None, priv,
                   "priv-pass-1" if priv != "none" else None, engine, ext)


# --------------------------------------------------------------------------
# Keys


def test_rfc3414_a3_vectors():
    # RFC 3414 A.3.1 (MD5) and A.3.2 (SHA), password "maplesyrup".
    ku = password_to_key("maplesyrup", "MD5")
    assert ku.hex() == "9faf3283884e92834ebc9847d8edd963"
    assert localize_key(ku, RFC_ENGINE, "MD5").hex() == "526f5eed9fcce26f8964c2930787d82b"
    ku = password_to_key("maplesyrup", "SHA")
    assert ku.hex() == "9fb5cc0381497b3793528939ff788d5d79145211"
    assert localize_key(ku, RFC_ENGINE, "SHA").hex() == "6695febc9288e36282235fc7151f128497b38f3f"


@pytest.mark.parametrize("auth", list(HASHES))
def test_keys_match_pysnmp(auth):
    # No RFC 7860 test vectors: pysnmp's own derivation is the reference.
    h = HASHES[auth]
    for pw, eid in (("maplesyrup", RFC_ENGINE), ("a longer pass phrase!", OURS)):
        ref = localkey.password_to_key(pw, univ.OctetString(eid), h).asOctets()
        assert localize_key(password_to_key(pw, auth), eid, auth) == ref


@pytest.mark.parametrize("auth", list(HASHES))
@pytest.mark.parametrize("priv,cls", [("AES192", "192"), ("AES256", "256")])
@pytest.mark.parametrize("ext", ["blumenthal", "reeder"])
def test_aes_key_extension_matches_pysnmp(auth, priv, cls, ext):
    mod = aes192 if cls == "192" else aes256
    name = ("AesBlumenthal" if ext == "blumenthal" else "Aes") + cls
    ref_cls = getattr(mod, name)
    ku = localkey.hash_passphrase("priv-pass-1", HASHES[auth])
    ref = ref_cls().localize_key(PYSNMP_AUTH[auth], ku, univ.OctetString(E1)).asOctets()
    keys = localized_keys(user("u", auth, priv, ext=ext), E1)
    assert keys.priv_key == ref


def test_blumenthal_and_reeder_differ_only_when_extended():
    a = localized_keys(user("u", "SHA", "AES256"), E1).priv_key
    b = localized_keys(user("u", "SHA", "AES256", ext="reeder"), E1).priv_key
    assert a[:20] == b[:20] and a != b
    # SHA-512 gives 64 octets: no extension, both the same.
    a = localized_keys(user("u", "SHA512", "AES256"), E1).priv_key
    b = localized_keys(user("u", "SHA512", "AES256", ext="reeder"), E1).priv_key
    assert a == b
    # net-snmp's spelling picks the extension.
    assert UsmUser("u", "SHA", "auth-pass-1", "AES-256-C", "priv-pass-1").key_extension == "reeder"
    assert UsmUser("u", "SHA", "auth-pass-1", "AES-256", "priv-pass-1").key_extension == "blumenthal"


def test_table_derives_each_key_once(monkeypatch):
    calls = []
    real = usm.password_to_key
    monkeypatch.setattr(usm, "password_to_key", lambda *a: calls.append(a) or real(*a))
    t = UserTable([user("u", "SHA", "AES", E1), user("u", "SHA", "AES", E2)])
    assert t.trap_keys(E1, b"u") is t.trap_keys(E1, b"u")
    t.trap_keys(E2, b"u")
    assert len(calls) == 2  # auth and priv password, once each, shared by both engines


def test_secrets_never_shown():
    u = UsmUser("bob", "SHA", "s3cret-auth", "AES", "s3cret-priv", E1)
    t = UserTable([u])
    k = t.trap_keys(E1, b"bob")
    for text in (repr(u), str(u), repr(t), repr(k), repr(V3Receiver(t, OURS))):
        assert "s3cret" not in text and k.auth_key.hex() not in text


def test_bad_users():
    with pytest.raises(UsmConfigError):
        UsmUser("u", "SHA", "short", "none", None)
    with pytest.raises(UsmConfigError):
        UsmUser("u", "none", None, "AES", "priv-pass-1")
    with pytest.raises(UsmConfigError):
        UsmUser("u", "SHA1024", "auth-pass-1")
    with pytest.raises(UsmConfigError):
        UsmUser("u", "SHA", "auth-pass-1", "AES", None)
    with pytest.raises(UsmConfigError):
        UsmUser("u", engine_id=b"abc")
    t = UserTable([user("u", "SHA", "AES")])
    with pytest.raises(UsmConfigError):
        t.add(user("u", "MD5", "DES"))


# --------------------------------------------------------------------------
# Round trips


def _receiver(*users, clock=None):
    return V3Receiver(UserTable(users), OURS, clock=clock or Clock())


# The key extension only matters for AES-192/256: Reeder is paired with those alone.
@pytest.mark.parametrize("auth,priv,ext", [(a, p, "blumenthal") for a, p in combos()] + [
    (a, p, "reeder") for a, p in combos() if p in ("AES192", "AES256")])
def test_trap_round_trip(auth, priv, ext):
    u = user("u1", auth, priv, ext=ext)
    r = _receiver(u)
    keys = localized_keys(u, E1)
    msg = encode_notification(keys, engine_id=E1, user="u1", trap_oid="1.3.6.1.4.1.9.0.1",
                              varbinds=VARBINDS, uptime=12345, boots=3, time=99, request_id=77)
    res = r.handle(msg, ("::ffff:192.0.2.9", 50000))
    assert res.error is None and res.response is None
    t = res.trap
    assert t.version == "v3" and t.pdu == "trap" and t.trap_oid == "1.3.6.1.4.1.9.0.1"
    assert t.uptime == 12345 and t.varbinds == tuple(VARBINDS)
    assert t.user == "u1" and t.engine_id == E1
    assert t.source == ("192.0.2.9", 50000) and t.agent_address == "192.0.2.9"
    assert r.counters["accepted"] == 1
    # The structure is what pysnmp's SNMPv3Message and UsmSecurityParameters say.
    m, rest = pyasn1_decoder.decode(msg, asn1Spec=SNMPv3Message())
    assert not rest and int(m["msgVersion"]) == 3
    sp, rest = pyasn1_decoder.decode(m["msgSecurityParameters"].asOctets(), asn1Spec=UsmSecurityParameters())
    assert not rest and sp["msgAuthoritativeEngineId"].asOctets() == E1
    assert int(sp["msgAuthoritativeEngineBoots"]) == 3 and sp["msgUserName"].asOctets() == b"u1"
    mac = {"none": 0, "MD5": 12, "SHA": 12, "SHA224": 16, "SHA256": 24, "SHA384": 32, "SHA512": 48}[auth]
    assert len(sp["msgAuthenticationParameters"]) == mac


@pytest.mark.parametrize("auth,priv", [("SHA", "AES"), ("MD5", "DES"), ("SHA512", "AES256"), ("SHA224", "AES192")])
def test_wrong_keys(auth, priv):
    good = user("u1", auth, priv)
    r = _receiver(good)
    bad_auth = UsmUser("u1", auth, "wrong-pass-1", priv, "priv-pass-1", E1)
    msg = encode_notification(localized_keys(bad_auth, E1), engine_id=E1, user="u1", trap_oid="1.3.6.1.4.1.9")
    res = r.handle(msg, ("192.0.2.1", 162))
    assert (res.trap, res.response, res.error) == (None, None, "wrong_digest")
    # Right auth key, wrong priv key: authenticated, but the plaintext is noise.
    bad_priv = UsmUser("u1", auth, "auth-pass-1", priv, "wrong-priv-1", E1)
    msg = encode_notification(localized_keys(bad_priv, E1), engine_id=E1, user="u1", trap_oid="1.3.6.1.4.1.9",
                              varbinds=VARBINDS)
    assert r.handle(msg, ("192.0.2.1", 162)).error == "decryption_error"
    # Keys localized with another engine ID.
    msg = encode_notification(localized_keys(good, E2), engine_id=E1, user="u1", trap_oid="1.3.6.1.4.1.9")
    assert r.handle(msg, ("192.0.2.1", 162)).error == "wrong_digest"
    assert r.counters["wrong_digest"] == 2 and r.counters["decryption_error"] == 1
    assert r.counters["accepted"] == 0


def test_same_user_many_engines():
    a = UsmUser("ops", "SHA", "password-of-a", "AES", "privacy-of-a", E1)
    b = UsmUser("ops", "SHA256", "password-of-b", "AES256", "privacy-of-b", E2)
    r = _receiver(a, b)
    for u, eid in ((a, E1), (b, E2)):
        msg = encode_notification(localized_keys(u, eid), engine_id=eid, user="ops", trap_oid="1.3.6.1.4.1.9")
        res = r.handle(msg, ("192.0.2.1", 162))
        assert res.error is None and res.trap.engine_id == eid
    # a's keys under b's engine ID: refused.
    msg = encode_notification(localized_keys(a, E2), engine_id=E2, user="ops", trap_oid="1.3.6.1.4.1.9")
    assert r.handle(msg, ("192.0.2.1", 162)).error == "wrong_digest"
    assert r.counters["accepted"] == 2


def test_unknown_engine_user_and_level():
    u = user("u1", "SHA", "AES")
    r = _receiver(u)
    k = localized_keys(u, E1)
    E3 = bytes.fromhex("8000000001020333")
    res = r.handle(encode_notification(localized_keys(u, E3), engine_id=E3, user="u1", trap_oid="1.3.6.1"),
                   ("192.0.2.1", 1))
    assert (res.error, res.response) == ("unknown_engine_id", None)  # no Report for a trap
    res = r.handle(encode_notification(k, engine_id=E1, user="u2", trap_oid="1.3.6.1"), ("192.0.2.1", 1))
    assert res.error == "unknown_user"
    # authNoPriv and noAuthNoPriv under an authPriv user's name: refused.
    k1 = localized_keys(UsmUser("u1", "SHA", "auth-pass-1", engine_id=E1), E1)
    assert r.handle(encode_notification(k1, engine_id=E1, user="u1", trap_oid="1.3.6.1"),
                    ("h", 1)).error == "unsupported_security_level"
    assert r.handle(encode_notification(None, engine_id=E1, user="u1", trap_oid="1.3.6.1"),
                    ("h", 1)).error == "unsupported_security_level"
    assert r.counters["unknown_engine_id"] == 1 and r.counters["unknown_user"] == 1
    assert r.counters["unsupported_security_level"] == 2


def test_trap_without_trap_oid_and_wrong_pdu():
    u = user("u1", "SHA", "AES")
    r = _receiver(u)
    k = localized_keys(u, E1)
    msg = encode_v3(k, level=3, engine_id=E1, boots=1, time=1, user="u1", msg_id=1,
                    pdu_type=ber.TRAP_V2, request_id=1, varbinds=VARBINDS)
    assert r.handle(msg, ("h", 1)).error == "no_trap_oid"
    msg = encode_v3(k, level=3, engine_id=E1, boots=1, time=1, user="u1", msg_id=1,
                    pdu_type=ber.GET_REQUEST, request_id=1, varbinds=[])
    assert r.handle(msg, ("h", 1)).error == "wrong_pdu"
    # snmpTrapOID.0 elsewhere than second: still found.
    vbs = [VARBINDS[0], ("1.3.6.1.6.3.1.1.4.1.0", ber.OBJECT_IDENTIFIER, "1.3.6.1.4.1.9.1")]
    msg = encode_v3(k, level=3, engine_id=E1, boots=1, time=1, user="u1", msg_id=1,
                    pdu_type=ber.TRAP_V2, request_id=1, varbinds=vbs)
    t = r.handle(msg, ("h", 1)).trap
    assert t.trap_oid == "1.3.6.1.4.1.9.1" and t.uptime is None and t.varbinds == (VARBINDS[0],)


def test_trap_time_window_on_by_default():
    """RFC 3414 3.2.7 b per sender engine, without asking for it."""
    u = user("u1", "SHA", "AES")
    clock = Clock()
    r = _receiver(u, clock=clock)
    k = localized_keys(u, E1)

    def send(boots, t, msg_id=1):
        return r.handle(encode_notification(k, engine_id=E1, user="u1", trap_oid="1.3.6.1", boots=boots,
                                            time=t, msg_id=msg_id), ("h", 1)).error

    assert send(5, 1000) is None
    assert send(5, 900) is None          # within 150 s of the latest
    assert send(5, 800) == "not_in_time_window"  # replayed too late
    assert send(4, 5000) == "not_in_time_window"  # older boots
    clock.t += 100
    assert send(5, 960) is None          # our estimate of its clock moved on: 1100 - 150
    assert send(5, 940) == "not_in_time_window"
    assert send(6, 0) is None            # rebooted
    assert send(2**31 - 1, 0) == "not_in_time_window"  # boots at the maximum: never
    assert r.counters["not_in_time_window"] == 4 and r.counters["accepted"] == 4


def test_trap_replayed_a_year_later_is_refused():
    u = user("u1", "SHA", "AES")
    clock = Clock()
    r = _receiver(u, clock=clock)
    msg = encode_notification(localized_keys(u, E1), engine_id=E1, user="u1", trap_oid="1.3.6.1",
                              boots=3, time=5000)
    assert r.handle(msg, ("h", 1)).error is None
    clock.t += 365 * 86400
    res = r.handle(msg, ("h", 1))
    assert res.error == "not_in_time_window" and res.trap is None
    assert r.counters["not_in_time_window"] == 1 and r.counters["accepted"] == 1


def test_trap_time_window_widened_or_off():
    u = user("u1", "SHA", "AES")
    k = localized_keys(u, E1)

    def sends(r, times):
        return [r.handle(encode_notification(k, engine_id=E1, user="u1", trap_oid="1.3.6.1", boots=1,
                                             time=t, msg_id=i), ("h", 1)).error
                for i, t in enumerate(times)]

    wide = V3Receiver(UserTable([u]), OURS, clock=Clock(), trap_time_window=600)
    assert sends(wide, (1000, 450, 390)) == [None, None, "not_in_time_window"]
    off = V3Receiver(UserTable([u]), OURS, clock=Clock(), trap_time_window=None)
    assert sends(off, (1000, 10, 5)) == [None, None, None]
    for bad in (0, -1, -150):
        with pytest.raises(ValueError, match="positive"):
            V3Receiver(UserTable([u]), OURS, trap_time_window=bad)


def test_trap_replayed_within_the_window_is_refused():
    u = user("u1", "SHA", "AES")
    clock = Clock()
    r = _receiver(u, clock=clock)
    k = localized_keys(u, E1)
    msg = encode_notification(k, engine_id=E1, user="u1", trap_oid="1.3.6.1", boots=3, time=5000, msg_id=9)
    assert r.handle(msg, ("h", 1)).error is None
    clock.t += 10
    res = r.handle(msg, ("192.0.2.66", 1))   # the same bytes, from anywhere
    assert res.error == "replayed" and res.trap is None and res.response is None
    # The same msgID and time with other content is another message.
    other = encode_notification(k, engine_id=E1, user="u1", trap_oid="1.3.6.1.2", boots=3, time=5000,
                                msg_id=9)
    assert r.handle(other, ("h", 1)).error is None
    assert r.counters["replayed"] == 1 and r.counters["accepted"] == 2


def test_replay_memory_forgets_after_its_time_and_is_bounded():
    mem = ReplayMemory(300, max_entries=3)
    assert [mem.seen(k, 0.0) for k in (b"a", b"b", b"a")] == [False, False, True]
    assert mem.seen(b"a", 300.0) is True and mem.seen(b"a", 300.5) is False  # forgotten, then again
    assert len(mem) == 1                                  # b expired on the way
    for i, k in enumerate((b"c", b"d", b"e")):
        assert mem.seen(k, 301.0 + i) is False
    assert len(mem) == 3 and mem.evicted == 1             # a, the oldest, made room
    assert mem.seen(b"a", 304.0) is False and mem.seen(b"e", 304.0) is True
    assert ReplayMemory(150, max_entries=0).seen(b"a", 0) is False
    with pytest.raises(ValueError):
        ReplayMemory(0)


def test_replay_memory_holds_its_bound_in_little_memory():
    import tracemalloc

    mem = ReplayMemory(150)
    tracemalloc.start()
    try:
        for i in range(REPLAY_ENTRIES + 1000):
            mem.seen(i.to_bytes(16, "big"), 0.0)
        used, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(mem) == REPLAY_ENTRIES and mem.evicted == 1000
    assert used < 30 * 1024 * 1024


# --------------------------------------------------------------------------
# Informs: we are authoritative


def _discover(r: V3Receiver):
    probe = encode_v3(None, level=0, engine_id=b"", boots=0, time=0, user=b"", msg_id=501,
                      pdu_type=ber.GET_REQUEST, request_id=601, varbinds=[], reportable=True,
                      context_engine_id=b"")
    res = r.handle(probe, ("192.0.2.7", 40000))
    assert res.trap is None and res.error == "discovery"
    m = parse_message(res.response)
    assert m.msg_id == 501 and m.engine_id == OURS and m.level == 0 and not m.reportable
    sp = decode_scoped_pdu(res.response, m.data_start, m.data_end)
    assert sp.pdu_type == ber.REPORT and sp.request_id == 601
    assert sp.varbinds[0][0] == "1.3.6.1.6.3.15.1.1.4.0" and sp.varbinds[0][1] == ber.COUNTER32
    return m.boots, m.time


@pytest.mark.parametrize("auth,priv", list(combos()))
def test_inform_exchange(auth, priv):
    clock = Clock()
    u = UsmUser("inf", auth, "auth-pass-1" if auth != "none" else None, priv,
                "priv-pass-1" if priv != "none" else None)
    r = V3Receiver(UserTable([u]), OURS, clock=clock, boots=7)
    clock.t += 42
    boots, etime = _discover(r)
    assert (boots, etime) == (7, 42)
    k = localized_keys(u, OURS)
    msg = encode_notification(k, engine_id=OURS, user="inf", trap_oid="1.3.6.1.4.1.8072.2.3.0.1",
                              varbinds=VARBINDS, inform=True, boots=boots, time=etime,
                              msg_id=502, request_id=602)
    res = r.handle(msg, ("192.0.2.7", 40000))
    assert res.error is None
    assert res.trap.pdu == "inform" and res.trap.varbinds == tuple(VARBINDS) and res.trap.engine_id == OURS
    m = parse_message(res.response)
    assert m.msg_id == 502 and m.engine_id == OURS and m.level == k.level and not m.reportable
    assert (m.boots, m.time) == (7, 42)
    if k.level:
        usm.verify(k, res.response, m)
    sp = usm.scoped_pdu(k, res.response, m)
    assert sp.pdu_type == ber.RESPONSE and sp.request_id == 602 and sp.error_status == 0
    assert sp.varbinds[2:] == VARBINDS
    assert r.counters["accepted"] == 1 and r.counters["responses"] == 1 and r.counters["discovery"] == 1


def test_inform_time_window_and_replay():
    clock = Clock()
    u = UsmUser("inf", "SHA", "auth-pass-1", "AES", "priv-pass-1")
    r = V3Receiver(UserTable([u]), OURS, clock=clock, boots=2)
    k = localized_keys(u, OURS)
    clock.t += 1000
    msg = encode_notification(k, engine_id=OURS, user="inf", trap_oid="1.3.6.1", inform=True, boots=2, time=1000)
    assert r.handle(msg, ("h", 1)).error is None
    clock.t += 150
    res = r.handle(msg, ("h", 1))                   # a copy at the edge of the window
    assert res.error == "replayed" and res.trap is None
    m = parse_message(res.response)                 # answered again, never handed on
    assert usm.scoped_pdu(k, res.response, m).pdu_type == ber.RESPONSE
    assert r.counters["replayed"] == 1 and r.counters["accepted"] == 1
    clock.t += 1
    res = r.handle(msg, ("h", 1))                   # a replay, too late
    assert res.error == "not_in_time_window" and res.trap is None
    m = parse_message(res.response)
    assert m.level == 1 and (m.boots, m.time) == (2, 1151)  # authenticated, with our clock
    usm.verify(k, res.response, m)
    sp = decode_scoped_pdu(res.response, m.data_start, m.data_end)
    assert sp.pdu_type == ber.REPORT and sp.varbinds == [("1.3.6.1.6.3.15.1.1.2.0", ber.COUNTER32, 1)]
    # Wrong boots: refused too.
    msg = encode_notification(k, engine_id=OURS, user="inf", trap_oid="1.3.6.1", inform=True, boots=1, time=1151)
    assert r.handle(msg, ("h", 1)).error == "not_in_time_window"
    assert r.counters["not_in_time_window"] == 2


def test_inform_refusals_answer_reports():
    u = UsmUser("inf", "SHA", "auth-pass-1", "AES", "priv-pass-1")
    r = _receiver(u)
    wrong = localized_keys(UsmUser("inf", "SHA", "wrong-pass-1", "AES", "priv-pass-1"), OURS)
    res = r.handle(encode_notification(wrong, engine_id=OURS, user="inf", trap_oid="1.3.6.1", inform=True),
                   ("h", 1))
    assert res.error == "wrong_digest"
    m = parse_message(res.response)
    sp = decode_scoped_pdu(res.response, m.data_start, m.data_end)
    assert m.level == 0 and sp.varbinds[0][0] == "1.3.6.1.6.3.15.1.1.5.0"
    res = r.handle(encode_notification(wrong, engine_id=OURS, user="nobody", trap_oid="1.3.6.1", inform=True),
                   ("h", 1))
    assert res.error == "unknown_user" and res.response is not None
    # An inform to another engine ID: a Report carrying ours.
    k = localized_keys(u, E2)
    res = r.handle(encode_notification(k, engine_id=E2, user="inf", trap_oid="1.3.6.1", inform=True), ("h", 1))
    assert res.error == "unknown_engine_id" and parse_message(res.response).engine_id == OURS
    assert r.counters["reports"] == 3


# --------------------------------------------------------------------------
# User files


def test_load_users(tmp_path):
    (tmp_path / "priv.key").write_text("file-priv-secret\n")
    path = tmp_path / "users.yaml"
    path.write_text(f"""
- user: ops
  engine_id: "0x{E1.hex()}"
  auth_protocol: SHA-256
  auth_key: env:OPS_AUTH
  priv_protocol: AES-256-C
  priv_key: file:{tmp_path}/priv.key
- user: ops
  engine_id: {E2.hex()}
  auth_protocol: MD5
  auth_key: literal-pass
  priv_protocol: DES
  priv_key: literal-priv
- user: informer
  auth_protocol: SHA
  auth_key: informer-pass
""")
    t = load_users(path, environ={"OPS_AUTH": "env-auth-secret"})
    assert len(t) == 3
    ops = t.trap_user(E1, b"ops")
    assert ops.auth_protocol == "SHA256" and ops.priv_protocol == "AES256" and ops.key_extension == "reeder"
    assert ops.auth_key.reveal() == "env-auth-secret" and ops.priv_key.reveal() == "file-priv-secret"
    assert t.trap_user(E2, b"ops").priv_protocol == "DES"
    assert t.inform_user(b"informer").engine_id is None
    assert "secret" not in repr(t.users()) and "literal" not in repr(t.users())


@pytest.mark.parametrize("body,word", [
    ("- user: a\n  auth_protocol: SHA\n  auth_key: env:NOPE\n", "NOPE"),
    ("- user: a\n  engine_id: zz\n", "hexadecimal"),
    ("- user: a\n  auth_protocol: SHA\n  auth_key: short\n", "8 characters"),
    ("- user: a\n  colour: blue\n", "colour"),
    ("- {user: a}\n- {user: a}\n", "twice"),
    ("user: a\n", "list"),
])
def test_load_users_errors(tmp_path, body, word):
    path = tmp_path / "users.yaml"
    path.write_text(body)
    with pytest.raises(UsmConfigError, match=word) as e:
        load_users(path, environ={})
    assert "short" not in str(e.value) or word == "8 characters"


# --------------------------------------------------------------------------
# Malformed input


def _samples():
    out = []
    for i, (auth, priv) in enumerate(combos()):
        u = user(f"u{i}", auth, priv)
        k = localized_keys(u, E1)
        out.append((u, encode_notification(k, engine_id=E1, user=u.name, trap_oid="1.3.6.1.4.1.9",
                                           varbinds=VARBINDS)))
    inf = UsmUser("inf", "SHA", "auth-pass-1", "DES", "priv-pass-1")
    out.append((inf, encode_notification(localized_keys(inf, OURS), engine_id=OURS, user="inf",
                                         trap_oid="1.3.6.1", inform=True)))
    out.append((inf, encode_v3(None, level=0, engine_id=b"", boots=0, time=0, user=b"", msg_id=1,
                               pdu_type=ber.GET_REQUEST, request_id=1, reportable=True)))
    return out


def _check(r: V3Receiver, data: bytes) -> None:
    res = r.handle(data, ("192.0.2.1", 162))
    assert (res.trap is None) == (res.error is not None)
    try:
        m = parse_message(data)
    except UsmError:
        return
    try:
        decode_scoped_pdu(data, m.data_start, m.data_end)
    except UsmError:
        pass


def test_truncations_and_bad_headers():
    samples = _samples()
    r = V3Receiver(UserTable({u for u, _ in samples}), OURS, clock=Clock())
    for _, msg in samples:
        for n in range(len(msg)):
            res = r.handle(msg[:n], ("h", 1))
            assert res.error == "malformed" and res.trap is None
        for extra in (b"\x00", b"\x30\x00"):
            assert r.handle(msg + extra, ("h", 1)).error == "malformed"
    for junk in (b"", b"\x30", b"\x30\x80", b"\x30\x03\x02\x01\x01", b"\x30\x84\xff\xff\xff\xff",
                 bytearray(b"\x30\x00"), memoryview(b"\x30\x00")):
        assert r.handle(junk, ("h", 1)).error in ("malformed", "unsupported_version")
    with pytest.raises(UsmError):
        parse_message("not bytes")  # type: ignore[arg-type]
    # v2c message: unsupported version.
    v2 = ber.encode_trap_v2(b"public", 1, [])
    assert r.handle(v2, ("h", 1)).error == "unsupported_version"


def test_random_mutations_only_refused():
    samples = _samples()
    r = V3Receiver(UserTable({u for u, _ in samples}), OURS, clock=Clock())
    rng = random.Random(1234)
    deadline = time.monotonic() + 3.0
    n = 0
    while time.monotonic() < deadline:
        _, msg = rng.choice(samples)
        b = bytearray(msg)
        for _ in range(rng.randint(1, 4)):
            op = rng.random()
            i = rng.randrange(len(b))
            if op < 0.6:
                b[i] = rng.randrange(256)
            elif op < 0.8:
                del b[i]
            else:
                b.insert(i, rng.randrange(256))
        _check(r, bytes(b))
        if n % 50 == 0:
            _check(r, rng.randbytes(rng.randrange(1, 200)))
        n += 1
    assert n > 1000
    assert sum(r.counters.values()) >= n


def test_handle_never_raises_on_arbitrary_types():
    r = _receiver(user("u1", "SHA", "AES"))
    for bad in (None, 42, "text"):
        assert r.handle(bad, ("h", 1)).error == "malformed"  # type: ignore[arg-type]


def test_localized_keys_type():
    k = localized_keys(user("u", "MD5", "DES"), E1)
    assert isinstance(k, LocalizedKeys) and len(k.des_pre_iv) == 8 and k.mac_len == 12


def test_fast_parse_agrees_with_general_parser():
    samples = [m for _, m in _samples()]
    rng = random.Random(99)
    fast_hits = 0
    for i in range(20000):
        b = bytearray(rng.choice(samples))
        if i:
            for _ in range(rng.randint(1, 3)):
                b[rng.randrange(len(b))] = rng.randrange(256)
        data = bytes(b)
        fast = usm._fast_parse(data)
        if fast is None:
            continue
        fast_hits += 1
        assert usm._parse_message(data) == fast
    assert fast_hits > 1000
    for m in samples:
        assert usm._fast_parse(m) is not None
