"""Alembic migrations of the correlator's tables (:mod:`connector_alarms.schema`).

A revision history of its own, beside the SQL writer's
(:mod:`connector_db.migrations`), run by :mod:`connector_alarms.migrate`
through :mod:`connector.sqlmigrate`: no ``alembic.ini``, revisions written by
hand, the table prefix (``[correlator] table_prefix``) handed over in
``Config.attributes`` and Alembic's version table ``<prefix>alembic_version``.

Revision ids are ``correlator_NNNN``, never the writer's ``NNNN``: should both
layouts be given one prefix, they would share a version table, and each
would then refuse the other's revision loudly instead of taking the other's
tables for its own.

A revision is frozen history: it spells out its tables instead of deriving
them from :func:`connector_alarms.schema.make_schema`, so changing
``schema.py`` means writing a new revision (the tests compare the migrated
database with ``make_schema`` and fail until one exists).
"""

from __future__ import annotations

from centaure_shared.sql import table_prefix, version_table

__all__ = ["table_prefix", "version_table"]
