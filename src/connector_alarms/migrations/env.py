"""Alembic's environment, run by :mod:`connector_alarms.migrate` only (see connector.sqlmigrate)."""

from connector.sqlmigrate import run_env

run_env()
