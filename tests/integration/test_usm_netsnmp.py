"""connector_traps.usm against real net-snmp 5.9.3 senders.

A plain UDP socket on 127.0.0.1 (a free high port), served by a thread that
hands each datagram to :class:`V3Receiver` and sends back its response;
``snmptrap`` and ``snmpinform`` send to it with numeric OIDs and no MIBs.
"""

from __future__ import annotations

import queue
import socket
import subprocess
import threading
import time

import pytest

from snmpwire import ber
from connector_traps.usm import UserTable, V3Receiver
from snmpwire.usm import UsmUser, parse_message
from tests.integration.support import UdpLoop
from tests.snmp.snmpd import free_udp_port, tool_env

pytestmark = [
    pytest.mark.integration,
]

OURS = bytes.fromhex("80001f8804") + b"centaure-rx"
E1 = bytes.fromhex("800007e580aa000001")
E2 = bytes.fromhex("800007e580aa000002")
AUTH = "auth-pass-1"
PRIV = "priv-pass-1"
TRAP_OID = "1.3.6.1.4.1.8072.2.3.0.1"
VB_ARGS = ["1.3.6.1.4.1.8072.2.3.2.1", "i", "42", "1.3.6.1.2.1.1.5.0", "s", "router-1",
           "1.3.6.1.2.1.1.2.0", "o", "1.3.6.1.4.1.8072.3.2.10", "1.3.6.1.6.3.18.1.3.0", "a", "192.0.2.5"]
VARBINDS = (
    ("1.3.6.1.4.1.8072.2.3.2.1", ber.INTEGER, 42),
    ("1.3.6.1.2.1.1.5.0", ber.OCTET_STRING, b"router-1"),
    ("1.3.6.1.2.1.1.2.0", ber.OBJECT_IDENTIFIER, "1.3.6.1.4.1.8072.3.2.10"),
    ("1.3.6.1.6.3.18.1.3.0", ber.IP_ADDRESS, "192.0.2.5"),
)

# (user, engine ID or None for informs, net-snmp -a, -x, our auth, our priv)
USERS = [
    ("t_sha_aes", E1, "SHA", "AES", "SHA", "AES"),
    ("t_sha512_aes256", E1, "SHA-512", "AES-256", "SHA512", "AES256"),
    ("t_sha_aes256", E1, "SHA", "AES-256", "SHA", "AES256"),        # Blumenthal extension needed
    ("t_sha_aes256c", E1, "SHA", "AES-256-C", "SHA", "AES256C"),    # Reeder extension needed
    ("t_md5_aes192", E1, "MD5", "AES-192", "MD5", "AES192"),
    ("t_md5_des", E1, "MD5", "DES", "MD5", "DES"),
    ("t_sha224_aes", E1, "SHA-224", "AES", "SHA224", "AES"),
    ("t_sha384_des", E1, "SHA-384", "DES", "SHA384", "DES"),
    ("t_sha256_auth", E1, "SHA-256", None, "SHA256", "none"),
    ("t_noauth", E1, None, None, "none", "none"),
    ("i_sha_aes", None, "SHA", "AES", "SHA", "AES"),
    ("i_sha512_aes256", None, "SHA-512", "AES-256", "SHA512", "AES256"),
    ("i_md5_des", None, "MD5", "DES", "MD5", "DES"),
    ("i_sha256_auth", None, "SHA-256", None, "SHA256", "none"),
    ("i_noauth", None, None, None, "none", "none"),
]


def _level(a, x):
    return "noAuthNoPriv" if a is None else ("authNoPriv" if x is None else "authPriv")


class Server(UdpLoop):
    """A blocking UDP loop in a thread, driven by a V3Receiver."""

    def __init__(self, receiver: V3Receiver) -> None:
        self.receiver = receiver
        self.results: queue.Queue = queue.Queue()
        self.datagrams: list[bytes] = []  # as received, for sending them again
        self.lock = threading.Lock()
        super().__init__(free_udp_port())

    def handle(self, data: bytes, addr: tuple[str, int]) -> None:
        with self.lock:
            self.datagrams.append(data)
            res = self.receiver.handle(data, addr)
        if res.response is not None:
            self.sock.sendto(res.response, addr)
        self.results.put(res)

    def drain(self, timeout: float = 0.5) -> list:
        out = []
        while True:
            try:
                out.append(self.results.get(timeout=timeout))
            except queue.Empty:
                return out

    def resend(self, data: bytes) -> None:
        """Send ``data`` to the server again, from another socket."""
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(data, ("127.0.0.1", self.port))

    def counters(self) -> dict[str, int]:
        with self.lock:
            return dict(self.receiver.counters)


class Later:
    """Our clock, ``ahead`` seconds ahead (a receiver that has run that much longer)."""

    def __init__(self) -> None:
        self.ahead = 0.0

    def __call__(self) -> float:
        return time.time() + self.ahead


@pytest.fixture
def server():
    users = [UsmUser(n, oa, AUTH if a else None, op, PRIV if x else None, e)
             for n, e, a, x, oa, op in USERS]
    # Same user name as t_sha_aes, another engine and other passwords.
    users.append(UsmUser("t_sha_aes", "SHA", "other-auth-2", "AES", "other-priv-2", E2))
    clock = Later()
    srv = Server(V3Receiver(UserTable(users), OURS, clock=clock))
    srv.clock = clock
    yield srv
    srv.close()


@pytest.fixture
def env(tmp_path):
    return tool_env(tmp_path)


def _args(user, a, x, auth=AUTH, priv=PRIV):
    args = ["-v", "3", "-u", user, "-l", _level(a, x), "-M", "/dev/null"]
    if a:
        args += ["-a", a, "-A", auth]
    if x:
        args += ["-x", x, "-X", priv]
    return args


def snmptrap(srv, env, user, engine, a, x, z=None, **kw):
    cmd = ["snmptrap", *_args(user, a, x, **kw), *(["-Z", z] if z else []), "-e", "0x" + engine.hex(),
           f"127.0.0.1:{srv.port}", "", TRAP_OID, *VB_ARGS]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=20)


def snmpinform(srv, env, user, a, x, **kw):
    cmd = ["snmpinform", *_args(user, a, x, **kw), "-t", "2", "-r", "1",
           f"127.0.0.1:{srv.port}", "", TRAP_OID, *VB_ARGS]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=30)


def _check_trap(t, pdu, user, engine):
    assert t.version == "v3" and t.pdu == pdu and t.user == user and t.engine_id == engine
    assert t.trap_oid == TRAP_OID and t.varbinds == VARBINDS
    assert t.source[0] == "127.0.0.1" and isinstance(t.uptime, int)


TRAP_USERS = [u for u in USERS if u[1] is not None]
INFORM_USERS = [u for u in USERS if u[1] is None]


@pytest.mark.parametrize("name,engine,a,x,_oa,_op", TRAP_USERS, ids=[u[0] for u in TRAP_USERS])
def test_snmptrap(server, env, name, engine, a, x, _oa, _op):
    r = snmptrap(server, env, name, engine, a, x)
    assert r.returncode == 0, r.stderr
    (res,) = server.drain()
    assert res.error is None and res.response is None
    _check_trap(res.trap, "trap", name, engine)
    assert server.counters()["accepted"] == 1


def test_same_user_two_engines(server, env):
    assert snmptrap(server, env, "t_sha_aes", E1, "SHA", "AES").returncode == 0
    assert snmptrap(server, env, "t_sha_aes", E2, "SHA", "AES",
                    auth="other-auth-2", priv="other-priv-2").returncode == 0
    got = server.drain()
    assert [r.error for r in got] == [None, None]
    assert [r.trap.engine_id for r in got] == [E1, E2]
    # E2's passwords under E1's engine ID, and the reverse: refused.
    snmptrap(server, env, "t_sha_aes", E1, "SHA", "AES", auth="other-auth-2", priv="other-priv-2")
    snmptrap(server, env, "t_sha_aes", E2, "SHA", "AES")
    assert [r.error for r in server.drain()] == ["wrong_digest", "wrong_digest"]
    c = server.counters()
    assert c["accepted"] == 2 and c["wrong_digest"] == 2


def test_refusals(server, env):
    snmptrap(server, env, "t_sha_aes", E1, "SHA", "AES", auth="wrong-pass-9")
    snmptrap(server, env, "t_sha_aes", E1, "SHA", "AES", priv="wrong-priv-9")
    # The Blumenthal user sent with the Reeder extension (and the reverse): noise.
    snmptrap(server, env, "t_sha_aes256", E1, "SHA", "AES-256-C")
    snmptrap(server, env, "t_sha_aes256c", E1, "SHA", "AES-256")
    snmptrap(server, env, "t_sha_aes", bytes.fromhex("800007e580aa0000ff"), "SHA", "AES")
    snmptrap(server, env, "nobody", E1, "SHA", "AES")
    snmptrap(server, env, "t_sha_aes", E1, "SHA", None)  # authNoPriv under an authPriv user
    got = server.drain()
    assert [r.error for r in got] == [
        "wrong_digest", "decryption_error", "decryption_error", "decryption_error",
        "unknown_engine_id", "unknown_user", "unsupported_security_level"]
    assert all(r.trap is None and r.response is None for r in got)
    c = server.counters()
    assert c["accepted"] == 0 and c["wrong_digest"] == 1 and c["decryption_error"] == 3
    assert c["unknown_engine_id"] == 1 and c["unknown_user"] == 1


@pytest.mark.parametrize("name,_e,a,x,_oa,_op", INFORM_USERS, ids=[u[0] for u in INFORM_USERS])
def test_snmpinform(server, env, name, _e, a, x, _oa, _op):
    r = snmpinform(server, env, name, a, x)
    assert r.returncode == 0, r.stderr  # only when our Response arrived
    got = server.drain()
    assert got[0].error == "discovery" and got[0].response is not None
    informs = [g for g in got if g.trap is not None]
    assert informs, [g.error for g in got]
    for g in informs:
        _check_trap(g.trap, "inform", name, OURS)
        assert g.response is not None
    c = server.counters()
    assert c["discovery"] >= 1 and c["responses"] >= 1 and c["wrong_digest"] == 0


def test_snmpinform_wrong_password(server, env):
    r = snmpinform(server, env, "i_sha_aes", "SHA", "AES", auth="wrong-pass-9")
    assert r.returncode != 0
    got = server.drain()
    assert all(g.trap is None for g in got)
    assert server.counters()["wrong_digest"] >= 1 and server.counters()["accepted"] == 0


def test_snmptrap_copies_refused_and_new_traps_accepted(server, env):
    """The default time window and replay memory against net-snmp's snmptrap,
    whose engine time is its host's uptime in hundredths of a second."""
    assert snmptrap(server, env, "t_sha_aes", E1, "SHA", "AES").returncode == 0
    (first,) = server.drain()
    assert first.error is None
    captured = server.datagrams[-1]
    server.resend(captured)                       # at once: a copy
    assert [r.error for r in server.drain()] == ["replayed"]
    server.clock.ahead = 365 * 86400.0
    server.resend(captured)                       # a year later
    assert [r.error for r in server.drain()] == ["not_in_time_window"]
    # The sender's own new traps still pass, a year later too.
    assert snmptrap(server, env, "t_sha_aes", E1, "SHA", "AES").returncode == 0
    assert snmptrap(server, env, "t_sha256_auth", E1, "SHA-256", None).returncode == 0
    assert [r.error for r in server.drain()] == [None, None]
    c = server.counters()
    assert c["accepted"] == 3 and c["replayed"] == 1 and c["not_in_time_window"] == 1


def test_snmptrap_after_its_host_rebooted_and_with_z(server, env):
    """snmptrap's time goes back when its host reboots (boots stays 1): refused;
    ``-Z boots,time`` with the Unix time keeps it growing across reboots."""
    now = int(time.time())
    uptime_ticks = int(float(open("/proc/uptime").read().split()[0]) * 100)
    assert uptime_ticks + 1_000_000 < now  # net-snmp's time is far below the Unix time
    assert snmptrap(server, env, "t_sha_aes", E1, "SHA", "AES", z=f"1,{now}").returncode == 0
    (res,) = server.drain()
    m = parse_message(server.datagrams[-1])
    assert res.error is None and (m.boots, m.time) == (1, now)
    # As after a reboot of the sender's host: the same boots, its uptime as time.
    assert snmptrap(server, env, "t_sha_aes", E1, "SHA", "AES").returncode == 0
    assert [r.error for r in server.drain()] == ["not_in_time_window"]
    assert snmptrap(server, env, "t_sha_aes", E1, "SHA", "AES", z=f"1,{now + 1}").returncode == 0
    assert [r.error for r in server.drain()] == [None]
