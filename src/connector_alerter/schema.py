"""The alerter's notification tables (SQLAlchemy Core), in the site's ``[database]``.

:func:`make_schema` names every table ``<prefix><name>`` with the
``[alerter] table_prefix`` (``alert_`` by default):

* ``<p>outbox``: one row per message to send to one receiver, written with
  the group state that produced it and before the input is acked; ``dedup``
  (a digest of idempotency key, channel and recipient) is unique, so a
  transition is never queued twice for a receiver; ``state`` pending / sent /
  failed, ``attempts``, ``next_at`` (UNIX seconds) for retries with backoff;
  ``payload`` the rendered message (JSON text);
* ``<p>groups``: the grouper's state, one JSON row per group
  (:meth:`connector_alerter.grouping.Grouper.export`);
* ``<p>last_notified``: the last transition told per alarm ref;
* ``<p>silences``: silences (defined in :mod:`centaure_shared.storage.silences`, where
  the web console writes them too);
* ``<p>eval_state``: the rule evaluator's state, one JSON row per host
  (:meth:`connector_alerter.evaluator.Evaluator.export_host`: windows, leaf
  truth, breach status), with ``ts`` the newest sample time it includes
  (:mod:`connector_alerter.state`). Keyed by host alone so that hosts can be
  sharded between alerters and a host's state moved as one row.

Timestamps are DOUBLE UNIX seconds (as the correlator's). Created and
upgraded by :mod:`connector_alerter.migrations` (:func:`connector_alerter.migrate.upgrade`);
a change here needs a new revision there.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from centaure_shared.sql import HOST_MAX, PREFIX_RE, key_string, long_text
from centaure_shared.storage.silences import silences_table

__all__ = ["AlerterSchema", "make_schema", "create_all", "drop_all", "PREFIX_RE"]


@dataclass(frozen=True)
class AlerterSchema:
    """The alerter's tables under one prefix."""

    prefix: str
    metadata: sa.MetaData
    outbox: sa.Table
    groups: sa.Table
    last_notified: sa.Table
    silences: sa.Table
    eval_state: sa.Table


def _id() -> sa.Column:
    return sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"),
                     primary_key=True, autoincrement=True)


def make_schema(prefix: str = "alert_") -> AlerterSchema:
    """Build the tables, each named ``<prefix><name>``."""
    if prefix and not PREFIX_RE.match(prefix):
        raise ValueError(f"invalid table prefix {prefix!r}: must match {PREFIX_RE.pattern}")
    md = sa.MetaData()
    p = prefix
    outbox = sa.Table(
        f"{p}outbox", md, _id(),
        sa.Column("dedup", key_string(64), nullable=False,
                  comment="sha256(idempotency key, channel, recipient)"),
        sa.Column("idem_key", sa.String(255), nullable=False),
        sa.Column("route", sa.String(255), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("recipient", sa.String(1024), nullable=False),
        sa.Column("ref", sa.String(32), nullable=True, comment="first alarm ref told"),
        sa.Column("host", sa.String(255), nullable=True),
        sa.Column("payload", long_text(), nullable=False, comment="JSON"),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_at", sa.Double, nullable=False, comment="UNIX seconds"),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("created", sa.Double, nullable=False, comment="UNIX seconds"),
        sa.Column("done_at", sa.Double, nullable=True, comment="UNIX seconds"),
        sa.UniqueConstraint("dedup", name=f"{p}uq_outbox_dedup"),
        sa.Index(f"{p}ix_outbox_state_next", "state", "next_at"),
    )
    groups = sa.Table(
        f"{p}groups", md,
        sa.Column("gid", key_string(191), primary_key=True, comment="sha256 of the group id"),
        sa.Column("state", long_text(), nullable=False, comment="JSON"),
    )
    last_notified = sa.Table(
        f"{p}last_notified", md,
        sa.Column("ref", sa.String(32), primary_key=True),
        sa.Column("state", long_text(), nullable=False, comment="JSON"),
    )
    silences = silences_table(md, p)
    eval_state = sa.Table(
        f"{p}eval_state", md,
        sa.Column("host", key_string(HOST_MAX), primary_key=True),
        sa.Column("state", long_text(), nullable=False, comment="JSON"),
        sa.Column("ts", sa.Double, nullable=True,
                  comment="newest sample time included, UNIX seconds"),
        sa.Column("updated", sa.Double, nullable=False, comment="saved at, UNIX seconds"),
    )
    return AlerterSchema(prefix, md, outbox, groups, last_notified, silences, eval_state)


def create_all(engine: sa.Engine, schema: AlerterSchema) -> None:
    """Create the missing tables (tests; production uses the migrations)."""
    schema.metadata.create_all(engine)


def drop_all(engine: sa.Engine, schema: AlerterSchema) -> None:
    """Drop this layout's tables (tests)."""
    schema.metadata.drop_all(engine)
