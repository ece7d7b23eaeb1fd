"""The rule evaluator's state per host (windows, leaf truth, breach status).

Revision ID: alerter_0002
Revises: alerter_0001

Frozen: a later change to ``connector_alerter/schema.py`` goes in a new revision.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from centaure_shared.sql import key_string, long_text
from connector_alerter.migrations import table_prefix

revision = "alerter_0002"
down_revision = "alerter_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    p = table_prefix()
    op.create_table(
        f"{p}eval_state",
        # 255: centaure_shared.sql.HOST_MAX when this revision was written.
        sa.Column("host", key_string(255), primary_key=True),
        sa.Column("state", long_text(), nullable=False, comment="JSON"),
        sa.Column("ts", sa.Double, nullable=True,
                  comment="newest sample time included, UNIX seconds"),
        sa.Column("updated", sa.Double, nullable=False, comment="saved at, UNIX seconds"),
    )


def downgrade() -> None:
    op.drop_table(f"{table_prefix()}eval_state")
