"""``centaure demo``: a simulated fleet, every connector, SQLite, the embedded bus.

One process runs what a site runs on several machines: snmpsim serves the
shipped recordings of ``fleet/`` (network devices and DC power systems), the
poller polls them, the trap receiver listens on a free local port and is sent a
few traps, the alerter checks one threshold rule on the polled values, the
correlator turns traps and breaches into alarms, the SQL writer stores
everything in a SQLite file, all over the in-process bus. A live view reads the database back every second.

Everything the demo writes lives in its work directory (``./centaure-demo`` by
default): ``settings.ini``, ``inventory.yaml``, ``credentials.yaml`` and ``rules.yaml``
(rewritten at each start: the simulator's port changes), ``centaure.sqlite3``
(kept: a second run adds to it), ``demo.log`` (the connectors' log) and the
simulator's files while it runs. The profiles and trap definitions are the
repository's own examples, used in place. The files holding settings,
credentials or messages are its user's only (0600), whatever the umask.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import yaml

from centaure.shipped import example_path

# ---------------------------------------------------------------------------------------
# The fleet
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DemoDevice:
    """One simulated device: its recording (= name = community) and inventory columns."""

    name: str
    device_type: str
    model: str | None = None
    parent: str | None = None


# router01 comes first on purpose: every simulated agent shares 127.0.0.1, and
# the trap receiver maps a sender address to the first inventory device at
# that address, so the traps the demo sends itself are router01's.
FLEET: tuple[DemoDevice, ...] = (
    DemoDevice("router01", "router", "ISR4331"),
    DemoDevice("switch01", "switch", "C2960X", parent="router01"),
    DemoDevice("server01", "server", parent="switch01"),
    DemoDevice("ups01", "ups", "CP-10K3"),
    DemoDevice("huawei01", "Huawei", "SMU02C"),
    DemoDevice("eltek01", "Eltek", "SmartPack2"),
    DemoDevice("vertiv01", "Vertiv / Emerson", "ACU+"),
)

#: The 2-3 values that tell each kind of device apart in the view (metric
#: names of the shipped profiles; a table metric shows its first row).
KEY_METRICS: dict[str, tuple[str, ...]] = {
    "router": ("sysUpTime", "ifHCInOctets", "ifHCOutOctets"),
    "switch": ("sysUpTime", "ifHCInOctets", "ifHCOutOctets"),
    "server": ("sysUpTime", "hrProcessorLoad", "ifHCInOctets"),
    "ups": ("upsBatteryVoltage", "upsEstimatedChargeRemaining", "upsOutputPercentLoad"),
    "huawei": ("dcOutputVoltage", "dcLoadCurrent", "batteryTemperature"),
    "eltek": ("batteryVoltage", "loadCurrent", "batteryTemperature"),
    "vertiv": ("systemVoltage", "systemCurrent", "batteryTemperature"),
}

LINK_DOWN = "1.3.6.1.6.3.1.1.5.3"
LINK_UP = "1.3.6.1.6.3.1.1.5.4"
IF_ENTRY = "1.3.6.1.2.1.2.2.1"
#: The traps the demo sends itself once the first polls are in: an interface
#: of router01 goes down, then comes back (raise, then clear, of one alarm).
DEMO_TRAPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("linkDown", (LINK_DOWN, f"{IF_ENTRY}.1.2", "i", "2", f"{IF_ENTRY}.2.2", "s",
                  "GigabitEthernet0/0/1", f"{IF_ENTRY}.7.2", "i", "1", f"{IF_ENTRY}.8.2", "i", "2")),
    ("linkUp", (LINK_UP, f"{IF_ENTRY}.1.2", "i", "2", f"{IF_ENTRY}.2.2", "s",
                "GigabitEthernet0/0/1", f"{IF_ENTRY}.7.2", "i", "1", f"{IF_ENTRY}.8.2", "i", "1")),
)
TRAP_GAP = 2.0          # seconds between the demo's traps
PLAIN_EVERY = 5.0       # seconds between progress lines in --plain mode
STOP_TIMEOUT = 20.0     # longest wait for the connectors to stop (the writer flushes)
CONNECTOR_NAMES = ("snmp", "traps", "alerter", "correlator", "db", "console")
#: The web console's port when free (else any free port), its users file and the demo
#: operator's password (made at the first run, kept 0600 in the work directory).
CONSOLE_PORT = 8480
CONSOLE_USERS = "console-users.yaml"
CONSOLE_LOGIN = "console-password.txt"
#: The demo's threshold rule: server01's recording has a core at 81 %, so the
#: alerter publishes a breach and the correlator raises an alarm (origin threshold).
DEMO_RULES = """\
# Written by 'centaure demo' at each start: one threshold rule for the alerter
# (the repository's rules.yaml documents the format). server01 has a core at 81 %.
- name: cpu-core-high
  severity: minor
  message: A processor core above 80 %
  device_types: [server]
  when: {metric: hrProcessorLoad, index: "*", op: ">", value: 80, consecutive: 2}
"""


class DemoError(Exception):
    """The demo cannot start: ``str()`` is the one line to print."""


def device_type_key(device_type: str) -> str:
    """The normalized device type, as the inventory does: first word, lower case."""
    return device_type.split()[0].lower() if device_type.split() else ""


# ---------------------------------------------------------------------------------------
# Options
# ---------------------------------------------------------------------------------------


def _duration(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be a positive number of seconds")
    return value


def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``centaure demo``."""
    parser.add_argument("--workdir", default="centaure-demo", metavar="DIR",
                        help="where the demo writes its settings, database and log "
                             "(default: ./centaure-demo; a second run adds to its database)")
    parser.add_argument("--duration", type=_duration, default=None, metavar="SECONDS",
                        help="stop by itself after this long (default: run until Ctrl-C)")
    parser.add_argument("--interval", type=_duration, default=5.0, metavar="SECONDS",
                        help="poll interval of every device (default: 5)")
    parser.add_argument("--plain", action="store_true",
                        help="print progress lines instead of a refreshing screen "
                             "(automatic when the output is not a terminal)")
    parser.add_argument("--fleet", default=None, metavar="DIR",
                        help="directory of snmpsim .snmprec recordings "
                             "(default: fleet/ of the Centaure checkout)")


# ---------------------------------------------------------------------------------------
# The work directory
# ---------------------------------------------------------------------------------------


def free_port(kind: int, host: str = "127.0.0.1") -> int:
    """A port of ``kind`` (SOCK_DGRAM/SOCK_STREAM) that was free a moment ago."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@dataclass
class DemoFiles:
    """The paths of one demo run."""

    workdir: str
    settings: str
    database: str
    log: str
    sim_dir: str

    @property
    def database_url(self) -> str:
        """The SQLAlchemy URL of the demo's database."""
        return f"sqlite:///{self.database}"

    @classmethod
    def at(cls, workdir: str) -> DemoFiles:
        """The files under ``workdir`` (made absolute)."""
        w = os.path.abspath(workdir)
        return cls(w, os.path.join(w, "settings.ini"), os.path.join(w, "centaure.sqlite3"),
                   os.path.join(w, "demo.log"), os.path.join(w, "simulator"))


def prepare_workdir(files: DemoFiles) -> None:
    """Create the work directory; clear simulator leftovers of a killed run."""
    try:
        os.makedirs(files.workdir, exist_ok=True)
        os.makedirs(files.sim_dir, exist_ok=True)
        # snmpsim runs as nobody when we are root: it must enter this folder
        # (start_snmpsim falls back to /tmp when an ancestor is closed to it).
        os.chmod(files.sim_dir, 0o755)
    except OSError as e:
        raise DemoError(f"cannot create the work directory {files.workdir}: {e.strerror}") from None
    for name in os.listdir(files.sim_dir):
        if name.startswith("snmpsim-"):
            shutil.rmtree(os.path.join(files.sim_dir, name), ignore_errors=True)


def console_port() -> int:
    """The console's usual port when nothing listens on it, else any free port."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", CONSOLE_PORT))
        except OSError:
            return free_port(socket.SOCK_STREAM)
    return CONSOLE_PORT


def console_password(files: DemoFiles) -> str:
    """The demo operator's password: made at the first run, with its argon2 hash in
    ``console-users.yaml`` (both files 0600)."""
    import secrets

    from connector_console.users import UserFile, write_user

    users = os.path.join(files.workdir, CONSOLE_USERS)
    login = os.path.join(files.workdir, CONSOLE_LOGIN)
    if os.path.exists(login) and os.path.exists(users):
        with open(login, encoding="utf-8") as f:
            password = f.read().strip()
        if UserFile(users).authenticate("demo", password) is not None:
            return password
    password = secrets.token_urlsafe(9)
    write_user(users, "demo", "operator", password)
    _write_private(login, password + "\n")
    return password


def write_config(files: DemoFiles, sim_port: int, trap_port: int, http_port: int,
                 interval: float, console: int = 0) -> None:
    """Write settings.ini, inventory.yaml and credentials.yaml for this run."""
    devices = []
    for i, d in enumerate(FLEET, 1):
        row: dict[str, Any] = {"name": d.name, "address": "127.0.0.1", "port": sim_port,
                               "device_type": d.device_type}
        if d.model:
            row["model"] = d.model
        row["id"] = str(9000 + i)
        if d.parent:
            row["parent"] = d.parent
        devices.append(row)
    header = (f"# Written by 'centaure demo' at each start: the simulated fleet, one snmpsim\n"
              f"# process on 127.0.0.1:{sim_port} serving a recording per device (the\n"
              f"# community selects it: credentials.yaml sends the device's name).\n")
    _write_private(os.path.join(files.workdir, "inventory.yaml"),
                   header + yaml.safe_dump({"devices": devices}, sort_keys=False,
                                           default_flow_style=None, width=120))
    _write_private(os.path.join(files.workdir, "rules.yaml"), DEMO_RULES)
    _write_private(os.path.join(files.workdir, "credentials.yaml"),
                   "# Written by 'centaure demo': snmpsim selects a recording by community.\n"
                   "default:\n  version: v2c\n  community: __name__\n")
    sections = {
        "bus": {"url": "embedded"},
        "buffer": {"path": os.path.join(files.workdir, "var", "buffer-{connector}.sqlite3")},
        "connector": {"http_host": "127.0.0.1", "http_port": str(http_port),
                      "status_interval": "5s"},
        "database": {"url": files.database_url},
        "logging": {"level": "info", "format": "text"},
        "inventory": {"source": "yaml", "path": "inventory.yaml", "port_column": "port",
                      "parent_column": "parent", "reload_interval": "0"},
        "snmp": {"profiles": "shipped", "credentials": "credentials.yaml",
                 "interval": f"{interval:g}s", "timeout": "2s", "retries": "1"},
        "traps": {"listen": f"127.0.0.1:{trap_port}", "communities": "public",
                  "definitions": example_path("traps.yaml"), "v3_users": "trap-users.yaml",
                  "mib_cache": os.path.join("var", "mib-cache")},
        # No routes file: the alerter publishes thresholds and notifies nobody.
        "alerter": {"rules": "rules.yaml", "routes": "alert-routes.yaml"},
        # The board is readable without logging in; acting on alarms needs the demo login.
        "console": {"listen": "127.0.0.1", "port": str(console), "users_file": CONSOLE_USERS,
                    "anonymous_view": "true"},
    }
    text = ("# Written by 'centaure demo' at each start (the ports change); see the\n"
            "# repository's settings.ini for every key. Query the demo's database with:\n"
            f"#   centaure query -c {files.settings} router01\n\n")
    text += "\n".join(f"[{name}]\n" + "".join(f"{k} = {v}\n" for k, v in kv.items())
                      for name, kv in sections.items())
    _write_private(files.settings, text)


def _write_private(path: str, text: str) -> None:
    """Write ``path`` readable by its owner only: credentials and settings, as a site's are.

    0600 whatever the umask, a file left by an older run included (tightened
    before it is written).
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        os.fchmod(fd, 0o600)
        f.write(text)


# ---------------------------------------------------------------------------------------
# Reading the database back (in a thread, never on the reactor)
# ---------------------------------------------------------------------------------------


@dataclass
class DeviceState:
    """What the database says about one device."""

    last_ts: float | None = None
    metrics: int = 0                      # samples of its last poll (metric x row)
    values: list[tuple[str, str, Any, str | None]] = field(default_factory=list)


@dataclass
class Snapshot:
    """One reading of the database for the view."""

    devices: dict[str, DeviceState] = field(default_factory=dict)
    events: list = field(default_factory=list)
    samples: int = 0
    events_total: int = 0
    alarms_active: int = 0
    error: str | None = None


def _index_key(index: str) -> tuple:
    parts = str(index or "").split(".")
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts)


def read_snapshot(engine, schema, key_metrics: dict[str, tuple[str, ...]],
                  n_events: int = 8) -> Snapshot:
    """What the view shows, read from the database (runs in a thread).

    Values and events come from :mod:`centaure_shared.storage.query`; the counts are
    the view's own (that API counts nothing: a count is a scan).
    """
    import sqlalchemy as sa

    from centaure_shared.storage.query import QueryError, devices, events, latest_samples

    snap = Snapshot()
    d, se, e = schema.devices, schema.series, schema.events
    tables = (schema.samples, schema.samples_text)  # numbers, then texts and empty polls
    try:
        with engine.connect() as conn:
            if not sa.inspect(conn).has_table(schema.series.name):
                # Before the writer has created the schema there are no tables yet.
                snap.error = "waiting for the database schema"
                return snap
        for dev in devices(engine, schema):
            # Times in seconds from centaure_shared.storage.query; the tables keep ms.
            snap.devices[dev.name] = DeviceState(last_ts=dev.last_ts)
        with engine.connect() as conn:
            for dev_id, name in conn.execute(sa.select(d.c.id, d.c.name)):
                state = snap.devices.get(name)
                if state is None or state.last_ts is None:
                    continue
                mine = sa.select(se.c.id).where(se.c.device_id == dev_id)
                ts = int(round(state.last_ts * 1000))
                # One seek per series of the device on each primary key (series_id, ts).
                state.metrics = sum(conn.execute(
                    sa.select(sa.func.count()).select_from(t)
                    .where(t.c.series_id.in_(mine), t.c.ts == ts)).scalar_one() for t in tables)
            snap.samples = sum(conn.execute(sa.select(sa.func.count()).select_from(t))
                               .scalar_one() for t in tables)
            snap.events_total = conn.execute(
                sa.select(sa.func.count()).select_from(e)).scalar_one()
            a = schema.alarms
            snap.alarms_active = conn.execute(
                sa.select(sa.func.count()).select_from(a).where(a.c.state != "cleared")
            ).scalar_one()
        wanted = sorted({m for names in key_metrics.values() for m in names})
        found: dict[tuple[str, str], list] = {}
        for row in latest_samples(engine, schema, metrics=wanted, limit=5000):
            found.setdefault((row.host, row.metric), []).append(row)
        for host, names in key_metrics.items():
            state = snap.devices.get(host)
            if state is None:
                continue
            for metric in names:
                rows = sorted(found.get((host, metric), ()), key=lambda r: _index_key(r.index))
                if rows:
                    state.values.append((metric, rows[0].index or "", rows[0].value,
                                         rows[0].unit))
        snap.events = list(events(engine, schema, limit=n_events, order="desc"))
    except sa.exc.OperationalError as exc:
        # Before the writer has created the schema there are no tables yet.
        snap.error = ("waiting for the database schema" if "no such table" in str(exc)
                      else f"database: {exc.orig if exc.orig else exc}")
    except QueryError as exc:   # one line already
        snap.error = f"database: {exc}"
    return snap


def count_rows(url: str, prefix: str = "") -> tuple[int, int]:
    """(samples, events) stored in the database at ``url``; (0, 0) before it exists."""
    import sqlalchemy as sa

    from centaure_shared.sql import private_sqlite
    from centaure_shared.storage.schema import make_schema

    schema = make_schema(prefix)
    # It runs before the writer starts: it may be what creates the database.
    engine = private_sqlite(sa.create_engine(url))
    try:
        with engine.connect() as conn:
            def rows(t):
                return conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one()

            return rows(schema.samples) + rows(schema.samples_text), rows(schema.events)
    except sa.exc.OperationalError:
        return 0, 0
    finally:
        engine.dispose()


# ---------------------------------------------------------------------------------------
# Formatting
# ---------------------------------------------------------------------------------------


def fmt_age(seconds: float | None) -> str:
    """``4s ago``, ``2m05s ago``; ``-`` when never."""
    if seconds is None:
        return "-"
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s ago"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s ago"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m ago"


def fmt_elapsed(seconds: float) -> str:
    """``0:04:12``."""
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def fmt_value(value: Any, unit: str | None) -> str:
    """A sample value with its unit made readable (octets, hundredths of seconds)."""
    if value is None:
        return "?"
    if isinstance(value, str):
        return value if len(value) <= 24 else value[:23] + "…"
    if unit == "cs":                         # TimeTicks: an uptime
        total = int(value) // 100
        days, rest = divmod(total, 86400)
        text = f"{rest // 3600:02d}:{rest % 3600 // 60:02d}:{rest % 60:02d}"
        return f"{days}d {text}" if days else text
    if unit == "octets":
        v = float(value)
        for suffix in ("B", "kB", "MB", "GB", "TB"):
            if abs(v) < 1000 or suffix == "TB":
                # Three decimals from GB on: a counter's growth shows between polls.
                return (f"{v:.0f} {suffix}" if suffix == "B"
                        else f"{v:.3f} {suffix}" if suffix in ("GB", "TB") else f"{v:.1f} {suffix}")
            v /= 1000
    number = f"{value:g}" if isinstance(value, float) else str(value)
    unit = _UNITS.get(unit, unit)
    if not unit:
        return number
    return f"{number}{unit}" if unit in ("%", "°C") else f"{number} {unit}"


# Profiles write units as UCUM codes; a few read better spelled out.
_UNITS = {"Cel": "°C"}


def fmt_time(ts: float | None) -> str:
    """Local wall-clock time of a UNIX timestamp."""
    return time.strftime("%H:%M:%S", time.localtime(ts)) if ts else "--:--:--"


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    out = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip()]
    for r in rows:
        out.append("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    return out


def devices_table(snap: Snapshot, sim_port: int, now: float) -> list[str]:
    """The devices: name, type, address, last poll, metrics, characteristic values."""
    rows = []
    for d in FLEET:
        state = snap.devices.get(d.name, DeviceState())
        values = "  ".join(
            f"{m}={fmt_value(v, u)}" for m, _index, v, u in state.values)
        rows.append([d.name, device_type_key(d.device_type), f"127.0.0.1:{sim_port}",
                     fmt_age(now - state.last_ts) if state.last_ts else "waiting",
                     str(state.metrics) if state.last_ts else "-", values])
    return _table(["DEVICE", "TYPE", "ADDRESS", "LAST POLL", "METRICS",
                   "LAST VALUES (of a table: its first row)"], rows)


def event_line(ev) -> list[str]:
    """One event as table cells: time, host, name, severity, message."""
    return [fmt_time(ev.ts), ev.host, ev.name, ev.severity, ev.message or ""]


def events_table(events: list) -> list[str]:
    """The last events, newest first."""
    if not events:
        return ["(no event yet)"]
    return _table(["TIME", "HOST", "NAME", "SEVERITY", "MESSAGE"],
                  [event_line(ev) for ev in events])


# ---------------------------------------------------------------------------------------
# The running demo
# ---------------------------------------------------------------------------------------


class Demo:
    """The connectors' service tree, the simulator, the traps and the live view."""

    def __init__(self, reactor, root, files: DemoFiles, sim, trap_port: int, http_port: int,
                 plain: bool, out=sys.stdout) -> None:
        from centaure_shared.storage.schema import make_schema

        self.reactor = reactor
        self.root = root
        self.runtime = root.runtime
        self.files = files
        self.sim = sim
        self.trap_port = trap_port
        self.http_port = http_port
        self.plain = plain
        self.out = out
        self.started = time.time()
        self.schema = make_schema(self.runtime.settings.section("db").table_prefix)
        self.engine = None
        self.snapshot = Snapshot(error="starting")
        self.reading = False
        self.traps_state = "waiting for the first polls"
        self.traps_started = False
        self.events_seen: set = set()
        self.table_printed = False
        self.last_plain = 0.0
        self.loop = None
        self.key_metrics = {d.name: KEY_METRICS.get(device_type_key(d.device_type), ())
                            for d in FLEET}

    # -- start and stop -------------------------------------------------------------

    def start(self) -> None:
        """Start the connectors and the view (called once the reactor runs)."""
        from twisted.internet import task

        from centaure_shared.sql import make_engine

        self.root.startService()
        self.engine = make_engine(self.files.database_url)
        self.print_header()
        self.loop = task.LoopingCall(self.tick)
        self.loop.clock = self.reactor
        self.loop.start(1.0, now=True).addErrback(
            lambda f: print(f"centaure demo: view failed: {f.getErrorMessage()}",
                            file=sys.stderr))

    def stop(self):
        """Stop the view, the producers, then the rest (the writer flushes last)."""
        from twisted.internet import defer

        if self.loop is not None and self.loop.running:
            self.loop.stop()
        producers = [s for s in list(self.root)
                     if type(s).__module__ in ("connector_snmp.service",
                                               "connector_traps.service")]

        async def stopping() -> None:
            # Poller and receiver first, so that what they published is in the
            # queue when the writer's stop flushes it.
            await defer.gatherResults([defer.maybeDeferred(s.disownServiceParent)
                                       for s in producers], consumeErrors=True)
            await defer.maybeDeferred(self.root.stopService)

        d = defer.ensureDeferred(stopping())
        d.addTimeout(STOP_TIMEOUT, self.reactor)
        d.addErrback(lambda f: print(f"centaure demo: stopping: {f.getErrorMessage()}",
                                     file=sys.stderr))
        return d

    # -- every second ---------------------------------------------------------------

    def counters(self) -> dict[str, float]:
        """Live figures of this process (the connectors' counters)."""
        bus_counters = getattr(self.runtime.bus, "counters", {}) or {}
        return {
            "polls": self.runtime.counters("snmp").get("polls"),
            "traps": self.runtime.counters("traps").get("received"),
            "bus": sum(c.get("published") for c in bus_counters.values()),
        }

    def tick(self) -> None:
        """Read the database in a thread, then redraw."""
        from twisted.internet import threads

        self.maybe_send_traps()
        if self.reading:
            self.render()   # the previous read is still running: redraw ages only
            return
        self.reading = True
        d = threads.deferToThread(read_snapshot, self.engine, self.schema, self.key_metrics)

        def got(snap: Snapshot) -> None:
            self.snapshot = snap

        def failed(failure) -> None:
            # Keep showing the last good reading, with what went wrong.
            self.snapshot.error = f"database: {failure.getErrorMessage()}"

        def done(_):
            self.reading = False
            self.render()

        d.addCallbacks(got, failed)
        d.addBoth(done)

    def maybe_send_traps(self) -> None:
        """Once every device was polled (or after 20 s), send the demo's traps."""
        if self.traps_started:
            return
        polls = self.counters()["polls"]
        if polls < len(FLEET) and time.time() - self.started < 20:
            return
        self.traps_started = True
        from twisted.internet import defer

        def failed(failure) -> None:
            self.traps_state = f"could not send the traps: {failure.getErrorMessage()}"

        defer.ensureDeferred(self.send_traps()).addErrback(failed)

    async def send_traps(self) -> None:
        """Send the demo's traps with net-snmp's snmptrap (a missing tool is said, not fatal)."""
        from twisted.internet import task, utils

        tool = shutil.which("snmptrap")
        if tool is None:
            self.traps_state = "snmptrap not found: no traps sent (apt-get install snmp)"
            return
        home = os.path.join(self.files.workdir, "var", "net-snmp")
        os.makedirs(home, exist_ok=True)
        # No MIB files, no user config: numeric OIDs only, nothing read from ~.
        env = dict(os.environ, MIBS="", MIBDIRS=home, SNMPCONFPATH=home, HOME=home)
        sent = []
        for i, (name, args) in enumerate(DEMO_TRAPS):
            if i:
                await task.deferLater(self.reactor, TRAP_GAP, lambda: None)
            out, err, code = await utils.getProcessOutputAndValue(
                tool, ("-M", "/dev/null", "-v", "2c", "-c", "public",
                       f"127.0.0.1:{self.trap_port}", "", *args), env=env)
            if code != 0:
                self.traps_state = (f"snmptrap {name} failed ({code}): "
                                    f"{err.decode(errors='replace').strip()[:120]}")
                return
            sent.append(name)
            self.traps_state = (f"sent {', '.join(sent)} (router01) to 127.0.0.1:{self.trap_port} "
                                f"with snmptrap")

    # -- the view -------------------------------------------------------------------

    def header_lines(self) -> list[str]:
        """Where things are and how to look at them."""
        http = (f"   metrics: http://127.0.0.1:{self.http_port}/metrics"
                if self.http_port else "")
        return [
            f"Centaure demo: {len(FLEET)} simulated devices (snmpsim on {self.sim.endpoint}), "
            f"poller, trap receiver (127.0.0.1:{self.trap_port}), threshold alerter, "
            "alarm correlator, SQL writer, embedded bus",
            f"database: {self.files.database}",
            f"query it: centaure query -c {self.files.settings} router01",
            f"log: {self.files.log}{http}",
        ] + self.console_lines()

    def console_lines(self) -> list[str]:
        """The web console's address and the demo login, when it runs."""
        if "console" not in self.runtime.health_checks:
            return []
        port = self.runtime.settings.section("console").port
        try:
            with open(os.path.join(self.files.workdir, CONSOLE_LOGIN), encoding="utf-8") as f:
                password = f.read().strip()
        except OSError:
            password = "?"
        return [f"console: http://127.0.0.1:{port}/ (live alarms; log in as demo, password "
                f"{password}, to ack)"]

    def progress_line(self) -> str:
        """Polls, samples and events stored, bus messages, elapsed time."""
        c, snap = self.counters(), self.snapshot
        line = (f"[{fmt_elapsed(time.time() - self.started)}] polls {int(c['polls'])} | "
                f"samples stored {snap.samples:,} | events stored {snap.events_total:,} | "
                f"active alarms {snap.alarms_active} | "
                f"traps received {int(c['traps'])} | messages on the bus {int(c['bus']):,}")
        if snap.error:
            line += f" | {snap.error}"
        return line

    def print_header(self) -> None:
        """The header, once, in --plain mode."""
        if self.plain:
            for line in self.header_lines():
                self.write(line)
            self.write("Ctrl-C stops.")

    def render(self) -> None:
        """Redraw the screen, or print what is new in --plain mode."""
        now = time.time()
        if not self.plain:
            width, height = shutil.get_terminal_size((120, 40))
            top = self.header_lines() + [""] + devices_table(self.snapshot, self.sim.port, now)
            bottom = ["", f"traps: {self.traps_state}", "", self.progress_line(),
                      "Ctrl-C stops."]
            # As many events as fit: a screen taller than the terminal scrolls
            # at every redraw.
            room = max(1, height - len(top) - len(bottom) - 4)
            lines = top + ["", "LAST EVENTS"] + events_table(self.snapshot.events[:room]) + bottom
            # Home, then each line cleared to its end, then the rest of the
            # screen: no flicker, no curses.
            self.out.write("\x1b[H" + "".join(line[:width] + "\x1b[K\n" for line in lines)
                           + "\x1b[J")
            self.out.flush()
            return
        snap = self.snapshot
        if not self.table_printed and all(self.polled_now(d.name) for d in FLEET):
            self.table_printed = True
            self.write("every device polled and stored:")
            for line in devices_table(snap, self.sim.port, now):
                self.write("  " + line)
        for ev in reversed(snap.events):
            key = (ev.ts, ev.host, ev.name, ev.message)
            # Events of an earlier run in the same work dir are not news.
            if key not in self.events_seen and ev.ts >= self.started - 1:
                self.events_seen.add(key)
                self.write("event: " + "  ".join(event_line(ev)))
        if now - self.last_plain >= PLAIN_EVERY:
            self.last_plain = now
            self.write(self.progress_line())

    def polled_now(self, name: str) -> bool:
        """True once a poll of ``name`` by this run is in the database."""
        state = self.snapshot.devices.get(name)
        return bool(state and state.values and state.last_ts
                    and state.last_ts >= self.started - 1)

    def write(self, line: str) -> None:
        """One line to the output, flushed (the output may be a pipe)."""
        self.out.write(line + "\n")
        self.out.flush()

    def final_view(self) -> None:
        """After the stop: the last table and events once more, in either mode."""
        snap = self.snapshot
        if self.plain:
            self.write("devices:")
            for line in devices_table(snap, self.sim.port, time.time()):
                self.write("  " + line)
            self.write("last events:")
            for line in events_table(snap.events):
                self.write("  " + line)
            self.write(f"traps: {self.traps_state}")


# ---------------------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------------------


def _fail(message: str) -> int:
    print(f"centaure demo: {message}", file=sys.stderr)
    return 1


class _Interrupted(Exception):
    """SIGTERM before the reactor runs (the reactor installs its own handlers)."""


def demo_command(args) -> int:
    """Run ``centaure demo``: 0 after a clean stop (Ctrl-C, SIGTERM, --duration), 1 on errors."""
    from connector.reactor import install_asyncio_reactor

    plain = args.plain or not sys.stdout.isatty()
    files = DemoFiles.at(args.workdir)
    sim = None

    def interrupted(*_):
        raise _Interrupted()

    previous_term = signal.signal(signal.SIGTERM, interrupted)
    try:
        from centaure.simulator import SimulatorError, find_fleet_dir, is_available

        try:
            fleet_dir = find_fleet_dir(args.fleet)
            prepare_workdir(files)
            why = is_available()
            if why:
                raise DemoError(f"snmpsim cannot run here: {why}")
            missing = [d.name for d in FLEET
                       if not os.path.exists(os.path.join(fleet_dir, d.name + ".snmprec"))]
            if missing:
                raise DemoError(f"no recording for {', '.join(missing)} in {fleet_dir}")
            print(f"centaure demo: starting the simulated fleet ({len(FLEET)} devices) "
                  f"from {fleet_dir}...", flush=True)
            from centaure.simulator import start_snmpsim

            try:
                sim = start_snmpsim(fleet_dir, tmp_dir=files.sim_dir,
                                    only=[d.name for d in FLEET], startup_timeout=60)
            except SimulatorError as e:
                # One line, then the end of snmpsim's own log (its reason).
                first, _, log = str(e).partition("\n")
                tail = [line for line in log.splitlines() if line.strip()][-10:]
                raise DemoError(f"snmpsim failed to start: {first}" + "".join(
                    f"\n  | {line}" for line in tail)) from None
            trap_port = free_port(socket.SOCK_DGRAM)
            http_port = free_port(socket.SOCK_STREAM)
            console_password(files)
            write_config(files, sim.port, trap_port, http_port, args.interval, console_port())
        except (DemoError, SimulatorError) as e:   # SimulatorError: FleetNotFound
            return _fail(str(e))

        install_asyncio_reactor()
        return _run(files, sim, trap_port, http_port, plain, args.duration)
    except (KeyboardInterrupt, _Interrupted):
        print("centaure demo: interrupted before the start; nothing was run", flush=True)
        return 0
    finally:
        if sim is not None:
            sim.stop()
            shutil.rmtree(sim.work_dir, ignore_errors=True)
        signal.signal(signal.SIGTERM, previous_term)


def _run(files: DemoFiles, sim, trap_port: int, http_port: int, plain: bool,
         duration: float | None) -> int:
    """Build and run the service tree on the reactor; print the summary."""
    from twisted.internet import reactor
    from twisted.logger import globalLogBeginner, textFileLogObserver

    from connector.service import available_connectors, makeService
    from connector.settings import SettingsError, load_settings

    before = count_rows(files.database_url)
    try:
        settings = load_settings(files.settings)
    except SettingsError as e:
        return _fail(str(e))
    connectors = [n for n in CONNECTOR_NAMES if n in available_connectors()]
    # The connectors log to a file: the screen is the view's.
    log_file = open(files.log, "a", encoding="utf-8")
    globalLogBeginner.beginLoggingTo([textFileLogObserver(log_file)], redirectStandardIO=False)
    try:
        root = makeService({"settings": settings}, connectors, "demo")
    except SystemExit as e:
        return _fail(str(e.code).removeprefix("centaure-"))
    demo = Demo(reactor, root, files, sim, trap_port, http_port, plain)
    outcome = {"code": 0}

    def start() -> None:
        try:
            demo.start()
        except Exception as e:   # a port taken since we chose it, a bad file...
            outcome["code"] = _fail(f"cannot start: {e}")
            reactor.stop()
            return
        if duration:
            reactor.callLater(duration, reactor.stop)

    reactor.callWhenRunning(start)
    reactor.addSystemEventTrigger("before", "shutdown", demo.stop)
    if not plain:
        sys.stdout.write("\x1b[2J\x1b[?25l")       # clear the screen, hide the cursor
    # reactor.run() replaces our SIGTERM handler with its own (and takes
    # SIGINT): from then on both stop the reactor, through demo.stop.
    try:
        reactor.run()
    finally:
        if not plain:
            sys.stdout.write("\x1b[?25h")          # the cursor back
            sys.stdout.flush()
    if demo.engine is not None:
        demo.engine.dispose()
    log_file.flush()
    if outcome["code"]:
        return outcome["code"]
    elapsed = time.time() - demo.started
    # Stop the simulator before the last words (the caller's finally is a no-op then).
    sim.stop()
    demo.final_view()
    samples, events = count_rows(files.database_url)
    polls = int(demo.counters()["polls"])
    print(f"centaure demo stopped after {fmt_elapsed(elapsed)}: {polls} polls; stored "
          f"{samples - before[0]:,} samples and {events - before[1]:,} events "
          f"(the database now holds {samples:,} samples and {events:,} events)")
    print(f"database: {files.database}")
    print(f"query it: centaure query -c {files.settings} router01")
    return 0


__all__ = ["FLEET", "KEY_METRICS", "Demo", "DemoError", "add_demo_arguments", "demo_command",
           "read_snapshot", "write_config"]
