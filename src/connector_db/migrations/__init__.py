"""Alembic migrations of the SQL writer's normalized schema.

Alembic is configured in code by :mod:`connector_db.migrate` (there is no
``alembic.ini`` and no ``script.py.mako``: revisions are written by hand).
``env.py`` runs the revisions of ``versions/`` on the connection handed over
in ``Config.attributes["connection"]``; the table prefix, run-time
configuration, comes in ``Config.attributes["table_prefix"]`` and every name
a revision creates (tables, indexes, constraints, the version table
``<prefix>alembic_version``) is built from it.

A revision is frozen history: it spells out its tables and indexes instead of
deriving them from :func:`connector_db.schema.make_schema`, so changing
``schema.py`` means writing a new revision (the tests compare the migrated
database with ``make_schema`` and fail until one exists).
"""

from __future__ import annotations

from connector_db.schema import PREFIX_RE

__all__ = ["VERSION_TABLE", "table_prefix", "version_table"]

#: Name of Alembic's version table, after the prefix.
VERSION_TABLE = "alembic_version"


def version_table(prefix: str) -> str:
    """The version table of the layout ``prefix``."""
    return f"{prefix}{VERSION_TABLE}"


def table_prefix() -> str:
    """The table prefix of the migration being run (validated)."""
    from alembic import context

    prefix = context.config.attributes.get("table_prefix", "")
    if prefix and not PREFIX_RE.match(prefix):
        raise ValueError(f"invalid table prefix {prefix!r}: must match {PREFIX_RE.pattern}")
    return prefix
