"""Run a real net-snmp ``snmpd`` for tests and benchmarks.

``start_snmpd(tmp_path)`` writes an snmpd.conf into ``tmp_path`` (its own
persistent directory, no MIB files loaded), starts
``snmpd -f -Lo -C -c CONF -p PIDFILE udp:127.0.0.1:PORT udp6:[::1]:PORT``
and waits until ``snmpget`` answers.  ``Agent.stop()`` kills it.

v3 users (``V3_USERS``): SHA/AES, SHA-512/AES-256 (net-snmp's AES-256 is the
Blumenthal key extension), SHA-512/AES-256-C (the Reeder/Cisco one),
MD5/DES, SHA-256 authNoPriv, noAuthNoPriv.  A user whose protocols this
snmpd build refuses is left out and listed in ``Agent.refused`` with the
reason, so that tests skip exactly those.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from connector_snmp.model import V3Security

SNMPD = shutil.which("snmpd") or "/usr/sbin/snmpd"
SNMPGET = shutil.which("snmpget") or "/usr/bin/snmpget"

AUTH_KEY = "centaure-auth-1"
PRIV_KEY = "centaure-priv-1"


@dataclasses.dataclass(frozen=True)
class V3User:
    """A v3 user as snmpd's createUser and our V3Security see it."""

    name: str
    netsnmp_auth: str | None  # createUser / snmpget -a spelling
    netsnmp_priv: str | None  # createUser / snmpget -x spelling
    security: V3Security
    aes_key_extension: str = "blumenthal"  # which SnmpClient variant talks to it

    @property
    def level(self) -> str:
        return self.security.level

    def snmpget_args(self) -> list[str]:
        """The net-snmp command-line options for this user."""
        args = ["-v3", "-u", self.name, "-l", self.level]
        if self.netsnmp_auth:
            args += ["-a", self.netsnmp_auth, "-A", AUTH_KEY]
        if self.netsnmp_priv:
            args += ["-x", self.netsnmp_priv, "-X", PRIV_KEY]
        return args


def _user(name: str, auth: str | None, priv: str | None, ours_auth: str, ours_priv: str,
          ext: str = "blumenthal") -> V3User:
    return V3User(name, auth, priv, V3Security(
        user=name, auth_protocol=ours_auth, auth_key=AUTH_KEY if auth else "",  # type: ignore[arg-type]
        priv_protocol=ours_priv, priv_key=PRIV_KEY if priv else ""), ext)  # type: ignore[arg-type]


V3_USERS: tuple[V3User, ...] = (
    _user("u_sha_aes", "SHA", "AES", "SHA", "AES"),
    _user("u_sha512_aes256", "SHA-512", "AES-256", "SHA512", "AES256"),
    _user("u_sha512_aes256c", "SHA-512", "AES-256-C", "SHA512", "AES256", "reeder"),
    _user("u_md5_des", "MD5", "DES", "MD5", "DES"),
    _user("u_sha256_auth", "SHA-256", None, "SHA256", "none"),
    _user("u_noauth", None, None, "none", "none"),
)


def free_udp_port() -> int:
    """A UDP port free on 127.0.0.1 and [::1] right now."""
    for _ in range(50):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        try:
            s6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            try:
                s6.bind(("::1", port))
            finally:
                s6.close()
        except OSError:
            continue
        finally:
            s.close()
        return port
    raise RuntimeError("no free UDP port")


def tool_env(home: Path) -> dict[str, str]:
    """Environment for net-snmp tools: load no MIB files (Debian ships few),
    read no user config."""
    env = dict(os.environ)
    mibdir = home / "mibs"
    mibdir.mkdir(parents=True, exist_ok=True)
    env.update(MIBS="", MIBDIRS=str(mibdir), SNMPCONFPATH=str(home), HOME=str(home))
    return env


@dataclasses.dataclass
class Agent:
    """A running snmpd."""

    port: int
    proc: subprocess.Popen
    dir: Path
    communities: tuple[str, ...]
    users: tuple[V3User, ...]
    refused: dict[str, str]  # v3 user name -> why this snmpd refused it
    env: dict[str, str]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def user(self, name: str) -> V3User:
        for u in self.users:
            if u.name == name:
                return u
        raise KeyError(name)

    def log(self) -> str:
        try:
            return (self.dir / "snmpd.log").read_text(errors="replace")
        except OSError:
            return ""


def _conf(dirpath: Path, communities, users, sys_name: str) -> str:
    lines = [
        f"[snmp] persistentDir {dirpath / 'persist'}",
        "dontLogTCPWrappersConnects yes",
        f"sysName {sys_name}",
        "sysContact centaure-tests@example.org",
        "sysLocation lab rack 1",
    ]
    for c in communities:
        lines += [f"rocommunity {c} default", f"rocommunity6 {c} default"]
    for u in users:
        if u.netsnmp_auth is None:
            lines.append(f"createUser {u.name}")
            lines.append(f"rouser -s usm {u.name} noauth")
        elif u.netsnmp_priv is None:
            lines.append(f'createUser {u.name} {u.netsnmp_auth} "{AUTH_KEY}"')
            lines.append(f"rouser {u.name} auth")
        else:
            lines.append(f'createUser {u.name} {u.netsnmp_auth} "{AUTH_KEY}" '
                         f'{u.netsnmp_priv} "{PRIV_KEY}"')
            lines.append(f"rouser {u.name} priv")
    return "\n".join(lines) + "\n"


def _snmpget(agent_port: int, args: list[str], env, timeout: float = 1.0,
             oid: str = "1.3.6.1.2.1.1.5.0") -> subprocess.CompletedProcess:
    return subprocess.run(
        [SNMPGET, *args, "-On", "-t", str(timeout), "-r", "0", f"127.0.0.1:{agent_port}", oid],
        capture_output=True, text=True, env=env, timeout=timeout + 10)


def start_snmpd(tmp_path, port: int | None = None, communities: tuple[str, ...] = ("public",),
                v3_users: tuple[V3User, ...] = V3_USERS, sys_name: str = "centaure-test",
                wait: float = 30.0) -> Agent:
    """Start snmpd on udp:127.0.0.1:PORT and udp6:[::1]:PORT; see module doc."""
    d = Path(tmp_path)
    d.mkdir(parents=True, exist_ok=True)
    (d / "persist").mkdir(exist_ok=True)
    env = tool_env(d)
    users = tuple(v3_users)
    refused: dict[str, str] = {}
    for attempt in range(3):
        port = port or free_udp_port()
        conf = d / "snmpd.conf"
        conf.write_text(_conf(d, communities, users, sys_name))
        logf = open(d / "snmpd.log", "w")
        proc = subprocess.Popen(
            [SNMPD, "-f", "-Lo", "-C", "-c", str(conf), "-p", str(d / "snmpd.pid"),
             f"udp:127.0.0.1:{port}", f"udp6:[::1]:{port}"],
            stdout=logf, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        logf.close()
        agent = Agent(port, proc, d, tuple(communities), users, refused, env)
        deadline = time.monotonic() + wait
        ok = False
        probe = ["-v2c", "-c", communities[0]] if communities else None
        while time.monotonic() < deadline and proc.poll() is None:
            if probe is None:
                probe = users[0].snmpget_args()
            r = _snmpget(port, probe, env, timeout=0.3)
            if r.returncode == 0:
                ok = True
                break
        if ok:
            break
        agent.stop()
        if "Error opening specified endpoint" in agent.log() and attempt < 2:
            port = None  # lost a race for the port: try another
            continue
        raise RuntimeError(f"snmpd did not start on port {port}:\n{agent.log()[-2000:]}")
    # Which v3 users does this build really accept?  A refused createUser
    # leaves the user out: snmpget then fails with "Unknown user name" or an
    # authentication/decryption error.
    for u in users:
        r = _snmpget(agent.port, u.snmpget_args(), env, timeout=1.0)
        if r.returncode != 0:
            refused[u.name] = (f"snmpd {SNMPD} refused v3 user {u.name} "
                               f"({u.netsnmp_auth}/{u.netsnmp_priv}): "
                               f"{(r.stderr or r.stdout).strip()[:200]}")
    return agent
