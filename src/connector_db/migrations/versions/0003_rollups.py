"""Rollups of samples: 5-minute and hourly summaries, and how far they are built.

Revision ID: 0003
Revises: 0002

Frozen, as the revisions before it: a later change to the rollup tables
goes in a new revision.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from centaure_shared.sql import key_string, table_prefix

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_RESOLUTIONS = ("5m", "1h")


def upgrade() -> None:
    p = table_prefix()
    for res in _RESOLUTIONS:
        name = f"{p}rollups_{res}"
        op.create_table(
            name,
            sa.Column("device_id", sa.Integer, nullable=False),
            sa.Column("metric_id", sa.Integer, nullable=False),
            sa.Column("idx", key_string(128), nullable=False),
            sa.Column("ts", sa.BigInteger, nullable=False,
                      comment="interval start, UNIX milliseconds"),
            sa.Column("min_value", sa.Double, nullable=False),
            sa.Column("max_value", sa.Double, nullable=False),
            sa.Column("avg_value", sa.Double, nullable=False),
            sa.Column("value_count", sa.Integer, nullable=False),
            sa.Column("last_value", sa.Double, nullable=False),
            sa.Column("last_ts", sa.BigInteger, nullable=False, comment="UNIX milliseconds"),
            sa.PrimaryKeyConstraint("device_id", "metric_id", "idx", "ts",
                                    name=f"{p}pk_rollups_{res}"),
        )
        op.create_index(f"{p}ix_rollups_{res}_device_ts", name, ["device_id", "ts"])
    op.create_table(
        f"{p}rollup_state",
        sa.Column("resolution", sa.String(8), primary_key=True),
        sa.Column("done_until", sa.BigInteger, nullable=False, comment="UNIX milliseconds"),
    )


def downgrade() -> None:
    p = table_prefix()
    op.drop_table(f"{p}rollup_state")
    for res in _RESOLUTIONS:
        op.drop_table(f"{p}rollups_{res}")
