"""Seen message ids in chunk rows instead of one JSON column per host.

Revision ID: correlator_0002
Revises: correlator_0001

``<p>hosts.seen_ids`` held a host's whole window of applied message ids and
was rewritten whole whenever the host changed (about 25 KB per host per
batch once the window was full). ``<p>seen_ids`` holds it as numbered
chunks, one row per host and save: a save adds one and drops the ones no
longer needed. The upgrade moves each host's window into its chunk 0; the
downgrade puts the newest chunk of each host back into the column (the
older ids are lost, so only a redelivery older than that chunk could be
applied twice).

Frozen once released, like correlator_0001.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from connector_alarms.migrations import table_prefix
from centaure_shared.sql import key_string, long_text

revision = "correlator_0002"
down_revision = "correlator_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    p = table_prefix()
    seen = op.create_table(
        f"{p}seen_ids",
        sa.Column("host", key_string(255), primary_key=True),
        sa.Column("chunk", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("ids", long_text(), nullable=False, comment="JSON"),
    )
    hosts = sa.table(f"{p}hosts", sa.column("host"), sa.column("seen_ids"))
    op.execute(seen.insert().from_select(
        ["host", "chunk", "ids"],
        sa.select(hosts.c.host, sa.literal(0, sa.BigInteger), hosts.c.seen_ids)))
    with op.batch_alter_table(f"{p}hosts") as batch:
        batch.drop_column("seen_ids")


def downgrade() -> None:
    p = table_prefix()
    with op.batch_alter_table(f"{p}hosts") as batch:
        batch.add_column(sa.Column("seen_ids", long_text(), nullable=False,
                                   server_default="[]", comment="JSON"))
    hosts = sa.table(f"{p}hosts", sa.column("host"), sa.column("seen_ids"))
    seen = sa.table(f"{p}seen_ids", sa.column("host"), sa.column("chunk"), sa.column("ids"))
    newest = (sa.select(seen.c.ids).where(seen.c.host == hosts.c.host)
              .order_by(seen.c.chunk.desc()).limit(1).scalar_subquery())
    op.execute(hosts.update().values(seen_ids=sa.func.coalesce(newest, "[]")))
    op.drop_table(f"{p}seen_ids")
