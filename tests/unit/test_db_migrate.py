"""Schema creation and upgrades by the Alembic migrations, on SQLite files.

The same checks against MariaDB and PostgreSQL are in
tests/integration/test_db_migrate_sql.py (which reuses the helpers here).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from connector_db import migrate
from connector_db.migrate import SchemaOutOfDate
from centaure_shared.storage.schema import create_all, make_schema

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def new_prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}_"


# PostgreSQL lists the time partitions of a table as tables of their own.
_PARTITION_RE = re.compile(r"_p(?:[0-9]{8}_[0-9]{4}|default)$")


def is_partition(name: str) -> bool:
    """True for a PostgreSQL time partition (dropped with its table)."""
    return bool(_PARTITION_RE.search(name))


def tables(engine, prefix: str) -> set[str]:
    """The tables of layout ``prefix`` (time partitions left out)."""
    with engine.connect() as c:
        return {n for n in sa.inspect(c).get_table_names()
                if n.startswith(prefix) and not is_partition(n)}


def drop_prefixed(engine, prefix: str) -> None:
    """Drop every table named ``prefix...`` (the version table too); assert none is left."""
    md = sa.MetaData()
    md.reflect(engine, only=lambda name, _md: name.startswith(prefix) and not is_partition(name))
    md.drop_all(engine)
    left = tables(engine, prefix)
    assert not left, left


@contextmanager
def prefixed_engine(url: str, **engine_options) -> Iterator[tuple[sa.Engine, str]]:
    """An engine on ``url`` and a fresh table prefix; every table of the prefix dropped after."""
    engine = sa.create_engine(url, **engine_options)
    prefix = new_prefix()
    try:
        yield engine, prefix
    finally:
        try:
            drop_prefixed(engine, prefix)
        finally:
            engine.dispose()


def migrated_columns_on_mariadb(url: str, upgrade) -> tuple[str, dict]:
    """Upgrade a fresh prefix with ``upgrade``; (prefix, {(table, column): (collation, type)}).

    The tables are dropped before returning: only the description is kept.
    """
    with prefixed_engine(url) as (engine, p):
        upgrade(engine, p)
        with engine.connect() as c:
            return p, {(r.tbl, r.col): (r.collation_name, r.column_type) for r in c.execute(
                sa.text("SELECT table_name AS tbl, column_name AS col, collation_name, "
                        "column_type FROM information_schema.columns "
                        "WHERE table_schema = DATABASE() AND table_name LIKE :like"),
                {"like": f"{p}%"})}


def schema_diffs(engine, prefix: str) -> list:
    """What Alembic's autogenerate finds between the database and make_schema(prefix).

    Only this prefix's tables are looked at (other layouts may share the
    database), and its version table is Alembic's own.
    """
    with engine.connect() as c:
        ctx = MigrationContext.configure(c, opts={
            "compare_type": True,
            "version_table": f"{prefix}alembic_version",
            "include_name": lambda name, type_, parent: type_ != "table" or (
                name.startswith(prefix) and not is_partition(name)),
        })
        return compare_metadata(ctx, make_schema(prefix).metadata)


def describe(engine, prefix: str) -> dict:
    """The reflected layout ``prefix``, names given without the prefix.

    Compared between a migrated layout and a create_all one, this catches
    what autogenerate does not compare on MySQL/MariaDB (UNSIGNED, column
    collations, table options) and elsewhere (server defaults such as
    PostgreSQL's sequences, auto-increment).
    """
    def strip(s):
        return s.replace(prefix, "<p>") if isinstance(s, str) else s

    out = {}
    with engine.connect() as c:
        insp = sa.inspect(c)
        for t in sorted(n for n in insp.get_table_names()
                        if n.startswith(prefix) and not is_partition(n)):
            if t == f"{prefix}alembic_version":
                continue
            pk = insp.get_pk_constraint(t)
            out[strip(t)] = {
                "columns": [(col["name"], col["type"].compile(dialect=engine.dialect),
                             col["nullable"], strip(col.get("default")),
                             col.get("autoincrement"), col.get("comment"))
                            for col in insp.get_columns(t)],
                "pk": (strip(pk.get("name")), tuple(pk["constrained_columns"])),
                "unique": sorted((strip(u["name"]), tuple(u["column_names"]))
                                 for u in insp.get_unique_constraints(t)),
                "indexes": sorted((strip(i["name"]), tuple(i["column_names"]), bool(i["unique"]))
                                  for i in insp.get_indexes(t)),
                # Time partitions are the migrations' (create_all makes none).
                "options": {k: v for k, v in insp.get_table_options(t).items()
                            if "partition" not in k},
            }
    return out


def assert_same_as_create_all(engine, prefix: str) -> None:
    """The migrated layout ``prefix`` reflects exactly as make_schema's create_all."""
    other = new_prefix()
    try:
        create_all(engine, make_schema(other))
        migrated, reference = describe(engine, prefix), describe(engine, other)
    finally:
        drop_prefixed(engine, other)
    assert sorted(migrated) == sorted(reference)
    for name in reference:
        assert migrated[name] == reference[name], name


class Statements:
    """The SQL an engine runs while recording."""

    def __init__(self, engine) -> None:
        self.engine = engine
        self.seen: list[str] = []

    def _record(self, conn, cursor, statement, parameters, context, executemany):
        self.seen.append(statement.strip())

    def __enter__(self):
        sa.event.listen(self.engine, "before_cursor_execute", self._record)
        return self

    def __exit__(self, *exc):
        sa.event.remove(self.engine, "before_cursor_execute", self._record)

    def writes(self) -> list[str]:
        """Everything that is not a read (DDL, DML, locks)."""
        return [s for s in self.seen
                if not s.upper().startswith(("SELECT", "PRAGMA", "SHOW", "DESCRIBE", "WITH"))]


@pytest.fixture
def engine(tmp_path):
    e = sa.create_engine(f"sqlite:///{tmp_path / 'centaure.sqlite3'}")
    yield e
    e.dispose()


@pytest.fixture
def tprefix(engine):
    p = new_prefix()
    yield p
    drop_prefixed(engine, p)


def test_head_is_the_newest_revision():
    assert migrate.head() == "0005"


def test_upgrade_from_empty_creates_every_table(engine, tprefix):
    assert migrate.current(engine, tprefix) is None
    assert tables(engine, tprefix) == set()
    assert migrate.upgrade(engine, tprefix) == migrate.head()
    assert tables(engine, tprefix) == (set(make_schema(tprefix).metadata.tables)
                                       | {f"{tprefix}alembic_version"})
    assert migrate.current(engine, tprefix) == migrate.head()
    with engine.connect() as c:
        assert c.execute(sa.text(f"SELECT version_num FROM {tprefix}alembic_version")).all() == [
            ("0005",)]


def test_migrated_schema_is_make_schema(engine, tprefix):
    migrate.upgrade(engine, tprefix)
    assert schema_diffs(engine, tprefix) == []
    assert_same_as_create_all(engine, tprefix)


def test_diff_check_sees_a_schema_change(engine, tprefix):
    """The no-diff check is not vacuous: what the database lacks shows."""
    migrate.upgrade(engine, tprefix)
    with engine.begin() as c:
        c.execute(sa.text(f"DROP INDEX {tprefix}ix_events_ts"))
    diffs = schema_diffs(engine, tprefix)
    assert [d[0] for d in diffs] == ["add_index"] and diffs[0][1].name == f"{tprefix}ix_events_ts"


def test_upgrade_twice_is_a_no_op(engine, tprefix):
    migrate.upgrade(engine, tprefix)
    with engine.begin() as c:
        c.execute(make_schema(tprefix).devices.insert().values(name="r1"))
    with Statements(engine) as sql:
        assert migrate.upgrade(engine, tprefix) == "0005"
    assert sql.seen and sql.writes() == []
    assert migrate.current(engine, tprefix) == "0005"
    with engine.connect() as c:
        assert c.execute(sa.text(f"SELECT name FROM {tprefix}devices")).all() == [("r1",)]
        assert c.execute(sa.text(f"SELECT count(*) FROM {tprefix}alembic_version")).scalar() == 1


def test_check_raises_until_upgraded(engine, tprefix):
    with pytest.raises(SchemaOutOfDate) as info:
        migrate.check(engine, tprefix)
    assert isinstance(info.value, ValueError)
    assert info.value.revision is None and info.value.head == "0005"
    assert str(info.value) == ("the database schema is at revision None, this Centaure needs "
                               "0005: run 'centaure db upgrade -c settings.ini'")
    migrate.upgrade(engine, tprefix)
    assert migrate.check(engine, tprefix) is None


def test_unknown_revision_is_refused(engine, tprefix):
    """A database upgraded by a newer Centaure: neither upgraded nor accepted."""
    migrate.upgrade(engine, tprefix)
    with engine.begin() as c:
        c.execute(sa.text(f"UPDATE {tprefix}alembic_version SET version_num = '9999'"))
    for fn in (migrate.upgrade, migrate.check):
        with pytest.raises(SchemaOutOfDate, match="revision 9999, which this Centaure does not know"):
            fn(engine, tprefix)
    assert migrate.current(engine, tprefix) == "9999"


def test_bad_prefix_is_refused(engine):
    for fn in (migrate.upgrade, migrate.current, migrate.check):
        with pytest.raises(ValueError, match="invalid table prefix"):
            fn(engine, "X; DROP TABLE")


def test_two_prefixes_side_by_side(engine):
    a, b = new_prefix(), new_prefix()
    try:
        migrate.upgrade(engine, a)
        assert migrate.current(engine, b) is None
        with pytest.raises(SchemaOutOfDate):
            migrate.check(engine, b)
        with engine.begin() as c:
            c.execute(make_schema(a).devices.insert().values(name="only-in-a"))
        assert migrate.upgrade(engine, b) == "0005"
        assert tables(engine, a) == {t.replace(b, a, 1) for t in tables(engine, b)}
        assert schema_diffs(engine, a) == [] and schema_diffs(engine, b) == []
        with engine.connect() as c:
            assert c.execute(sa.select(sa.func.count()).select_from(
                make_schema(b).devices)).scalar() == 0
        # Taking layout b down (its migration's downgrade) leaves a alone.
        with engine.connect() as c:
            command.downgrade(migrate._config(b, c), "base")
            c.commit()
        assert tables(engine, b) == {f"{b}alembic_version"}
        assert migrate.current(engine, b) is None
        assert migrate.current(engine, a) == "0005" and schema_diffs(engine, a) == []
        with engine.connect() as c:
            assert c.execute(sa.text(f"SELECT name FROM {a}devices")).all() == [("only-in-a",)]
        # ... and it comes back by upgrading again.
        migrate.upgrade(engine, b)
        assert schema_diffs(engine, b) == []
    finally:
        drop_prefixed(engine, a)
        drop_prefixed(engine, b)


def run_concurrent_upgrades(url: str, prefix: str, n: int = 4,
                            module: str = "connector_db.migrate") -> list[str]:
    """``n`` processes upgrading the same layout at once with ``module``'s ``upgrade``;
    their outputs (each must succeed)."""
    code = (f"import sys, sqlalchemy as sa; from {module} import upgrade; "
            "e = sa.create_engine(sys.argv[1]); print(upgrade(e, sys.argv[2]))")
    procs = [subprocess.Popen([sys.executable, "-c", code, url, prefix], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(n)]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        outs.append(out.strip())
    return outs


def test_processes_upgrading_at_once(engine, tprefix):
    assert run_concurrent_upgrades(str(engine.url), tprefix) == ["0005"] * 4
    assert schema_diffs(engine, tprefix) == []
    with engine.connect() as c:
        assert c.execute(sa.text(f"SELECT version_num FROM {tprefix}alembic_version")).all() == [
            ("0005",)]


# -- the centaure db command, as a real process ---------------------------------------------


def centaure(tmp_path, url: str, *args: str, prefix: str = "x_") -> subprocess.CompletedProcess:
    ini = tmp_path / "settings.ini"
    ini.write_text(f"[database]\nurl = {url}\n\n[db]\ntable_prefix = {prefix}\n")
    return subprocess.run([sys.executable, "-m", "centaure.cli", *args, "-c", str(ini)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_db_command(tmp_path, engine):
    url = str(engine.url)
    try:
        r = centaure(tmp_path, url, "db", "current")
        assert (r.returncode, r.stderr) == (0, "")
        assert r.stdout == f"{url} (prefix 'x_'): schema at revision None (this Centaure needs 0005)\n"

        r = centaure(tmp_path, url, "db", "check")
        assert r.returncode == 1 and r.stdout == ""
        assert r.stderr == ("centaure db check: the database schema is at revision None, this "
                            f"Centaure needs 0005: run 'centaure db upgrade -c "
                            f"{tmp_path / 'settings.ini'}'\n")

        r = centaure(tmp_path, url, "db", "upgrade")
        assert (r.returncode, r.stderr) == (0, "")
        assert r.stdout == (f"upgrading {url} (prefix 'x_') from None to 0005\n"
                            "schema at revision 0005\n")
        assert migrate.current(engine, "x_") == "0005" and schema_diffs(engine, "x_") == []

        r = centaure(tmp_path, url, "db", "upgrade")
        assert (r.returncode, r.stderr) == (0, "")
        assert r.stdout == f"{url} (prefix 'x_'): schema at revision 0005, up to date\n"

        r = centaure(tmp_path, url, "db", "current")
        assert (r.returncode, r.stderr) == (0, "")
        assert r.stdout == f"{url} (prefix 'x_'): schema at revision 0005 (up to date)\n"

        r = centaure(tmp_path, url, "db", "check")
        assert (r.returncode, r.stderr) == (0, "")
        assert r.stdout == f"{url} (prefix 'x_'): schema at revision 0005, up to date\n"

        # the default prefix '' is another layout, not created yet
        r = centaure(tmp_path, url, "db", "check", prefix="")
        assert r.returncode == 1 and "revision None" in r.stderr
    finally:
        drop_prefixed(engine, "x_")


@pytest.mark.parametrize("action", ["upgrade", "current", "check"])
def test_db_command_unreachable_database(tmp_path, action):
    r = centaure(tmp_path, "mysql+pymysql://root:secretpw@127.0.0.1:1/test", "db", action)
    assert r.returncode == 1
    assert r.stdout == ""
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith(f"centaure db {action}: mysql+pymysql://root:***@127.0.0.1:1/test: "
                               "OperationalError: ")
    assert "Can't connect" in lines[0]
    assert "secretpw" not in r.stdout + r.stderr
    assert "Traceback" not in r.stderr


def test_db_command_unusable_url(tmp_path):
    missing = tmp_path / "no" / "such" / "dir" / "db.sqlite3"
    r = centaure(tmp_path, f"sqlite:///{missing}", "db", "upgrade")
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.startswith(f"centaure db upgrade: sqlite:///{missing}: OperationalError: ")
    assert len(r.stderr.splitlines()) == 1


def test_revisions_are_frozen_copies():
    """A revision imports nothing that a later change could alter under it: only the
    standard library, SQLAlchemy, Alembic and the stable column types and prefix of
    centaure_shared.sql (a helper of connector_db changed later would change an applied
    revision)."""
    import ast
    import pathlib

    allowed = {"__future__", "re", "time", "datetime", "collections.abc", "typing",
               "sqlalchemy", "alembic", "centaure_shared.sql"}
    versions = pathlib.Path(ROOT, "src", "connector_db", "migrations", "versions")
    files = sorted(versions.glob("[0-9]*.py"))
    assert len(files) >= 4
    for f in files:
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom):
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            assert set(names) <= allowed, (f.name, names)
