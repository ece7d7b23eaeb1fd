"""Alembic migrations configured in code, for any Centaure table layout.

A :class:`Migrations` is one revision history (a package of revisions, e.g.
``connector_db:migrations`` for the SQL writer, ``connector_alarms:migrations``
for the correlator) applied under a run-time table prefix. Each layout keeps
its own Alembic version table, ``<prefix>alembic_version``, so layouts with
different prefixes live side by side in one database, each at its own
revision. The prefix reaches the revisions in ``Config.attributes``
(``"table_prefix"``), with the version table (``"version_table"``) and the
connection (``"connection"``): the history's ``env.py`` calls :func:`run_env`.

Two processes upgrading at once: the upgrade runs under a lock taken on the
database (PostgreSQL: a transaction-level advisory lock, the whole upgrade
being one transaction; MySQL/MariaDB: a named ``GET_LOCK``; SQLite:
``BEGIN IMMEDIATE``, the whole upgrade in that transaction). The second one
waits, then finds the schema at head and does nothing. Other dialects get
no lock. Within one process a lock shared by every history serializes
upgrades too: Alembic's ``op``/``context`` proxies are process-wide.

:func:`migration_command` is the body of a ``centaure ... upgrade|current|check``
command: what it prints, one-line errors with the password masked.
"""

from __future__ import annotations

import functools
import hashlib
import re
import sys
import threading
import urllib.parse
from contextlib import contextmanager
from typing import Callable, Iterator

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError

__all__ = ["Migrations", "SchemaOutOfDate", "MigrationLockTimeout", "LOCK_TIMEOUT",
           "VERSION_TABLE", "version_table", "run_env", "migration_command", "error_line"]

#: Seconds to wait for another process's upgrade (MySQL/MariaDB, PostgreSQL).
LOCK_TIMEOUT = 300
#: Name of Alembic's version table, after the prefix.
VERSION_TABLE = "alembic_version"

# One lock for every history: Alembic's op/context proxies are process-wide.
_in_process = threading.Lock()


def version_table(prefix: str) -> str:
    """The version table of the layout ``prefix``."""
    return f"{prefix}{VERSION_TABLE}"


class SchemaOutOfDate(ValueError):
    """The database's schema is not the revision this Centaure needs.

    Without ``message``, the wording is the SQL writer's (kept for callers of
    :mod:`connector_db.migrate`); :class:`Migrations` always passes its own.
    """

    def __init__(self, revision: str | None, head: str, config: str = "settings.ini",
                 message: str | None = None) -> None:
        self.revision = revision
        self.head = head
        if message is None:
            message = (f"the database schema is at revision {revision}, this Centaure needs "
                       f"{head}: run 'centaure db upgrade -c {config}'")
        super().__init__(message)


class MigrationLockTimeout(SchemaOutOfDate):
    """Another process held the upgrade lock for longer than the lock timeout."""

    def __init__(self, lock: str, head: str, subject: str = "the database schema",
                 timeout: float = LOCK_TIMEOUT) -> None:
        super().__init__(None, head, message=(
            f"another process has been upgrading {subject} for over "
            f"{timeout:g}s (lock {lock!r} still held); try again later"))


class Migrations:
    """One revision history, applied to layouts named by a table prefix.

    ``script_location`` is Alembic's (a package resource such as
    ``"connector_db:migrations"``: works installed, no ``alembic.ini``);
    ``lock_namespace`` names the database lock (``<namespace>:<prefix>``, at
    most 64 characters for MySQL); ``prefix_re`` validates prefixes (the
    empty prefix is always allowed); ``subject`` names the schema in messages
    ("the database schema"); ``upgrade_hint(config)`` tells how to upgrade
    ("run 'centaure db upgrade -c settings.ini'"); ``unknown_hint`` ends the
    message about a revision this history does not know.
    """

    def __init__(self, script_location: str, *, lock_namespace: str, prefix_re: re.Pattern,
                 subject: str, upgrade_hint: Callable[[str], str],
                 unknown_hint: str = "was it upgraded by a newer Centaure?",
                 lock_timeout: float = LOCK_TIMEOUT) -> None:
        self.script_location = script_location
        self.lock_namespace = lock_namespace
        self.prefix_re = prefix_re
        self.subject = subject
        self.upgrade_hint = upgrade_hint
        self.unknown_hint = unknown_hint
        self.lock_timeout = lock_timeout

    # --- configuration ------------------------------------------------------------

    def check_prefix(self, prefix: str) -> None:
        """Raise ValueError unless ``prefix`` is empty or matches ``prefix_re``."""
        if prefix and not self.prefix_re.match(prefix):
            raise ValueError(
                f"invalid table prefix {prefix!r}: must match {self.prefix_re.pattern}")

    def config(self, prefix: str, connection: sa.Connection | None = None) -> Config:
        """Alembic's Config for layout ``prefix`` on ``connection`` (the caller's transaction)."""
        self.check_prefix(prefix)
        cfg = Config()
        cfg.set_main_option("script_location", self.script_location)
        cfg.attributes["table_prefix"] = prefix
        cfg.attributes["version_table"] = version_table(prefix)
        cfg.attributes["connection"] = connection
        return cfg

    @functools.cached_property
    def script(self) -> ScriptDirectory:
        """The revisions (read once)."""
        return ScriptDirectory.from_config(self.config(""))

    @functools.cached_property
    def known_revisions(self) -> frozenset[str]:
        """Every revision id of this history."""
        return frozenset(s.revision for s in self.script.walk_revisions())

    def head(self) -> str:
        """The revision this Centaure's schema is at (the newest migration)."""
        rev = self.script.get_current_head()
        assert rev is not None, f"no migration in {self.script_location}"
        return rev

    # --- reading ------------------------------------------------------------------

    def current_on(self, conn: sa.Connection, prefix: str) -> str | None:
        """The revision of layout ``prefix`` read on ``conn``; None when it has no schema."""
        ctx = MigrationContext.configure(conn, opts={"version_table": version_table(prefix)})
        return ctx.get_current_revision()

    def current(self, engine: sa.Engine, prefix: str = "") -> str | None:
        """The database's revision for layout ``prefix``; None when it has no schema."""
        self.check_prefix(prefix)
        with engine.connect() as conn:
            return self.current_on(conn, prefix)

    def unknown(self, revision: str, target: str) -> SchemaOutOfDate:
        """The error for a revision this history does not know."""
        return SchemaOutOfDate(revision, target, message=(
            f"{self.subject} is at revision {revision}, which this Centaure does not know "
            f"(it needs {target}): {self.unknown_hint}"))

    def check(self, engine: sa.Engine, prefix: str = "", config: str = "settings.ini") -> str:
        """The revision of layout ``prefix`` if at head, else raise :class:`SchemaOutOfDate`.

        ``config`` is the settings file named in the message's upgrade hint.
        """
        self.check_prefix(prefix)
        rev, target = self.current(engine, prefix), self.head()
        if rev == target:
            return rev
        if rev is not None and rev not in self.known_revisions:
            raise self.unknown(rev, target)
        raise SchemaOutOfDate(rev, target, config, message=(
            f"{self.subject} is at revision {rev}, this Centaure needs {target}: "
            f"{self.upgrade_hint(config)}"))

    # --- upgrading ----------------------------------------------------------------

    def lock_name(self, prefix: str) -> str:
        """The database lock's name for layout ``prefix``."""
        return f"{self.lock_namespace}:{prefix}"

    @contextmanager
    def locked(self, conn: sa.Connection, prefix: str, target: str) -> Iterator[None]:
        """Hold the upgrade lock of ``prefix`` on ``conn``, in a transaction the body commits.

        On the way out (committed or not) the transaction is rolled back if
        still open and a session lock released.
        """
        name = self.lock_name(prefix)
        dialect = conn.dialect.name
        session_lock = False
        try:
            if dialect == "postgresql":
                key = int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(),
                                     "big", signed=True)
                # lock_timeout bounds the wait (an OperationalError: LockNotAvailable).
                conn.exec_driver_sql(f"SET LOCAL lock_timeout = '{int(self.lock_timeout)}s'")
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})
            elif dialect in ("mysql", "mariadb"):
                got = conn.execute(sa.text("SELECT GET_LOCK(:n, :t)"),
                                   {"n": name, "t": self.lock_timeout}).scalar()
                if got != 1:
                    raise MigrationLockTimeout(name, target, self.subject, self.lock_timeout)
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

    def upgrade(self, engine: sa.Engine, prefix: str = "") -> str:
        """Create the schema of layout ``prefix`` or upgrade it to head; return head.

        Idempotent: at head already, nothing is locked or written. A database
        at a revision this history does not know raises :class:`SchemaOutOfDate`.
        """
        self.check_prefix(prefix)
        target = self.head()
        with _in_process, engine.connect() as conn:
            rev = self.current_on(conn, prefix)
            conn.rollback()
            if rev == target:
                return target
            if rev is not None and rev not in self.known_revisions:
                raise self.unknown(rev, target)
            with self.locked(conn, prefix, target):
                # Alembic reads the revision again under the lock: after another
                # process's upgrade this is a no-op.
                command.upgrade(self.config(prefix, conn), "head")
                conn.commit()
        return target


def run_env() -> None:
    """The body of a history's ``env.py``: run its revisions on the handed-over connection.

    The caller (:meth:`Migrations.upgrade`, or a test with
    :meth:`Migrations.config`) owns the connection, its transaction and its
    lock; this only points Alembic at the prefixed version table.
    """
    from alembic import context

    if context.is_offline_mode():
        raise RuntimeError("Centaure's migrations run on a live connection only, "
                           "not in offline --sql mode")
    attributes = context.config.attributes
    connection = attributes.get("connection")
    if connection is None:
        raise RuntimeError("run Centaure's migrations through connector.sqlmigrate.Migrations, "
                           "which hands over the connection")
    context.configure(connection=connection, target_metadata=None,
                      version_table=attributes["version_table"])
    with context.begin_transaction():
        context.run_migrations()


def error_line(exc: BaseException, url: str) -> str:
    """``Class: first line of the message``, the URL's password masked if a driver echoed it."""
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


def migration_command(migrations: Migrations, name: str, url: str, prefix: str, action: str,
                      config: str = "settings.ini") -> int:
    """``<name> upgrade|current|check`` on layout ``prefix`` of ``url``; the exit code.

    Prints what is done. Errors (database unreachable, SQL errors, a schema
    not at head for ``check``) are one line on stderr naming the database by
    its masked URL, and the exit code is then 1.
    """
    from connector.settings import mask_url
    from connector.sqlfile import private_sqlite

    shown = mask_url(url)
    where = f"{shown} (prefix {prefix!r})"

    def fail(message: str) -> int:
        print(f"{name}: {message}", file=sys.stderr)
        return 1

    try:
        engine = private_sqlite(sa.create_engine(url))
    except (sa.exc.SQLAlchemyError, ImportError, ValueError) as e:
        return fail(f"cannot use {shown}: {error_line(e, url)}")
    try:
        target = migrations.head()
        if action == "upgrade":
            rev = migrations.current(engine, prefix)
            if rev == target:
                print(f"{where}: schema at revision {rev}, up to date")
                return 0
            print(f"upgrading {where} from {rev} to {target}")
            print(f"schema at revision {migrations.upgrade(engine, prefix)}")
        elif action == "current":
            rev = migrations.current(engine, prefix)
            state = "up to date" if rev == target else f"this Centaure needs {target}"
            print(f"{where}: schema at revision {rev} ({state})")
        elif action == "check":
            rev = migrations.check(engine, prefix, config)
            print(f"{where}: schema at revision {rev}, up to date")
        else:
            return fail(f"unknown action {action!r} (upgrade, current, check)")
        return 0
    except SchemaOutOfDate as e:
        return fail(str(e))
    except (sa.exc.SQLAlchemyError, CommandError, ImportError) as e:
        return fail(f"{shown}: {error_line(e, url)}")
    finally:
        engine.dispose()
