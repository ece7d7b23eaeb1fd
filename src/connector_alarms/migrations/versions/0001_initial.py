"""The correlator's state: alarms, hosts and the outbox of unconfirmed alarm messages.

Revision ID: correlator_0001
Revises: (none)

Frozen: this is the schema as first released. A later change to
``connector_alarms/schema.py`` goes in a new revision, never here. Only the
types shared with ``schema.py`` are imported (their DDL per dialect is part
of what they mean); sizes are spelled out.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from connector_alarms.migrations import table_prefix
from centaure_shared.sql import UInt64, key_string, long_binary, long_text

revision = "correlator_0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    p = table_prefix()

    op.create_table(
        f"{p}alarms",
        sa.Column("ref", UInt64(), primary_key=True, autoincrement=False),
        sa.Column("host", key_string(255), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("identity", long_text(), nullable=False),
        sa.Column("origin", sa.String(16), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("base_severity", sa.String(16), nullable=False),
        sa.Column("message", long_text(), nullable=False),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.Column("first_seen", sa.Double, nullable=False, comment="UNIX seconds"),
        sa.Column("last_seen", sa.Double, nullable=False, comment="UNIX seconds"),
        sa.Column("count", sa.BigInteger, nullable=False),
        sa.Column("cleared_at", sa.Double, nullable=True, comment="UNIX seconds"),
        sa.Column("clear_reason", sa.String(16), nullable=True),
        sa.Column("changed_ts", sa.Double, nullable=False, comment="UNIX seconds"),
        sa.Column("acked_by", sa.String(255), nullable=True),
        sa.Column("acked_at", sa.Double, nullable=True, comment="UNIX seconds"),
        sa.Column("notes", long_text(), nullable=False, comment="JSON"),
        sa.Column("flapping", sa.Boolean, nullable=False),
        sa.Column("history", long_text(), nullable=False, comment="JSON"),
        sa.Column("cause_ref", UInt64(), nullable=True),
        sa.Column("published_at", sa.Double, nullable=False, comment="reactor clock, seconds"),
        sa.Column("pending_update", sa.Boolean, nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
    )
    op.create_index(f"{p}ix_alarms_host", f"{p}alarms", ["host"])
    op.create_index(f"{p}ix_alarms_active_host", f"{p}alarms", ["active", "host"])

    op.create_table(
        f"{p}hosts",
        sa.Column("host", key_string(255), primary_key=True),
        sa.Column("snapshot_ts", sa.Double, nullable=False, comment="UNIX seconds"),
        sa.Column("seen_ids", long_text(), nullable=False, comment="JSON"),
    )

    op.create_table(
        f"{p}outbox",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"),
                  primary_key=True, autoincrement=True),
        sa.Column("message_id", key_string(255), nullable=False),
        sa.Column("body", long_binary(), nullable=False, comment="encoded alarm message"),
        sa.Column("created", sa.Double, nullable=False, comment="UNIX seconds"),
        sa.UniqueConstraint("message_id", name=f"{p}uq_outbox_message_id"),
    )


def downgrade() -> None:
    p = table_prefix()
    for name in ("outbox", "hosts", "alarms"):
        op.drop_table(f"{p}{name}")
