"""Samples in time partitions on MariaDB/MySQL and PostgreSQL (one per UTC day).

Revision ID: 0002
Revises: 0001

Existing rows are kept: MariaDB/MySQL partitions the table in place (one
``ALTER TABLE``, which copies it); PostgreSQL renames it, creates the
partitioned table under the same names, copies the rows and drops the old
one, in the upgrade's transaction. Partitions are made from the day of the
oldest row (at most :data:`~connector_db.partitions.MAX_INITIAL_PARTITIONS`
of them, the first taking everything older) to three days ahead, plus a
catch-all; ``centaure db maintain`` then adds and drops them with the
``[retention]`` settings. The primary key already holds ``ts``, as
MariaDB requires of every unique key of a partitioned table. SQLite keeps
one table.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from centaure_shared.sql import key_string, table_prefix
from connector_db.partitions import partition_table, unpartition_table

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _recreate(partitioned: bool):
    p = table_prefix()

    def create(name: str) -> None:
        kw = {"postgresql_partition_by": "RANGE (ts)"} if partitioned else {}
        op.create_table(
            name,
            sa.Column("device_id", sa.Integer, nullable=False),
            sa.Column("metric_id", sa.Integer, nullable=False),
            sa.Column("idx", key_string(128), nullable=False),
            sa.Column("ts", sa.BigInteger, nullable=False, comment="UNIX milliseconds"),
            sa.Column("value_num", sa.Double, nullable=True),
            sa.Column("value_text", sa.String(255), nullable=True),
            sa.PrimaryKeyConstraint("device_id", "metric_id", "idx", "ts", name=f"{p}pk_samples"),
            **kw,
        )
        op.create_index(f"{p}ix_samples_device_ts", name, ["device_id", "ts"])

    return create


def upgrade() -> None:
    partition_table(op.get_bind(), f"{table_prefix()}samples", _recreate(True))


def downgrade() -> None:
    unpartition_table(op.get_bind(), f"{table_prefix()}samples", _recreate(False))
