"""``centaure demo`` run for real: snmpsim, every connector, SQLite, the embedded bus.

The command runs as a subprocess, as a user runs it; its database is then
read with SQLAlchemy directly (plain SQL over the normalized tables), not
through the code under test.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest
import sqlalchemy as sa

from centaure.demo import FLEET
from tests.conftest import ROOT

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def workdir():
    """A work directory shared by the module's runs (the second run adds to the first).

    Under /tmp and mode 755: snmpsim runs as nobody, who cannot enter
    pytest's own /tmp/pytest-of-root (mode 700).
    """
    d = tempfile.mkdtemp(prefix="centaure-demo-test-")
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def demo_argv(workdir: str, *extra: str) -> list[str]:
    """The command line of the demo, as the README's ``make demo`` runs it."""
    return [sys.executable, "-m", "centaure.cli", "demo", "--workdir", workdir, "--plain", *extra]


def stored(workdir: str) -> tuple[dict[str, int], list[tuple[str, str, str]]]:
    """(samples per device, [(host, name, severity)] of the events) in the demo's database."""
    path = os.path.join(workdir, "centaure.sqlite3")
    if not os.path.exists(path):
        return {}, []
    engine = sa.create_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as conn:
            per_device = dict(conn.execute(sa.text(
                "SELECT d.name, COUNT(*) FROM (SELECT series_id FROM samples UNION ALL "
                "SELECT series_id FROM samples_text) s JOIN series se ON se.id = s.series_id "
                "JOIN devices d ON d.id = se.device_id GROUP BY d.name")).all())
            events = [tuple(r) for r in conn.execute(sa.text(
                "SELECT host, name, severity FROM events ORDER BY ts"))]
    finally:
        engine.dispose()
    return per_device, events


def responder_running(endpoint: str) -> bool:
    """True if an snmpsim process serving ``endpoint`` is still alive."""
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().decode(errors="replace")
        except OSError:
            continue
        if f"--agent-udpv4-endpoint={endpoint}" in cmdline:
            return True
    return False


def alarm_history(workdir: str, origin: str) -> list[tuple[str, str, str, str]]:
    """(host, name, severity, state) of the demo database's alarm history rows of
    ``origin``, in order; empty while the database or its tables are not there yet."""
    path = os.path.join(workdir, "centaure.sqlite3")
    if not os.path.exists(path):
        return []
    engine = sa.create_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(sa.text(
                "SELECT host, name, severity, state FROM alarm_history WHERE origin = :origin "
                "ORDER BY ts, id"), {"origin": origin})]
    except sa.exc.OperationalError:
        return []
    finally:
        engine.dispose()


PROGRESS = re.compile(r"polls \d+ \| samples stored [\d,]+ \| events stored \d+ \| "
                      r"active alarms \d+")


def everything_shown(workdir: str, out: str) -> bool:
    """True once the demo has shown and stored what a user looks for: every device
    polled, the linkDown and linkUp of its traps, a progress line, and in the database
    the trap alarm raised then cleared and the threshold rule's alarm."""
    return ("every device polled and stored" in out
            and re.search(r"^event: .*router01\s+linkUp\s+info", out, re.M) is not None
            and PROGRESS.search(out) is not None
            and len(alarm_history(workdir, "trap")) >= 2
            and bool(alarm_history(workdir, "threshold")))


def test_demo_shows_the_fleet_traps_and_alarms_then_stops_on_sigint(workdir):
    out_path = os.path.join(workdir, "sigint.out")

    def output() -> str:
        with open(out_path) as f:
            return f.read()

    with open(out_path, "w") as out_file:
        proc = subprocess.Popen(demo_argv(workdir), cwd=ROOT, stdout=out_file,
                                stderr=subprocess.STDOUT, text=True)
    try:
        # Until it is all there, however slow the machine; then Ctrl-C.
        deadline = time.monotonic() + 120
        while not everything_shown(workdir, output()):
            assert proc.poll() is None, output()
            assert time.monotonic() < deadline, output()
            time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        code = proc.wait(40)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out = output()
    assert code == 0, out
    assert "Traceback" not in out, out
    assert "stopped after" in out and "the database now holds" in out, out
    endpoint = re.search(r"snmpsim on (127\.0\.0\.1:\d+)", out).group(1)
    assert not responder_running(endpoint), f"snmpsim still serves {endpoint}"

    db = os.path.join(workdir, "centaure.sqlite3")
    assert f"database: {db}" in out
    # The web console's address and the demo operator's login are printed.
    assert re.search(r"^console: http://127\.0\.0\.1:\d+/ \(live alarms; log in as demo, "
                     r"password \S+, to ack\)$", out, re.M), out
    assert f"centaure query -c {os.path.join(workdir, 'settings.ini')} router01" in out
    # Every device of the fleet in the table, polled, with values.
    for device in FLEET:
        line = re.search(rf"^\s+{device.name}\s+.*$", out, re.M)
        assert line, f"{device.name} not in the view:\n{out}"
        assert "ago" in line.group(0) and "=" in line.group(0), line.group(0)
    assert re.search(r"upsBatteryVoltage=\d+(\.\d+)? V", out), out
    assert re.search(r"sysUpTime=", out), out
    # The traps the demo sent itself came back as events.
    assert re.search(r"^event: .*router01\s+linkDown\s+major", out, re.M), out
    assert re.search(r"^event: .*router01\s+linkUp\s+info", out, re.M), out
    assert PROGRESS.search(out), out

    per_device, events = stored(workdir)
    assert set(per_device) >= {d.name for d in FLEET}, per_device
    assert all(per_device[d.name] > 0 for d in FLEET), per_device
    assert ("router01", "linkDown", "major") in events, events
    assert ("router01", "linkUp", "info") in events, events
    # The correlator turned them into one alarm, raised then cleared, that the writer stored.
    history = [(host, name, state) for host, name, _, state in alarm_history(workdir, "trap")]
    assert history == [("router01", "linkDown", "raised"), ("router01", "linkDown", "cleared")]
    # The alerter's rule: server01 has a core at 81 %, two polls in a row -> a
    # threshold, which the correlator raised as an alarm with the rule's severity.
    breaches = alarm_history(workdir, "threshold")
    assert breaches[:1] == [("server01", "cpu-core-high", "minor", "raised")], breaches


def test_demo_runs_for_a_duration_and_adds_to_the_database(workdir):
    samples_before = sum(stored(workdir)[0].values())
    # Polled every second, so that a few seconds see every device polled.
    r = subprocess.run(demo_argv(workdir, "--duration", "6", "--interval", "1"), cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    out = r.stdout
    assert r.returncode == 0, f"stdout:\n{out}\nstderr:\n{r.stderr}"
    assert "Traceback" not in out + r.stderr, out + r.stderr
    assert "stopped after" in out and "the database now holds" in out, out
    # A second run in the same work dir adds to the database.
    per_device, _ = stored(workdir)
    assert sum(per_device.values()) > samples_before
    assert all(per_device.get(d.name, 0) > 0 for d in FLEET), per_device
