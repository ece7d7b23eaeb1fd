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
                "SELECT d.name, COUNT(*) FROM samples s JOIN devices d ON d.id = s.device_id "
                "GROUP BY d.name")).all())
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


def test_demo_runs_for_a_duration(workdir):
    r = subprocess.run(demo_argv(workdir, "--duration", "25"), cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    out = r.stdout
    assert r.returncode == 0, f"stdout:\n{out}\nstderr:\n{r.stderr}"
    assert "Traceback" not in out + r.stderr, out + r.stderr

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
    assert re.search(r"polls \d+ \| samples stored [\d,]+ \| events stored \d+ \| "
                     r"active alarms \d+", out), out
    assert "stopped after" in out

    per_device, events = stored(workdir)
    assert set(per_device) >= {d.name for d in FLEET}, per_device
    assert all(per_device[d.name] > 0 for d in FLEET), per_device
    assert ("router01", "linkDown", "major") in events, events
    assert ("router01", "linkUp", "info") in events, events
    # The correlator turned them into one alarm, raised then cleared, that the writer stored.
    engine = sa.create_engine(f"sqlite:///{os.path.join(workdir, 'centaure.sqlite3')}")
    try:
        with engine.connect() as conn:
            history = [tuple(r) for r in conn.execute(sa.text(
                "SELECT host, name, state FROM alarm_history WHERE origin = 'trap' "
                "ORDER BY ts, id"))]
    finally:
        engine.dispose()
    assert history == [("router01", "linkDown", "raised"), ("router01", "linkDown", "cleared")]
    # The alerter's rule: server01 has a core at 81 %, two polls in a row -> a
    # threshold, which the correlator raised as an alarm with the rule's severity.
    with engine.connect() as conn:
        breaches = [tuple(r) for r in conn.execute(sa.text(
            "SELECT host, name, severity, state FROM alarm_history "
            "WHERE origin = 'threshold' ORDER BY ts, id"))]
    engine.dispose()
    assert breaches[:1] == [("server01", "cpu-core-high", "minor", "raised")], breaches


def test_demo_stops_cleanly_on_sigint(workdir):
    samples_before = sum(stored(workdir)[0].values())
    out_path = os.path.join(workdir, "sigint.out")
    with open(out_path, "w") as out_file:
        proc = subprocess.Popen(demo_argv(workdir), cwd=ROOT, stdout=out_file,
                                stderr=subprocess.STDOUT, text=True)
        try:
            deadline = time.monotonic() + 60
            while "every device polled and stored" not in open(out_path).read():
                assert proc.poll() is None, open(out_path).read()
                assert time.monotonic() < deadline, open(out_path).read()
                time.sleep(0.3)
            proc.send_signal(signal.SIGINT)
            code = proc.wait(40)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    out = open(out_path).read()
    assert code == 0, out
    assert "Traceback" not in out, out
    assert "stopped after" in out and "the database now holds" in out, out
    endpoint = re.search(r"snmpsim on (127\.0\.0\.1:\d+)", out).group(1)
    assert not responder_running(endpoint), f"snmpsim still serves {endpoint}"
    # A second run in the same work dir adds to the database.
    per_device, _ = stored(workdir)
    assert sum(per_device.values()) > samples_before
    assert all(per_device.get(d.name, 0) > 0 for d in FLEET), per_device
