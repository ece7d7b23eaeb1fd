"""Creating and upgrading the correlator's tables: Alembic migrations, configured in code.

The revisions live in :mod:`connector_alarms.migrations`, a history of their
own beside the SQL writer's; the version table is
``<prefix>alembic_version`` with the ``[correlator] table_prefix``
(``corr_`` by default). The machinery is the writer's
(:mod:`connector.sqlmigrate`): a database lock against two processes
upgrading at once, a no-op when at head, a revision it does not know refused.

:class:`SchemaOutOfDate` is the writer's class (one ``except`` catches both).
"""

from __future__ import annotations

import sqlalchemy as sa

from connector.sqlmigrate import MigrationLockTimeout, Migrations, SchemaOutOfDate

from centaure_shared.sql import PREFIX_RE

__all__ = ["SchemaOutOfDate", "MigrationLockTimeout", "upgrade", "current", "head", "check",
           "SCRIPT_LOCATION", "MIGRATIONS", "DEFAULT_PREFIX"]

#: Where Alembic finds env.py and versions/ (a package resource: works installed).
SCRIPT_LOCATION = "connector_alarms:migrations"
#: ``[correlator] table_prefix``'s default.
DEFAULT_PREFIX = "corr_"

#: The correlator's revision history.
MIGRATIONS = Migrations(
    SCRIPT_LOCATION, lock_namespace="centaure-correlator-migrate", prefix_re=PREFIX_RE,
    subject="the correlator's schema",
    upgrade_hint=lambda config: "centaure-correlator creates or upgrades it at start-up",
    unknown_hint=("was it upgraded by a newer Centaure, or do [db] and [correlator] "
                  "share a table_prefix?"))


def head() -> str:
    """The revision the correlator's tables must be at (the newest migration)."""
    return MIGRATIONS.head()


def current(engine: sa.Engine, prefix: str = DEFAULT_PREFIX) -> str | None:
    """The revision of the correlator's tables ``prefix``; None when they do not exist."""
    return MIGRATIONS.current(engine, prefix)


def upgrade(engine: sa.Engine, prefix: str = DEFAULT_PREFIX) -> str:
    """Create the correlator's tables ``prefix`` or upgrade them to head; return head.

    Blocking (call from a thread). Idempotent: at head already, nothing is
    locked or written. A revision this Centaure does not know (a newer one,
    or the writer's under the same prefix) raises :class:`SchemaOutOfDate`.
    """
    return MIGRATIONS.upgrade(engine, prefix)


def check(engine: sa.Engine, prefix: str = DEFAULT_PREFIX) -> None:
    """Raise :class:`SchemaOutOfDate` unless the correlator's tables ``prefix`` are at head."""
    MIGRATIONS.check(engine, prefix)
