"""Alembic migrations of the alerter's tables (:mod:`connector_alerter.schema`).

A history of its own (revision ids ``alerter_NNNN``), run by
:mod:`connector_alerter.migrate` through :mod:`connector.sqlmigrate` with the
``[alerter] table_prefix``. A revision is frozen history: it spells out its
tables; changing ``schema.py`` means writing a new revision.
"""

from __future__ import annotations

from centaure_shared.sql import table_prefix, version_table

__all__ = ["table_prefix", "version_table"]
