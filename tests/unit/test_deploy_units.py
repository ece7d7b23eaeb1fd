"""The systemd units of deploy/systemd and the deployment guide that explains them."""

from __future__ import annotations

import configparser
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNITS_DIR = ROOT / "deploy" / "systemd"
PLUGINS_DIR = ROOT / "src" / "twisted" / "plugins"
GUIDE = ROOT / "docs" / "deployment.md"

#: Where the units expect the virtualenv, the settings and the state folder.
VENV_BIN = "/opt/centaure/bin/"
SETTINGS = "/etc/centaure/settings.ini"
STATE_DIR = "/var/lib/centaure"
#: The [buffer] path the guide recommends; the units must let the daemons write it.
BUFFER_PATH = "/var/lib/centaure/buffer-{connector}.sqlite3"


def plugin_names() -> list[str]:
    """Every twistd plugin name of this checkout (``centaure-snmp``...), centaure-all excluded."""
    names = []
    for path in sorted(PLUGINS_DIR.glob("centaure_*.py")):
        m = re.search(r'ServiceMaker\(\s*"(centaure-[a-z]+)"', path.read_text())
        assert m, f"{path.name} declares no ServiceMaker"
        names.append(m.group(1))
    return [n for n in names if n != "centaure-all"]


CONNECTORS = plugin_names()


def unit_path(name: str) -> Path:
    return UNITS_DIR / f"{name}.service"


def read_unit(name: str) -> configparser.ConfigParser:
    """The unit file as systemd reads it (keys kept case-sensitive; repeated keys allowed)."""
    cp = configparser.ConfigParser(strict=False, interpolation=None, empty_lines_in_values=False)
    cp.optionxform = str  # type: ignore[assignment]
    cp.read_string(unit_path(name).read_text(), source=str(unit_path(name)))
    return cp


def covered(path: str, read_write: str) -> bool:
    """True when ``path`` is inside one of the space-separated ReadWritePaths."""
    for entry in read_write.split():
        entry = entry.lstrip("-+").rstrip("/")
        if path == entry or path.startswith(entry + "/"):
            return True
    return False


def test_the_plugins_are_found():
    assert {"centaure-snmp", "centaure-traps", "centaure-db"} <= set(CONNECTORS)


@pytest.mark.parametrize("name", CONNECTORS)
def test_every_connector_has_a_unit(name):
    assert unit_path(name).is_file(), f"no deploy/systemd/{name}.service for twistd plugin {name}"


@pytest.mark.parametrize("name", CONNECTORS)
def test_unit_runs_its_own_connector(name):
    service = read_unit(name)["Service"]
    argv = shlex.split(service["ExecStart"])
    assert argv == [VENV_BIN + "twistd", "-n", "--pidfile=", name, "-c", SETTINGS]
    assert service["User"] == "centaure"
    assert service["Group"] == "centaure"
    assert service["WorkingDirectory"] == STATE_DIR


@pytest.mark.parametrize("name", CONNECTORS)
def test_unit_restarts_on_failure_but_not_forever(name):
    unit = read_unit(name)
    assert unit["Service"]["Restart"] == "on-failure"
    assert unit["Service"].get("RestartSec"), "RestartSec missing: restarts would hammer the broker"
    # A broken settings file must end in "failed", not an endless loop.
    assert int(unit["Unit"]["StartLimitBurst"]) >= 1
    assert unit["Unit"]["StartLimitIntervalSec"]
    assert int(unit["Service"]["LimitNOFILE"]) >= 65536


@pytest.mark.parametrize("name", CONNECTORS)
def test_unit_starts_after_network_and_broker(name):
    unit = read_unit(name)["Unit"]
    after = unit["After"].split()
    assert "network-online.target" in after
    assert "rabbitmq-server.service" in after
    assert "network-online.target" in unit["Wants"].split()


@pytest.mark.parametrize("name", CONNECTORS)
def test_unit_is_hardened(name):
    service = read_unit(name)["Service"]
    assert service["ProtectSystem"] == "strict"
    assert service["ProtectHome"] == "true"
    assert service["PrivateTmp"] == "true"
    assert service["NoNewPrivileges"] == "true"
    assert service["ProtectKernelTunables"] == "true"
    assert service["ProtectControlGroups"] == "true"
    assert set(service["RestrictAddressFamilies"].split()) == {"AF_INET", "AF_INET6", "AF_UNIX"}
    assert int(service["UMask"], 8) == 0o077, "buffer and SQLite files must be created 0600"
    assert service["StateDirectory"] == "centaure"


@pytest.mark.parametrize("name", CONNECTORS)
def test_unit_can_write_its_buffer_and_nothing_else(name):
    service = read_unit(name)["Service"]
    connector = name.removeprefix("centaure-")
    buffer_file = BUFFER_PATH.replace("{connector}", connector)
    assert covered(os.path.dirname(buffer_file), service["ReadWritePaths"])
    # Relative paths in settings.ini (a sqlite:/// database) land in the working directory.
    assert covered(service["WorkingDirectory"], service["ReadWritePaths"])
    for entry in service["ReadWritePaths"].split():
        assert entry.lstrip("-+").startswith(STATE_DIR), f"{entry} is writable"


@pytest.mark.parametrize("name", CONNECTORS)
def test_only_the_trap_receiver_may_bind_port_162(name):
    service = read_unit(name)["Service"]
    if name == "centaure-traps":
        assert service["AmbientCapabilities"].split() == ["CAP_NET_BIND_SERVICE"]
        assert service["CapabilityBoundingSet"].split() == ["CAP_NET_BIND_SERVICE"]
    else:
        assert "AmbientCapabilities" not in service
        # Present and empty: no capability at all.
        assert service["CapabilityBoundingSet"] == ""


def test_target_groups_every_unit():
    target = UNITS_DIR / "centaure.target"
    assert target.is_file()
    for name in CONNECTORS:
        unit = read_unit(name)
        assert "centaure.target" in unit["Unit"]["PartOf"].split()
        assert "centaure.target" in unit["Install"]["WantedBy"].split()


@pytest.mark.parametrize("name", CONNECTORS)
def test_exec_start_is_accepted_by_this_checkouts_twistd(name):
    """The plugin name and options of ExecStart are those twistd knows."""
    argv = shlex.split(read_unit(name)["Service"]["ExecStart"])
    twistd = Path(sys.executable).parent / "twistd"
    # Everything but the settings file, then --help: twistd prints the plugin's options.
    r = subprocess.run([str(twistd), *argv[1:4], "--help"], check=False,
                       capture_output=True, text=True,
                       timeout=60, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert f"{name} [options]" in r.stdout
    assert "--config=" in r.stdout


# --------------------------------------------------------------------------
# systemd-analyze verify

SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
needs_systemd_analyze = pytest.mark.skipif(SYSTEMD_ANALYZE is None,
                                           reason="systemd-analyze is not installed")


def verify(unit_file: Path, tmp_path: Path) -> list[str]:
    """Run systemd-analyze verify on a copy of ``unit_file``; return its complaints.

    verify checks that every Exec binary exists, so the copy runs this
    checkout's virtualenv instead of /opt/centaure. The other units of the
    folder are copied beside it, so that centaure.target is found.
    """
    venv_bin = str(Path(sys.executable).parent) + "/"
    assert os.access(venv_bin + "twistd", os.X_OK), f"no twistd in {venv_bin}"
    for path in UNITS_DIR.iterdir():
        if path.suffix in (".service", ".target"):
            (tmp_path / path.name).write_text(path.read_text().replace(VENV_BIN, venv_bin))
    if unit_file.parent != UNITS_DIR:
        (tmp_path / unit_file.name).write_text(unit_file.read_text().replace(VENV_BIN, venv_bin))
    copy = tmp_path / unit_file.name
    r = subprocess.run([SYSTEMD_ANALYZE, "verify", "--man=no", str(copy)],
                       check=False, capture_output=True, text=True, timeout=120)
    lines = (r.stdout + r.stderr).splitlines()
    problems = [line for line in lines if unit_file.name in line]
    if r.returncode != 0:
        problems.append(f"exit code {r.returncode}: {r.stderr.strip()}")
    return problems


@needs_systemd_analyze
@pytest.mark.parametrize("name", CONNECTORS + ["centaure.target"])
def test_systemd_accepts_the_unit(name, tmp_path):
    path = UNITS_DIR / name if name.endswith(".target") else unit_path(name)
    assert verify(path, tmp_path) == []


@needs_systemd_analyze
def test_systemd_analyze_reports_a_broken_unit(tmp_path):
    """The check above can fail: a misspelt value and an unknown key are reported."""
    broken_dir = tmp_path / "broken"
    broken_dir.mkdir()
    text = unit_path("centaure-snmp").read_text()
    text = text.replace("ProtectSystem=strict", "ProtectSystem=strictest\nRestartEverySec=1")
    broken = broken_dir / "centaure-snmp.service"
    broken.write_text(text)
    work = tmp_path / "work"
    work.mkdir()
    problems = verify(broken, work)
    assert any("ProtectSystem" in p or "protect system" in p for p in problems), problems
    assert any("RestartEverySec" in p for p in problems), problems


# --------------------------------------------------------------------------
# The deployment guide


def test_guide_names_every_unit_and_command():
    text = GUIDE.read_text()
    for name in CONNECTORS:
        assert f"{name}.service" in text
    assert "centaure.target" in text
    for command in ("centaure init", "centaure bus-config", "centaure db upgrade"):
        assert command in text, f"docs/deployment.md does not mention {command!r}"


def test_guide_recommends_the_buffer_path_the_units_allow():
    text = GUIDE.read_text()
    assert f"path = {BUFFER_PATH}" in text
