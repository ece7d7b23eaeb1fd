"""Creating and upgrading the SQL schema: Alembic migrations, configured in code.

The revisions live in :mod:`connector_db.migrations` (installed with the
package; no ``alembic.ini``). The table prefix is run-time configuration: it
is handed to the revisions in ``Config.attributes`` and Alembic's version
table is ``<prefix>alembic_version``, so layouts with different prefixes live
side by side in one database, each at its own revision.

Used by the writer at start-up (``[db] migrate = auto``: :func:`upgrade`;
``check``: :func:`check`) and by ``centaure db upgrade|current|check``
(:func:`db_command`).

The machinery (locks against concurrent upgrades, configuration, the
command's output and errors) is :mod:`connector.sqlmigrate`'s, shared with
the correlator's tables (:mod:`connector_alarms.migrate`): two processes
upgrading at once wait for each other on a database lock (PostgreSQL
advisory lock, MySQL/MariaDB ``GET_LOCK``, SQLite ``BEGIN IMMEDIATE``).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic.config import Config

from connector.sqlmigrate import (LOCK_TIMEOUT, MigrationLockTimeout, Migrations, SchemaOutOfDate,
                                  migration_command)

from centaure_shared.sql import PREFIX_RE

__all__ = ["SchemaOutOfDate", "MigrationLockTimeout", "upgrade", "current", "head", "check",
           "db_command", "SCRIPT_LOCATION", "LOCK_TIMEOUT", "MIGRATIONS"]

#: Where Alembic finds env.py and versions/ (a package resource: works installed).
SCRIPT_LOCATION = "connector_db:migrations"

#: The SQL writer's revision history.
MIGRATIONS = Migrations(
    SCRIPT_LOCATION, lock_namespace="centaure-migrate", prefix_re=PREFIX_RE,
    subject="the database schema",
    upgrade_hint=lambda config: f"run 'centaure db upgrade -c {config}'")


def _config(prefix: str, connection: sa.Connection | None = None) -> Config:
    """Alembic's Config for layout ``prefix`` (tests run downgrades with it)."""
    return MIGRATIONS.config(prefix, connection)


def head() -> str:
    """The revision this Centaure's schema is at (the newest migration)."""
    return MIGRATIONS.head()


def current(engine: sa.Engine, prefix: str = "") -> str | None:
    """The database's revision for layout ``prefix``; None when it has no schema."""
    return MIGRATIONS.current(engine, prefix)


def upgrade(engine: sa.Engine, prefix: str = "") -> str:
    """Create the schema of layout ``prefix`` or upgrade it to head; return head.

    Idempotent: at head already, nothing is locked or written. A database at
    a revision this Centaure does not know raises :class:`SchemaOutOfDate`.
    """
    return MIGRATIONS.upgrade(engine, prefix)


def check(engine: sa.Engine, prefix: str = "") -> None:
    """Raise :class:`SchemaOutOfDate` unless layout ``prefix`` is at head."""
    MIGRATIONS.check(engine, prefix)


def db_command(settings, action: str) -> int:
    """``centaure db upgrade|current|check``: print what is done; the exit code.

    Errors (database unreachable, SQL errors) are one line on stderr naming
    the database by its masked URL; the exit code is then 1, as for
    ``check`` when the schema is not at head.
    """
    return migration_command(MIGRATIONS, f"centaure db {action}", settings.database.url.reveal(),
                             settings.section("db").table_prefix, action,
                             settings.source or "settings.ini")
