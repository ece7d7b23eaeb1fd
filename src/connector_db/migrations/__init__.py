"""Alembic migrations of the SQL writer's normalized schema.

Alembic is configured in code by :mod:`connector_db.migrate` (there is no
``alembic.ini`` and no ``script.py.mako``: revisions are written by hand).
``env.py`` runs the revisions of ``versions/`` on the connection handed over
in ``Config.attributes["connection"]``; the table prefix, run-time
configuration, comes in ``Config.attributes["table_prefix"]`` and every name
a revision creates (tables, indexes, constraints, the version table
``<prefix>alembic_version``) is built from it.

A revision is frozen history: it spells out its tables and indexes instead of
deriving them from :func:`centaure_shared.storage.schema.make_schema`, so changing
``schema.py`` means writing a new revision (the tests compare the migrated
database with ``make_schema`` and fail until one exists).
"""

from __future__ import annotations


