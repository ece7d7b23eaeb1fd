"""deploy/systemd/centaure-db-maintain.{service,timer}: the hourly ``centaure db maintain``."""

from __future__ import annotations

import configparser
import shlex
import subprocess
import sys
from pathlib import Path

from tests.unit.test_deploy_units import (SETTINGS, STATE_DIR, UNITS_DIR, VENV_BIN, covered,
                                          needs_systemd_analyze, verify)

SERVICE = UNITS_DIR / "centaure-db-maintain.service"
TIMER = UNITS_DIR / "centaure-db-maintain.timer"


def read(path: Path) -> configparser.ConfigParser:
    cp = configparser.ConfigParser(strict=False, interpolation=None, empty_lines_in_values=False)
    cp.optionxform = str  # type: ignore[assignment]
    cp.read_string(path.read_text(), source=str(path))
    return cp


def test_service_runs_one_maintenance_pass_as_centaure():
    service = read(SERVICE)["Service"]
    assert service["Type"] == "oneshot"
    assert shlex.split(service["ExecStart"]) == [
        f"{VENV_BIN}centaure", "db", "maintain", "-c", SETTINGS]
    assert service["User"] == "centaure" and service["Group"] == "centaure"
    assert service["ProtectSystem"] == "strict" and service["NoNewPrivileges"] == "true"
    assert service["CapabilityBoundingSet"] == ""
    # A SQLite database lives in the state folder: batched deletes write there.
    assert covered(STATE_DIR + "/centaure.sqlite3", service["ReadWritePaths"])


def test_timer_starts_the_service_every_hour_and_after_a_missed_run():
    timer = read(TIMER)
    assert timer["Timer"]["OnCalendar"] == "hourly"
    assert timer["Timer"]["Persistent"] == "true"
    assert timer["Timer"].get("Unit", SERVICE.name) == SERVICE.name
    assert "timers.target" in timer["Install"]["WantedBy"].split()


def test_the_command_exists_in_this_checkout():
    r = subprocess.run([sys.executable, "-m", "centaure.cli", "db", "--help"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "maintain" in r.stdout


@needs_systemd_analyze
def test_systemd_accepts_the_service_and_the_timer(tmp_path):
    assert verify(SERVICE, tmp_path) == []
    (tmp_path / TIMER.name).write_text(TIMER.read_text())
    copy = tmp_path / "timer"
    copy.mkdir()
    (copy / TIMER.name).write_text(TIMER.read_text())
    assert verify(copy / TIMER.name, tmp_path) == []
