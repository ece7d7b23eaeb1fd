"""Files Centaure creates that hold messages, state or secrets are 0600 under the usual umask.

The SQLite database (``[database] url``: samples, events, the correlator's
alarms, the alerter's outbox, silences and state) whichever command or daemon
creates it first, with its WAL and SHM files; the demo's files. ``centaure
init`` writes 0640 files in a 0750 folder: the service's group reads its
settings, others nothing.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import pytest_twisted
import sqlalchemy as sa

from centaure_shared.sql import make_engine
from connector.sqlfile import sqlite_file

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def umask_022():
    old = os.umask(0o022)  # the usual default: files 0644
    yield
    os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def centaure(tmp_path: Path, *args: str, settings: str = "") -> subprocess.CompletedProcess:
    """``centaure ARGS -c settings.ini`` as a real process started with umask 022."""
    ini = tmp_path / "settings.ini"
    ini.write_text(f"[database]\nurl = sqlite:///{tmp_path / 'centaure.sqlite3'}\n{settings}")
    return subprocess.run([sys.executable, "-m", "centaure.cli", *args, "-c", str(ini)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120, umask=0o022)


# -- the database, through the daemons' engines ------------------------------------------


def test_daemons_engine_creates_the_database_and_its_wal_0600(tmp_path, umask_022):
    path = tmp_path / "centaure.sqlite3"
    engine = make_engine(f"sqlite:///{path}")
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE samples (v INTEGER)"))
            conn.execute(sa.text("INSERT INTO samples VALUES (1)"))
        # The pooled connection stays open: the WAL is not checkpointed away.
        files = [path, Path(f"{path}-wal"), Path(f"{path}-shm")]
        assert [f.exists() for f in files] == [True, True, True]
        assert [mode(f) for f in files] == [0o600] * 3
    finally:
        engine.dispose()


def test_a_uri_database_is_created_0600_too(tmp_path, umask_022):
    path = tmp_path / "state db.sqlite3"
    engine = make_engine(f"sqlite:///file:{str(path).replace(' ', '%20')}?uri=true")
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE t (v INTEGER)"))
        assert mode(path) == 0o600
    finally:
        engine.dispose()


def test_an_existing_database_keeps_its_mode(tmp_path, umask_022):
    path = tmp_path / "centaure.sqlite3"
    path.touch()
    os.chmod(path, 0o640)  # opened to a group by the operator
    engine = make_engine(f"sqlite:///{path}")
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE t (v INTEGER)"))
        assert mode(path) == 0o640
    finally:
        engine.dispose()


@pytest.mark.parametrize("filename,uri,expected", [
    ("/var/lib/centaure/c.sqlite3", False, "/var/lib/centaure/c.sqlite3"),
    (":memory:", False, None),
    ("", False, None),
    ("file:/srv/a%20b.db?cache=shared", True, "/srv/a b.db"),
    ("file:///srv/c.db", True, "/srv/c.db"),
    ("file://localhost/srv/c.db#x", True, "/srv/c.db"),
    ("file:/srv/c.db?mode=ro", True, None),
    ("file::memory:?cache=shared", True, None),
    ("file:/srv/c.db", False, "file:/srv/c.db"),  # not a URI without uri=True: a file name
])
def test_the_file_sqlite_would_create(filename, uri, expected):
    assert sqlite_file(filename, uri) == expected


def test_memory_and_read_only_databases_create_no_file(tmp_path, monkeypatch, umask_022):
    monkeypatch.chdir(tmp_path)
    for url in ("sqlite://", f"sqlite:///file:{tmp_path / 'ro.db'}?mode=ro&uri=true"):
        engine = make_engine(url)
        try:
            with engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
        except sa.exc.OperationalError:
            pass  # mode=ro on a missing file: SQLite refuses, and creates nothing
        finally:
            engine.dispose()
    assert list(tmp_path.iterdir()) == []


# -- the database, through the commands that may create it first ------------------------


@pytest.mark.parametrize("args", [("db", "upgrade"), ("silence", "list"), ("alarms", "list")])
def test_commands_create_the_database_0600(tmp_path, args):
    r = centaure(tmp_path, *args)
    path = tmp_path / "centaure.sqlite3"
    assert path.exists(), r.stderr
    assert mode(path) == 0o600, (r.returncode, r.stderr)


@pytest_twisted.ensureDeferred
async def test_alerter_notifier_creates_its_outbox_database_0600(tmp_path, umask_022):
    from twisted.internet import reactor

    from connector.settings import load_settings
    from connector_alerter.notifier import open_notifier

    path = tmp_path / "centaure.sqlite3"
    (tmp_path / "settings.ini").write_text(f"[database]\nurl = sqlite:///{path}\n")
    n = await open_notifier(load_settings(str(tmp_path / "settings.ini")), reactor,
                            lambda _: None, source="centaure-alerter@t", tick_interval=None)
    try:
        assert mode(path) == 0o600
    finally:
        n.store.engine.dispose()


# -- the demo ----------------------------------------------------------------------------


def test_demo_files_are_0600(tmp_path, umask_022):
    from centaure.demo import DemoFiles, count_rows, prepare_workdir, write_config

    files = DemoFiles.at(str(tmp_path / "demo"))
    prepare_workdir(files)
    stale = Path(files.workdir) / "credentials.yaml"
    stale.write_text("default: {}\n")
    os.chmod(stale, 0o644)  # left by an older version
    write_config(files, sim_port=16100, trap_port=16200, http_port=18080, interval=5)
    # The demo counts the rows before its writer starts: that creates the database.
    assert count_rows(files.database_url) == (0, 0)
    written = {name: mode(os.path.join(files.workdir, name)) for name in
               ("settings.ini", "inventory.yaml", "credentials.yaml", "rules.yaml",
                "centaure.sqlite3")}
    assert written == dict.fromkeys(written, 0o600)
    assert "community: __name__" in stale.read_text()


# -- centaure init -----------------------------------------------------------------------


def test_init_files_are_0640_in_a_0750_folder(tmp_path, umask_022):
    from centaure.init import write_starter

    target = tmp_path / "etc-centaure"
    written = write_starter(str(target))
    assert "settings.ini" in {os.path.basename(p) for p in written}
    assert {mode(p) for p in written} == {0o640}
    assert {mode(d) for d in [target, *(p for p in target.rglob("*") if p.is_dir())]} == {0o750}
