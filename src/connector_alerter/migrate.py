"""Creating and upgrading the alerter's tables: Alembic migrations configured in code.

The revisions live in :mod:`connector_alerter.migrations`; the version table is
``<prefix>alembic_version`` with the ``[alerter] table_prefix`` (``alert_``).
The machinery is :mod:`connector.sqlmigrate`'s.
"""

from __future__ import annotations

import sqlalchemy as sa

from connector.sqlmigrate import MigrationLockTimeout, Migrations, SchemaOutOfDate

from .schema import PREFIX_RE

__all__ = ["SchemaOutOfDate", "MigrationLockTimeout", "upgrade", "current", "head", "check",
           "MIGRATIONS", "DEFAULT_PREFIX"]

DEFAULT_PREFIX = "alert_"

#: The alerter's revision history.
MIGRATIONS = Migrations(
    "connector_alerter:migrations", lock_namespace="centaure-alerter-migrate",
    prefix_re=PREFIX_RE, subject="the alerter's schema",
    upgrade_hint=lambda config: "centaure-alerter creates or upgrades it at start-up",
    unknown_hint=("was it upgraded by a newer Centaure, or does [alerter] share a "
                  "table_prefix with another component?"))


def head() -> str:
    """The revision the alerter's tables must be at."""
    return MIGRATIONS.head()


def current(engine: sa.Engine, prefix: str = DEFAULT_PREFIX) -> str | None:
    """The revision of the alerter's tables ``prefix``; None when they do not exist."""
    return MIGRATIONS.current(engine, prefix)


def upgrade(engine: sa.Engine, prefix: str = DEFAULT_PREFIX) -> str:
    """Create or upgrade the alerter's tables ``prefix`` to head (blocking); returns head."""
    return MIGRATIONS.upgrade(engine, prefix)


def check(engine: sa.Engine, prefix: str = DEFAULT_PREFIX) -> None:
    """Raise :class:`SchemaOutOfDate` unless the alerter's tables ``prefix`` are at head."""
    MIGRATIONS.check(engine, prefix)
