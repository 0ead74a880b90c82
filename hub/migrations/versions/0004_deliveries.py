"""deliveries: practice systems (sources) and queued deliveries

Revision ID: 0004
Revises: 0001
Create Date: 2026-11-27 21:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sources",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("hl7_profile", sa.String(64), nullable=False),
        sa.Column("webhook_url", sa.String(1024), nullable=True),
        sa.Column("webhook_secret", sa.String(256), nullable=True),
        sa.Column("hl7_host", sa.String(255), nullable=True),
        sa.Column("hl7_port", sa.Integer(), nullable=True),
        sa.Column("results", sa.JSON(), nullable=False),
        sa.Column("events", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "deliveries",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("uuid", sa.String(36), nullable=False),
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("event_kind", sa.String(48), nullable=False),
        sa.Column("outbox_event_id", sa.Integer(), nullable=False),
        sa.Column("order_id", sa.Integer(), nullable=True),
        sa.Column("study_instance_uid", sa.String(64), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_error", sa.String(1024), nullable=True),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("uuid"),
    )
    op.create_index("ix_deliveries_status_due", "deliveries", ["status", "next_attempt_at"])
    op.create_index("ix_deliveries_channel", "deliveries", ["source", "kind", "order_id", "status"])
    op.create_index("ix_deliveries_outbox_event_id", "deliveries", ["outbox_event_id"])
    op.create_index("ix_deliveries_order_id", "deliveries", ["order_id"])


def downgrade() -> None:
    op.drop_table("deliveries")
    op.drop_table("sources")
