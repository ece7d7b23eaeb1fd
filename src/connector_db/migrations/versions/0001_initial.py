"""The normalized layout: devices, metrics, samples, events, alarms and the rest.

Revision ID: 0001
Revises: (none)

Frozen: this is the schema as first released. A later change to
``connector_db/schema.py`` goes in a new revision, never here. Only the two
types shared with ``schema.py`` are imported (their DDL per dialect is part
of what they mean); sizes are spelled out.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from centaure_shared.sql import UInt64, key_string, table_prefix

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_TABLES = ("devices", "metrics", "samples", "events", "alarm_history", "alarms", "thresholds",
           "notifications")


def _id() -> sa.Column:
    """A BIGINT auto-increment key (INTEGER on SQLite: only that is its rowid)."""
    return sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"),
                     primary_key=True, autoincrement=True)


def _alarm_columns() -> list[sa.Column]:
    return [
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("first_seen", sa.BigInteger, nullable=False),
        sa.Column("last_seen", sa.BigInteger, nullable=False),
        sa.Column("cleared_at", sa.BigInteger, nullable=True),
        sa.Column("count", sa.Integer, nullable=False),
        sa.Column("origin", sa.String(16), nullable=False),
        sa.Column("acked_by", sa.String(255), nullable=True),
        sa.Column("flapping", sa.Boolean, nullable=False),
        sa.Column("cause_ref", UInt64(), nullable=True),
        sa.Column("ts", sa.BigInteger, nullable=False),
    ]


def upgrade() -> None:
    p = table_prefix()

    op.create_table(
        f"{p}devices",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", key_string(255), nullable=False),
        sa.Column("address", sa.String(64), nullable=True),
        sa.Column("device_type", sa.String(255), nullable=True),
        sa.UniqueConstraint("name", name=f"{p}uq_devices_name"),
    )
    op.create_table(
        f"{p}metrics",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", key_string(255), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("unit", sa.String(32), nullable=True),
        sa.UniqueConstraint("name", "kind", name=f"{p}uq_metrics_name_kind"),
    )
    op.create_table(
        f"{p}samples",
        sa.Column("device_id", sa.Integer, nullable=False),
        sa.Column("metric_id", sa.Integer, nullable=False),
        sa.Column("idx", key_string(128), nullable=False),
        sa.Column("ts", sa.BigInteger, nullable=False, comment="UNIX milliseconds"),
        sa.Column("value_num", sa.Double, nullable=True),
        sa.Column("value_text", sa.String(255), nullable=True),
        sa.PrimaryKeyConstraint("device_id", "metric_id", "idx", "ts", name=f"{p}pk_samples"),
    )
    op.create_index(f"{p}ix_samples_device_ts", f"{p}samples", ["device_id", "ts"])

    op.create_table(
        f"{p}events",
        _id(),
        sa.Column("message_id", key_string(255), nullable=False),
        sa.Column("ts", sa.BigInteger, nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("address", sa.String(64), nullable=False),
        sa.Column("snmp_version", sa.String(8), nullable=False),
        sa.Column("trap_oid", sa.String(255), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("action", sa.String(8), nullable=False),
        sa.Column("alarm", sa.String(255), nullable=True),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("varbinds", sa.Text, nullable=False, comment="JSON"),
        sa.Column("unknown_sender", sa.Boolean, nullable=False),
        sa.UniqueConstraint("message_id", name=f"{p}uq_events_message_id"),
    )
    op.create_index(f"{p}ix_events_host_ts", f"{p}events", ["host", "ts"])
    op.create_index(f"{p}ix_events_ts", f"{p}events", ["ts"])

    op.create_table(
        f"{p}alarm_history",
        _id(),
        sa.Column("message_id", key_string(255), nullable=False),
        sa.Column("ref", UInt64(), nullable=False),
        *_alarm_columns(),
        sa.UniqueConstraint("message_id", name=f"{p}uq_alarm_history_message_id"),
    )
    op.create_index(f"{p}ix_alarm_history_ref_ts", f"{p}alarm_history", ["ref", "ts"])
    op.create_index(f"{p}ix_alarm_history_host_ts", f"{p}alarm_history", ["host", "ts"])

    op.create_table(
        f"{p}alarms",
        sa.Column("ref", UInt64(), primary_key=True, autoincrement=False),
        *_alarm_columns(),
    )
    op.create_index(f"{p}ix_alarms_host", f"{p}alarms", ["host"])
    op.create_index(f"{p}ix_alarms_state", f"{p}alarms", ["state"])

    op.create_table(
        f"{p}thresholds",
        _id(),
        sa.Column("message_id", key_string(255), nullable=False),
        sa.Column("ts", sa.BigInteger, nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("rule", sa.String(255), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("values", sa.Text, nullable=False, comment="JSON"),
        sa.UniqueConstraint("message_id", name=f"{p}uq_thresholds_message_id"),
    )
    op.create_index(f"{p}ix_thresholds_host_ts", f"{p}thresholds", ["host", "ts"])

    op.create_table(
        f"{p}notifications",
        _id(),
        sa.Column("message_id", key_string(255), nullable=False),
        sa.Column("ts", sa.BigInteger, nullable=False),
        sa.Column("ref", UInt64(), nullable=True),
        sa.Column("rule", sa.String(255), nullable=True),
        sa.Column("host", sa.String(255), nullable=True),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("recipient", sa.String(255), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("reason", sa.Text, nullable=True),
        sa.UniqueConstraint("message_id", name=f"{p}uq_notifications_message_id"),
    )
    op.create_index(f"{p}ix_notifications_ts", f"{p}notifications", ["ts"])


def downgrade() -> None:
    p = table_prefix()
    for name in reversed(_TABLES):
        op.drop_table(f"{p}{name}")
