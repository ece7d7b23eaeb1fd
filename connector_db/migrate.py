"""Creating and upgrading the SQL schema: Alembic migrations, configured in code.

The revisions live in :mod:`connector_db.migrations` (installed with the
package; no ``alembic.ini``). The table prefix is run-time configuration: it
is handed to the revisions in ``Config.attributes`` and Alembic's version
table is ``<prefix>alembic_version``, so layouts with different prefixes live
side by side in one database, each at its own revision.

Used by the writer at start-up (``[db] migrate = auto``: :func:`upgrade`;
``check``: :func:`check`) and by ``centaure db upgrade|current|check``
(:func:`db_command`).

Two processes upgrading at once: the upgrade runs under a lock taken on the
database (PostgreSQL: a transaction-level advisory lock, the whole upgrade
being one transaction; MySQL/MariaDB: a named ``GET_LOCK``; SQLite:
``BEGIN IMMEDIATE``, the whole upgrade in that transaction). The second one
waits, then finds the schema at head and does nothing. Other dialects get
no lock. Within one process a lock serializes upgrades too: Alembic's
``op``/``context`` proxies are process-wide.
"""

from __future__ import annotations

import functools
import hashlib
import sys
import threading
import urllib.parse
from contextlib import contextmanager
from typing import Iterator

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError

from .migrations import version_table
from .schema import PREFIX_RE

__all__ = ["SchemaOutOfDate", "MigrationLockTimeout", "upgrade", "current", "head", "check",
           "db_command", "SCRIPT_LOCATION", "LOCK_TIMEOUT"]

#: Where Alembic finds env.py and versions/ (a package resource: works installed).
SCRIPT_LOCATION = "connector_db:migrations"
#: Seconds to wait for another process's upgrade (MySQL/MariaDB, PostgreSQL).
LOCK_TIMEOUT = 300

_in_process = threading.Lock()


class SchemaOutOfDate(ValueError):
    """The database's schema is not the revision this Centaure needs."""

    def __init__(self, revision: str | None, head: str, config: str = "settings.ini",
                 message: str | None = None) -> None:
        self.revision = revision
        self.head = head
        if message is None:
            message = (f"the database schema is at revision {revision}, this Centaure needs "
                       f"{head}: run 'centaure db upgrade -c {config}'")
        super().__init__(message)


class MigrationLockTimeout(SchemaOutOfDate):
    """Another process held the upgrade lock for longer than :data:`LOCK_TIMEOUT`."""

    def __init__(self, lock: str, head: str) -> None:
        super().__init__(None, head, message=(
            f"another process has been upgrading the database schema for over "
            f"{LOCK_TIMEOUT}s (lock {lock!r} still held); try again later"))


def _check_prefix(prefix: str) -> None:
    if prefix and not PREFIX_RE.match(prefix):
        raise ValueError(f"invalid table prefix {prefix!r}: must match {PREFIX_RE.pattern}")


def _config(prefix: str, connection: sa.Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", SCRIPT_LOCATION)
    cfg.attributes["table_prefix"] = prefix
    cfg.attributes["connection"] = connection
    return cfg


@functools.cache
def _script() -> ScriptDirectory:
    return ScriptDirectory.from_config(_config(""))


@functools.cache
def _known_revisions() -> frozenset[str]:
    return frozenset(s.revision for s in _script().walk_revisions())


def head() -> str:
    """The revision this Centaure's schema is at (the newest migration)."""
    rev = _script().get_current_head()
    assert rev is not None, "no migration in connector_db/migrations/versions"
    return rev


def _current(conn: sa.Connection, prefix: str) -> str | None:
    ctx = MigrationContext.configure(conn, opts={"version_table": version_table(prefix)})
    return ctx.get_current_revision()


def current(engine: sa.Engine, prefix: str = "") -> str | None:
    """The database's revision for layout ``prefix``; None when it has no schema."""
    _check_prefix(prefix)
    with engine.connect() as conn:
        return _current(conn, prefix)


def _unknown(revision: str, target: str) -> SchemaOutOfDate:
    return SchemaOutOfDate(revision, target, message=(
        f"the database schema is at revision {revision}, which this Centaure does not know "
        f"(it needs {target}): was it upgraded by a newer Centaure?"))


def _lock_name(prefix: str) -> str:
    return f"centaure-migrate:{prefix}"  # <= 48 characters: MySQL allows 64


@contextmanager
def _locked(conn: sa.Connection, prefix: str, target: str) -> Iterator[None]:
    """Hold the upgrade lock of ``prefix`` on ``conn``, in a transaction the body commits.

    On the way out (committed or not) the transaction is rolled back if still
    open and a session lock released.
    """
    name = _lock_name(prefix)
    dialect = conn.dialect.name
    session_lock = False
    try:
        if dialect == "postgresql":
            key = int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big",
                                 signed=True)
            # lock_timeout bounds the wait (an OperationalError: LockNotAvailable).
            conn.exec_driver_sql(f"SET LOCAL lock_timeout = '{int(LOCK_TIMEOUT)}s'")
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})
        elif dialect in ("mysql", "mariadb"):
            got = conn.execute(sa.text("SELECT GET_LOCK(:n, :t)"),
                               {"n": name, "t": LOCK_TIMEOUT}).scalar()
            if got != 1:
                raise MigrationLockTimeout(name, target)
            session_lock = True
        elif dialect == "sqlite":
            # pysqlite only opens a transaction before DML itself; this one takes
            # the write lock now and holds the DDL too (SQLite DDL is transactional).
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        yield
    finally:
        try:
            if conn.in_transaction():
                conn.rollback()
            if session_lock:
                conn.execute(sa.text("SELECT RELEASE_LOCK(:n)"), {"n": name})
                conn.commit()
        except sa.exc.SQLAlchemyError:
            conn.invalidate()  # closing the session frees its lock


def upgrade(engine: sa.Engine, prefix: str = "") -> str:
    """Create the schema of layout ``prefix`` or upgrade it to head; return head.

    Idempotent: at head already, nothing is locked or written. A database at
    a revision this Centaure does not know raises :class:`SchemaOutOfDate`.
    """
    _check_prefix(prefix)
    target = head()
    with _in_process, engine.connect() as conn:
        rev = _current(conn, prefix)
        conn.rollback()
        if rev == target:
            return target
        if rev is not None and rev not in _known_revisions():
            raise _unknown(rev, target)
        with _locked(conn, prefix, target):
            # Alembic reads the revision again under the lock: after another
            # process's upgrade this is a no-op.
            command.upgrade(_config(prefix, conn), "head")
            conn.commit()
    return target


def _check(engine: sa.Engine, prefix: str, config: str) -> str:
    _check_prefix(prefix)
    rev, target = current(engine, prefix), head()
    if rev == target:
        return rev
    if rev is not None and rev not in _known_revisions():
        raise _unknown(rev, target)
    raise SchemaOutOfDate(rev, target, config)


def check(engine: sa.Engine, prefix: str = "") -> None:
    """Raise :class:`SchemaOutOfDate` unless layout ``prefix`` is at head."""
    _check(engine, prefix, "settings.ini")


def _first_line(exc: BaseException, url: str) -> str:
    text = (str(exc).strip().splitlines() or [""])[0]
    line = f"{exc.__class__.__name__}: {text}" if text else exc.__class__.__name__
    try:
        password = sa.engine.make_url(url).password
    except Exception:
        password = None
    if password and len(password) >= 3:  # a driver might echo it; shorter ones would mangle
        for form in {password, urllib.parse.quote(password, safe="")}:
            line = line.replace(form, "***")
    return line


def db_command(settings, action: str) -> int:
    """``centaure db upgrade|current|check``: print what is done; the exit code.

    Errors (database unreachable, SQL errors) are one line on stderr naming
    the database by its masked URL; the exit code is then 1, as for
    ``check`` when the schema is not at head.
    """
    from connector.settings import mask_url

    url = settings.database.url.reveal()
    shown = mask_url(url)
    prefix = settings.section("db").table_prefix
    where = f"{shown} (prefix {prefix!r})"
    name = f"centaure db {action}"
    config = settings.source or "settings.ini"

    def fail(message: str) -> int:
        print(f"{name}: {message}", file=sys.stderr)
        return 1

    try:
        engine = sa.create_engine(url)
    except (sa.exc.SQLAlchemyError, ImportError, ValueError) as e:
        return fail(f"cannot use {shown}: {_first_line(e, url)}")
    try:
        target = head()
        if action == "upgrade":
            rev = current(engine, prefix)
            if rev == target:
                print(f"{where}: schema at revision {rev}, up to date")
                return 0
            print(f"upgrading {where} from {rev} to {target}")
            print(f"schema at revision {upgrade(engine, prefix)}")
        elif action == "current":
            rev = current(engine, prefix)
            state = "up to date" if rev == target else f"this Centaure needs {target}"
            print(f"{where}: schema at revision {rev} ({state})")
        elif action == "check":
            rev = _check(engine, prefix, config)
            print(f"{where}: schema at revision {rev}, up to date")
        else:
            return fail(f"unknown action {action!r} (upgrade, current, check)")
        return 0
    except SchemaOutOfDate as e:
        return fail(str(e))
    except (sa.exc.SQLAlchemyError, CommandError, ImportError) as e:
        return fail(f"{shown}: {_first_line(e, url)}")
    finally:
        engine.dispose()
