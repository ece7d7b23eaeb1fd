"""Run snmpsim's command responder as a subprocess: simulated SNMP agents.

Used by ``centaure demo`` (a simulated fleet) and by the tests. One responder
process serves every ``*.snmprec`` file of a directory on ``127.0.0.1:PORT``
(SNMP v1/v2c); the community string selects the file: ``switch01.snmprec``
answers community ``switch01``. The shipped recordings live in ``fleet/`` at
the top of the repository (:func:`find_fleet_dir`).

snmpsim 1.2.2 refuses to run as root unless it drops privileges to another
user, and after such a drop it imports modules lazily, so that user must be
able to read the Python installation: impossible when the checkout, the venv
or the interpreter sit in a folder of mode 0700 (``/root``, the usual place
for root). The responder only reads the recordings and listens on a loopback
port, so as root it keeps root's rights: ``SNMPSIM_ALLOW_ROOT=true`` is
snmpsim's own switch for that. Nothing of the user's folders is changed.

Known snmpsim behaviour worth remembering (measured, see ``fleet/README.md``):
the ``delay`` variation sleeps in the responder's only thread, so one slow
device stalls every device of the same process for the length of the delay;
and an oversized response is silently dropped by pysnmp (no tooBig), so
tooBig is simulated with the ``error`` variation.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

SYS_DESCR = "1.3.6.1.2.1.1.1.0"
HOST = "127.0.0.1"

#: The shipped recordings (package data of ``connector_snmp``).
FLEET_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "fleet")

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
    """The directory of recordings to serve: ``override`` if given, else the shipped fleet.

    Raises :class:`FleetNotFound` with what was tried.
    """
    path = os.path.abspath(override or FLEET_DIR)
    if not os.path.isdir(path):
        raise FleetNotFound(f"fleet recordings not found: {path} is not a directory")
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

def _site_dir() -> str:
    spec = importlib.util.find_spec("snmpsim")
    if spec is None or not spec.origin:
        raise SimulatorError("snmpsim is not installed: pip install 'centaure[demo]'")
    if importlib.util.find_spec("pysmi") is None:
        raise SimulatorError("snmpsim needs pysmi installed beside it: pip install 'centaure[demo]'")
    return os.path.dirname(os.path.dirname(spec.origin))


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
    copy, index cache and log (a fresh temporary directory if ``None``). ``only``/``exclude`` select
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

    site_dir = _site_dir()
    interp = [python, "-I", "-S"] if python else [sys.executable, "-I"]
    env = dict(os.environ)
    if os.geteuid() == 0:
        env["SNMPSIM_ALLOW_ROOT"] = "true"

    remove = tmp_dir is None
    work = tempfile.mkdtemp(prefix="centaure-snmpsim-" if remove else "snmpsim-", dir=tmp_dir)
    cache = os.path.join(work, "cache")
    os.mkdir(cache)

    # Serve the directory in place when it holds exactly what we want; else
    # serve copies of the chosen files from our work dir.
    if only is None and not exclude:
        served = data_dir
    else:
        served = os.path.join(work, "data")
        os.mkdir(served)
        for c in comms:
            dst = os.path.join(served, c + ".snmprec")
            shutil.copyfile(os.path.join(data_dir, c + ".snmprec"), dst)
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
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                    cwd=work, env=env, start_new_session=True)
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
    return None
