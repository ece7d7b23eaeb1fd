"""The alerter's notification outbox on a fresh SQLite file, for the notify tests."""

from __future__ import annotations

import sqlalchemy as sa

from connector_alerter import migrate
from connector_alerter.outbox import OutboxStore


def sqlite_outbox(tmp_path):
    """Fixture body: an :class:`OutboxStore` on migrated tables (prefix ``alert_``)."""
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'alerter.sqlite3'}")
    migrate.upgrade(engine, "alert_")
    yield OutboxStore(engine, "alert_")
    engine.dispose()
