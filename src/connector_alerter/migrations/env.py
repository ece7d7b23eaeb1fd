"""Alembic's environment, run by :mod:`connector_alerter.migrate` only (connector.sqlmigrate)."""

from connector.sqlmigrate import run_env

run_env()
