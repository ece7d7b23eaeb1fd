"""The alerter's notification state: outbox, groups, last notification per alarm, silences.

Revision ID: alerter_0001
Revises: (none)

Frozen: a later change to ``connector_alerter/schema.py`` goes in a new revision.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from centaure_shared.sql import key_string, long_text
from connector_alerter.migrations import table_prefix

revision = "alerter_0001"
down_revision = None
branch_labels = None
depends_on = None


def _id() -> sa.Column:
    return sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"),
                     primary_key=True, autoincrement=True)


def upgrade() -> None:
    p = table_prefix()
    op.create_table(
        f"{p}outbox", _id(),
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
    )
    op.create_index(f"{p}ix_outbox_state_next", f"{p}outbox", ["state", "next_at"])
    op.create_table(
        f"{p}groups",
        sa.Column("gid", key_string(191), primary_key=True, comment="sha256 of the group id"),
        sa.Column("state", long_text(), nullable=False, comment="JSON"),
    )
    op.create_table(
        f"{p}last_notified",
        sa.Column("ref", sa.String(32), primary_key=True),
        sa.Column("state", long_text(), nullable=False, comment="JSON"),
    )
    op.create_table(
        f"{p}silences", _id(),
        sa.Column("host", sa.String(255), nullable=True),
        sa.Column("name", sa.String(255), nullable=True),
        sa.Column("device_type", sa.String(255), nullable=True),
        sa.Column("severity", sa.String(128), nullable=True),
        sa.Column("starts", sa.Double, nullable=False, comment="UNIX seconds"),
        sa.Column("ends", sa.Double, nullable=False, comment="UNIX seconds"),
        sa.Column("comment", sa.Text, nullable=False),
        sa.Column("created_by", sa.String(255), nullable=True),
        sa.Column("created", sa.Double, nullable=False, comment="UNIX seconds"),
    )


def downgrade() -> None:
    p = table_prefix()
    for name in ("silences", "last_notified", "groups", "outbox"):
        op.drop_table(f"{p}{name}")
