"""Run snmpsim's command responder as a subprocess: simulated SNMP agents.

Used by ``centaure demo`` (a simulated fleet) and by the tests. One responder
process serves every ``*.snmprec`` file of a directory on ``127.0.0.1:PORT``
(SNMP v1/v2c); the community string selects the file: ``switch01.snmprec``
answers community ``switch01``. The shipped recordings live in ``fleet/`` at
the top of the repository (:func:`find_fleet_dir`).

Running as root (as the tests and the demo do here) needs care, see ``NOTES.md``:

* snmpsim 1.2.2 refuses to run as root unless it drops privileges, so we pass
  ``--process-user``/``--process-group`` (nobody/nogroup) and a ``--cache-dir``
  that user can write.
* After the drop it still imports modules lazily (``dbm.dumb`` to build its
  indices, ``encodings.*``), so the unprivileged user must be able to read the
  Python installation. The venv's interpreter lives under ``/root/.pyenv`` and
  ``/root`` is mode 700: run that way it dies with "no dbm clone found".
  We therefore prefer, in order: the current interpreter if ``nobody`` can
  read it; else a system interpreter of the same X.Y version (Debian's
  ``/usr/bin/python3.11``) given the venv's ``site-packages`` (snmpsim and
  pysnmp are pure Python; ``-S`` keeps Debian's dist-packages out); else, as a
  last resort, ``chmod o+x`` on the directories that block the way (``/root``).
* Everything the responder reads or writes (data files, cache) is placed in a
  world-readable temporary directory; pytest's own ``tmp_path`` lives under
  ``/tmp/pytest-of-root`` (mode 700), which ``nobody`` cannot enter.

Known snmpsim behaviour worth remembering (measured, see ``fleet/README.md``):
the ``delay`` variation sleeps in the responder's only thread, so one slow
device stalls every device of the same process for the length of the delay;
and an oversized response is silently dropped by pysnmp (no tooBig), so
tooBig is simulated with the ``error`` variation.
"""

from __future__ import annotations

import grp
import importlib.util
import os
import pwd
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

SYS_DESCR = "1.3.6.1.2.1.1.1.0"
HOST = "127.0.0.1"

#: The top of the source tree: ``fleet/``, ``profiles/`` and the example files
#: sit next to the packages when Centaure runs from a checkout (``pip install -e``).
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: The shipped recordings, found relative to the repository.
FLEET_DIR = os.path.join(REPO_ROOT, "fleet")

# Started as ``python -c BOOT SITE_DIR args...``: makes SITE_DIR importable
# (with its .pth files) and runs the ``snmpsim-command-responder`` entry point.
BOOT = (
    "import site, sys\n"
    "site.addsitedir(sys.argv.pop(1))\n"
    "sys.argv[0] = 'snmpsim-command-responder'\n"
    "from snmpsim.commands.responder import main\n"
    "sys.exit(main())\n"
)


class SimulatorError(RuntimeError):
    """The responder could not be started."""


class FleetNotFound(SimulatorError):
    """No directory of ``.snmprec`` recordings where one was expected."""


def find_fleet_dir(override: str | None = None) -> str:
    """The directory of recordings to serve: ``override`` if given, else ``fleet/``.

    ``fleet/`` is looked for next to the packages (a checkout, or an editable
    install); an installed wheel does not carry it, hence the override.
    Raises :class:`FleetNotFound` with what was tried and how to fix it.
    """
    path = os.path.abspath(override or FLEET_DIR)
    if not os.path.isdir(path):
        hint = "" if override else " (run from a Centaure checkout, or give --fleet DIR)"
        raise FleetNotFound(f"fleet recordings not found: {path} is not a directory{hint}")
    if not communities_of(path):
        raise FleetNotFound(f"fleet recordings not found: no .snmprec file in {path}")
    return path


@dataclass
class Simulator:
    """A running snmpsim responder."""

    proc: subprocess.Popen
    host: str
    port: int
    data_dir: str               # the directory the responder serves
    communities: list[str]      # one per served data file
    log_path: str
    work_dir: str
    _remove_work_dir: bool = False
    argv: list[str] = field(default_factory=list)

    @property
    def endpoint(self) -> str:
        """``host:port`` as net-snmp's tools want it."""
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        """The responder's process id."""
        return self.proc.pid

    def rss_kib(self) -> int:
        """Resident set size of the responder process, in KiB."""
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise SimulatorError("no VmRSS in /proc status")

    def log_tail(self, n: int = 40) -> str:
        """The last ``n`` lines of the responder's log (empty if unreadable)."""
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""

    def alive(self) -> bool:
        """True while the responder process runs."""
        return self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate the responder; kill it if it does not exit within ``timeout``."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        if self._remove_work_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)
            self._remove_work_dir = False

    def __enter__(self) -> Simulator:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def free_udp_port(host: str = HOST) -> int:
    """A UDP port that was free a moment ago (bind port 0, read it, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def communities_of(data_dir: str) -> list[str]:
    """The community of each top-level ``.snmprec`` file: its name without extension."""
    return sorted(n[: -len(".snmprec")] for n in os.listdir(data_dir)
                  if n.endswith(".snmprec") and not n.startswith("."))


def snmpget(endpoint: str, community: str, *oids: str, timeout: float = 1.0,
            retries: int = 0, version: str = "2c", extra: tuple[str, ...] = ()
            ) -> subprocess.CompletedProcess:
    """Run net-snmp's ``snmpget`` (numeric OIDs out) and return the completed process."""
    cmd = ["snmpget", f"-v{version}", "-c", community, "-t", str(timeout), "-r", str(retries),
           "-On", *extra, endpoint, *oids]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout * (retries + 1) + 10)


# --- who can read what -------------------------------------------------------------------

def _others_can_reach(path: str) -> bool:
    """True if a user with no special rights can traverse to ``path`` and read it."""
    path = os.path.realpath(path)
    parts = path.split(os.sep)
    for i in range(2, len(parts)):
        d = os.sep.join(parts[:i]) or os.sep
        if not os.stat(d).st_mode & stat.S_IXOTH:
            return False
    mode = os.stat(path).st_mode
    need = stat.S_IROTH | (stat.S_IXOTH if stat.S_ISDIR(mode) else 0)
    return mode & need == need


def _blocking_dirs(path: str) -> list[str]:
    """The ancestor directories of ``path`` that others may not traverse."""
    parts = os.path.realpath(path).split(os.sep)
    out = []
    for i in range(2, len(parts) + 1):
        d = os.sep.join(parts[:i])
        if os.path.isdir(d) and not os.stat(d).st_mode & stat.S_IXOTH:
            out.append(d)
    return out


def _interpreter_ok(python: str) -> bool:
    """``python`` and its standard library are readable by others, and it is our X.Y."""
    if not os.path.exists(python) or not _others_can_reach(python):
        return False
    try:
        r = subprocess.run(
            [python, "-I", "-S", "-c",
             "import sys, os; print(sys.version_info[0], sys.version_info[1]); "
             "print(os.path.dirname(os.__file__))"],
            capture_output=True, text=True, timeout=30)
    except OSError:
        return False
    if r.returncode != 0:
        return False
    version, stdlib = r.stdout.split("\n")[:2]
    return (version == f"{sys.version_info[0]} {sys.version_info[1]}"
            and _others_can_reach(stdlib))


def _python_for_unprivileged(python: str | None = None) -> list[str]:
    """The interpreter command (with flags) that ``nobody`` can run snmpsim with."""
    if python:
        return [python, "-I", "-S"]
    stdlib = os.path.dirname(os.__file__)
    if _others_can_reach(sys.executable) and _others_can_reach(stdlib):
        return [sys.executable, "-I"]
    v = f"{sys.version_info[0]}.{sys.version_info[1]}"
    for cand in (f"/usr/bin/python{v}", f"/usr/local/bin/python{v}"):
        if _interpreter_ok(cand):
            # -S: no site-packages of that installation; BOOT adds the venv's.
            return [cand, "-I", "-S"]
    # Last resort: let others traverse (not list) the directories that hide our
    # interpreter, typically /root (mode 700) above /root/.pyenv. This is a
    # change to the machine, made only when no readable interpreter exists; it
    # is what NOTES.md recommends. It grants execute (search) only, never read.
    for d in _blocking_dirs(sys.executable) + _blocking_dirs(stdlib):
        os.chmod(d, os.stat(d).st_mode | stat.S_IXOTH)
    return [sys.executable, "-I"]


def _site_dir() -> str:
    spec = importlib.util.find_spec("snmpsim")
    if spec is None or not spec.origin:
        raise SimulatorError("snmpsim is not installed (pip install snmpsim pysmi)")
    if importlib.util.find_spec("pysmi") is None:
        raise SimulatorError("snmpsim needs pysmi installed beside it")
    return os.path.dirname(os.path.dirname(spec.origin))


def _unprivileged_group() -> str:
    for g in ("nogroup", "nobody"):
        try:
            grp.getgrnam(g)
            return g
        except KeyError:
            pass
    raise SimulatorError("neither group nogroup nor nobody exists")


def _probe_community(data_dir: str, communities: list[str]) -> str:
    """A community whose sysDescr is a plain record (no delay/error variation)."""
    plain = re.compile(re.escape(SYS_DESCR) + r"\|4x?\|")
    for c in communities:
        with open(os.path.join(data_dir, c + ".snmprec"), errors="replace") as f:
            for line in f:
                if plain.match(line):
                    return c
    raise SimulatorError(f"no data file in {data_dir} has a plain sysDescr to probe")


# --- starting ----------------------------------------------------------------------------

def start_snmpsim(data_dir: str, port: int | None = None, tmp_dir: str | None = None, *,
                  only: list[str] | None = None, exclude: list[str] | None = None,
                  host: str = HOST, startup_timeout: float = 120.0,
                  log_level: str = "error", python: str | None = None,
                  extra_args: tuple[str, ...] = ()) -> Simulator:
    """Start snmpsim serving ``data_dir``'s ``.snmprec`` files on ``host:port``.

    ``port=None`` picks a free UDP port. ``tmp_dir`` holds the responder's data
    copy, index cache and log (a fresh temporary directory if ``None``, or if
    running as root and ``nobody`` cannot enter it). ``only``/``exclude`` select
    communities. Returns once ``snmpget`` of sysDescr answers.
    """
    data_dir = os.path.abspath(data_dir)
    comms = communities_of(data_dir)
    if only is not None:
        missing = set(only) - set(comms)
        if missing:
            raise SimulatorError(f"no data file for {sorted(missing)} in {data_dir}")
        comms = sorted(only)
    if exclude:
        comms = [c for c in comms if c not in set(exclude)]
    if not comms:
        raise SimulatorError(f"no .snmprec file to serve in {data_dir}")

    root = os.geteuid() == 0
    site_dir = _site_dir()
    if root:
        if not _others_can_reach(site_dir):
            raise SimulatorError(f"{site_dir} is not readable by nobody: snmpsim cannot "
                                 "import itself after dropping privileges")
        interp = _python_for_unprivileged(python)
    else:
        interp = [python, "-I", "-S"] if python else [sys.executable, "-I"]

    remove = False
    if tmp_dir is None or (root and not _others_can_reach(tmp_dir)):
        work = tempfile.mkdtemp(prefix="centaure-snmpsim-")
        remove = True
    else:
        work = tempfile.mkdtemp(prefix="snmpsim-", dir=tmp_dir)
    os.chmod(work, 0o755)
    cache = os.path.join(work, "cache")
    os.mkdir(cache)
    os.chmod(cache, 0o777)  # written by nobody after the privilege drop

    # Serve the directory in place when it holds exactly what we want and the
    # responder's user can read it; else serve copies from our work dir.
    if (only is None and not exclude and (not root or _others_can_reach(data_dir))
            and all(_others_can_reach(os.path.join(data_dir, c + ".snmprec")) or not root
                    for c in comms)):
        served = data_dir
    else:
        served = os.path.join(work, "data")
        os.mkdir(served)
        for c in comms:
            dst = os.path.join(served, c + ".snmprec")
            shutil.copyfile(os.path.join(data_dir, c + ".snmprec"), dst)
            os.chmod(dst, 0o644)
        os.chmod(served, 0o755)
    probe = _probe_community(served, comms)
    log_path = os.path.join(work, "snmpsim.log")

    attempts = 3 if port is None else 1
    last_error = ""
    for _ in range(attempts):
        p = port or free_udp_port(host)
        argv = [*interp, "-c", BOOT, site_dir,
                f"--data-dir={served}",
                f"--agent-udpv4-endpoint={host}:{p}",
                f"--cache-dir={cache}",
                "--logging-method=stderr",
                f"--log-level={log_level}",
                *extra_args]
        if root:
            argv += ["--process-user=nobody", f"--process-group={_unprivileged_group()}"]
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                    cwd=work, start_new_session=True)
        sim = Simulator(proc=proc, host=host, port=p, data_dir=served, communities=comms,
                        log_path=log_path, work_dir=work, _remove_work_dir=remove, argv=argv)
        try:
            _wait_ready(sim, probe, startup_timeout)
            return sim
        except SimulatorError as e:
            last_error = str(e)
            sim._remove_work_dir = False
            sim.stop()
        except BaseException:
            # Interrupted while waiting (Ctrl-C, a signal turned into an
            # exception): the responder runs in its own session and would
            # outlive us.
            sim.stop()
            raise
    if remove:
        shutil.rmtree(work, ignore_errors=True)
    raise SimulatorError(last_error)


def _wait_ready(sim: Simulator, community: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if not sim.alive():
            raise SimulatorError(f"snmpsim exited with {sim.proc.returncode}:\n{sim.log_tail()}")
        r = snmpget(sim.endpoint, community, SYS_DESCR, timeout=0.5)
        if r.returncode == 0 and SYS_DESCR in r.stdout:
            return
        if time.monotonic() > deadline:
            raise SimulatorError(f"snmpsim did not answer on {sim.endpoint} within {timeout}s:"
                                 f"\n{sim.log_tail()}")
        time.sleep(0.2)


def is_available() -> str | None:
    """``None`` if snmpsim and net-snmp's tools can be used here, else why not."""
    if shutil.which("snmpget") is None or shutil.which("snmpbulkwalk") is None:
        return "net-snmp tools (snmpget, snmpbulkwalk) not installed"
    try:
        _site_dir()
    except SimulatorError as e:
        return str(e)
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("nobody")
        except KeyError:
            return "no user nobody to run snmpsim as"
    return None
