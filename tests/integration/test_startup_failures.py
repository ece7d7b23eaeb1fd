"""A daemon that cannot start says why in one line and exits non-zero, under the real twistd.

Each case runs ``twistd -n --pidfile= centaure-<name> -c settings.ini`` as an
operator (or systemd) would, and checks what they would see: a non-zero exit
code, exactly one ``centaure-<name>: cannot start: ...`` line naming the
problem, and no traceback.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import pytest

from centaure.shipped import example_path
from tests.conftest import MARIADB_URL, ROOT, settings_text
from tests.integration.daemons import BIN, TwistdDaemon

pytestmark = pytest.mark.integration

PLUGINS = ["centaure-snmp", "centaure-traps", "centaure-db", "centaure-correlator",
           "centaure-alerter", "centaure-all"]

BAD_YAML = "devices:\n  - name: [unclosed\n"


def run_twistd(plugin: str, settings: Path | str, cwd: Path, timeout: float = 90) -> tuple[int, str]:
    """(exit code, stdout + stderr) of a daemon expected to stop on its own."""
    r = subprocess.run([f"{BIN}/twistd", "-n", "--pidfile=", plugin, "-c", str(settings)],
                       cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False,
                       env=dict(os.environ, PYTHONPATH=ROOT))
    return r.returncode, r.stdout + r.stderr


def assert_one_clear_line(code: int, out: str, process: str, *expected: str) -> str:
    """Non-zero exit, one 'cannot start' line naming ``process`` and ``expected``, no traceback."""
    assert code != 0, f"exit code 0:\n{out}"
    assert "Traceback" not in out, out
    lines = [line for line in out.splitlines() if "cannot start:" in line]
    assert len(lines) == 1, f"expected one 'cannot start' line:\n{out}"
    line = lines[0]
    assert f"{process}: cannot start: " in line, line
    for text in expected:
        assert text in line, f"{text!r} not in {line!r}"
    return line


def write(tmp_path: Path, prefix: str, **extra: dict) -> Path:
    """settings.ini for ``prefix`` in ``tmp_path`` (the real broker, buffer in tmp_path)."""
    path = tmp_path / "settings.ini"
    path.write_text(settings_text(prefix, tmp_path, **extra))
    return path


# --- (a) the settings file -------------------------------------------------------


@pytest.mark.parametrize("plugin", PLUGINS)
def test_a_bad_value_is_named_with_its_file_and_section(tmp_path, prefix, plugin):
    settings = write(tmp_path, prefix, connector={"http_port": "eighty"})
    code, out = run_twistd(plugin, settings, tmp_path)
    assert_one_clear_line(code, out, plugin, "settings.ini", "[connector] http_port", "eighty")
    assert "Usage:" not in out  # the command line was right: no usage text to read through


@pytest.mark.parametrize("plugin", PLUGINS)
def test_a_missing_settings_file_is_named(tmp_path, plugin):
    code, out = run_twistd(plugin, tmp_path / "nowhere.ini", tmp_path)
    assert_one_clear_line(code, out, plugin, "nowhere.ini", "cannot read the settings file")


@pytest.mark.parametrize("plugin", ["centaure-db", "centaure-all"])
def test_an_unknown_section_is_named(tmp_path, prefix, plugin):
    settings = write(tmp_path, prefix, buffr={"path": "x"})
    code, out = run_twistd(plugin, settings, tmp_path)
    assert_one_clear_line(code, out, plugin, "[buffr]", "unknown section")


@pytest.mark.parametrize("plugin", ["centaure-snmp", "centaure-db"])
def test_an_unreadable_settings_file_is_named(tmp_path, plugin):
    # A folder where the file should be: unreadable as a file, even for root.
    (tmp_path / "settings.ini").mkdir()
    code, out = run_twistd(plugin, tmp_path / "settings.ini", tmp_path)
    assert_one_clear_line(code, out, plugin, "settings.ini", "cannot read the settings file")


# --- (b) a buffer file another daemon holds ----------------------------------------


def test_a_second_daemon_on_a_held_buffer_file_stops_and_the_first_runs_on(tmp_path, prefix):
    settings = write(tmp_path, prefix, database={"url": f"sqlite:///{tmp_path}/db.sqlite3"})
    first = TwistdDaemon("centaure-db", settings, log_name="first.log")
    try:
        # The subscriber starts once the publisher's buffer is open (and locked).
        first.wait_log("consuming", timeout=60)
        code, out = run_twistd("centaure-db", settings, tmp_path)
        assert_one_clear_line(code, out, "centaure-db", "buffer-db.sqlite3", "locked")
        # The failed open is the only error: no heartbeat complains about a full buffer.
        assert "BufferFull" not in out and "could not publish" not in out, out
        assert first.alive(), first.logs()[-3000:]
    finally:
        first.stop()
    assert "Traceback" not in first.logs()


# --- (c) a database schema the writer cannot use -----------------------------------


def test_db_with_migrate_check_on_a_database_never_upgraded_stops(tmp_path, prefix):
    table_prefix = f"sf{uuid.uuid4().hex[:8]}_"  # no table has it: never upgraded
    # The embedded bus: the check fails within milliseconds, while an AMQP
    # connection may still be opening (stopping then is another matter).
    settings = tmp_path / "settings.ini"
    settings.write_text(settings_text(prefix, tmp_path, url="embedded",
                                      database={"url": MARIADB_URL},
                                      db={"migrate": "check", "table_prefix": table_prefix}))
    code, out = run_twistd("centaure-db", settings, tmp_path)
    # It says what to run, on which settings file.
    assert_one_clear_line(code, out, "centaure-db", "centaure db upgrade -c", "settings.ini")


def test_db_with_an_unknown_database_driver_stops(tmp_path, prefix):
    settings = write(tmp_path, prefix, database={"url": "nosuchdriver://u:hunter2@h/db"})
    code, out = run_twistd("centaure-db", settings, tmp_path)
    line = assert_one_clear_line(code, out, "centaure-db", "[database] url")
    assert "hunter2" not in out, line  # the password is masked


# --- (d) a file the daemon reads at start ---------------------------------------


def _inventory(tmp_path: Path) -> str:
    path = tmp_path / "inventory.yaml"
    path.write_text("devices:\n  - name: r1\n    address: 127.0.0.1\n")
    return str(path)


def _bad_yaml(tmp_path: Path) -> str:
    path = tmp_path / "broken.yaml"
    path.write_text(BAD_YAML)
    return str(path)


CASES = {
    "snmp inventory missing": (
        "centaure-snmp", "centaure-snmp",
        lambda t: {"inventory": {"path": str(t / "missing.yaml")}},
        ("missing.yaml", "cannot read")),
    "snmp inventory not YAML": (
        "centaure-snmp", "centaure-snmp",
        lambda t: {"inventory": {"path": _bad_yaml(t)}},
        ("broken.yaml", "not valid YAML")),
    "traps definitions not YAML": (
        "centaure-traps", "centaure-traps",
        lambda t: {"inventory": {"path": _inventory(t)},
                   "traps": {"listen": "127.0.0.1:0", "definitions": _bad_yaml(t)}},
        ("broken.yaml", "not valid YAML")),
    "correlator inventory not YAML": (
        "centaure-correlator", "centaure-correlator",
        lambda t: {"inventory": {"path": _bad_yaml(t)},
                   "database": {"url": f"sqlite:///{t}/db.sqlite3"}},
        ("broken.yaml", "not valid YAML")),
    "alerter rules not YAML": (
        "centaure-alerter", "centaure-alerter",
        lambda t: {"inventory": {"path": _inventory(t)}, "alerter": {"rules": _bad_yaml(t)},
                   "database": {"url": f"sqlite:///{t}/db.sqlite3"}},
        ("broken.yaml", "not valid YAML")),
    "all: traps definitions missing": (
        "centaure-all", "centaure-traps",
        lambda t: {"inventory": {"path": _inventory(t)},
                   "snmp": {"credentials": example_path("credentials.yaml")},
                   "traps": {"listen": "127.0.0.1:0",
                             "definitions": str(t / "missing-traps.yaml")},
                   "database": {"url": f"sqlite:///{t}/db.sqlite3"}},
        ("missing-traps.yaml", "cannot read")),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_file_read_at_start_that_is_missing_or_broken_is_named(tmp_path, prefix, case):
    plugin, process, extra, expected = CASES[case]
    settings = write(tmp_path, prefix, **extra(tmp_path))
    code, out = run_twistd(plugin, settings, tmp_path)
    assert_one_clear_line(code, out, process, *expected)


@pytest.mark.parametrize("plugin, version_table, subject", [
    ("centaure-alerter", "alert_alembic_version", "the alerter's schema"),
    ("centaure-correlator", "corr_alembic_version", "the correlator's schema"),
])
def test_a_schema_newer_than_this_code_stops_the_daemon(tmp_path, prefix, plugin, version_table,
                                                        subject):
    import sqlalchemy as sa

    url = f"sqlite:///{tmp_path}/db.sqlite3"
    engine = sa.create_engine(url)
    with engine.begin() as conn:  # as a newer Centaure would leave it
        conn.execute(sa.text(f"CREATE TABLE {version_table} (version_num VARCHAR(32) PRIMARY KEY)"))
        conn.execute(sa.text(f"INSERT INTO {version_table} VALUES ('9999')"))
    engine.dispose()
    settings = tmp_path / "settings.ini"
    settings.write_text(settings_text(prefix, tmp_path, url="embedded", database={"url": url},
                                      inventory={"path": _inventory(tmp_path)}))
    code, out = run_twistd(plugin, settings, tmp_path)
    assert_one_clear_line(code, out, plugin, subject, "revision 9999")
