"""hl7 messages: every inbound HL7 message with its outcome and ACK

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "hl7_messages",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sender", sa.String(length=64), nullable=False),
        sa.Column("facility", sa.String(length=64), nullable=False),
        sa.Column("control_id", sa.String(length=64), nullable=False),
        sa.Column("type", sa.String(length=16), nullable=False),
        sa.Column("version", sa.String(length=8), nullable=False),
        sa.Column("charset", sa.String(length=32), nullable=False),
        sa.Column("source", sa.String(length=64), nullable=True),
        sa.Column("profile", sa.String(length=64), nullable=True),
        sa.Column("outcome", sa.String(length=2), nullable=False),
        sa.Column("error", sa.String(length=1024), nullable=True),
        sa.Column("error_location", sa.String(length=64), nullable=True),
        sa.Column("error_code", sa.Integer(), nullable=True),
        sa.Column("patient_id", sa.String(length=64), nullable=True),
        sa.Column("order_id", sa.Integer(), nullable=True),
        sa.Column("raw", sa.Text(), nullable=False),
        sa.Column("ack", sa.Text(), nullable=False),
        sa.Column("duplicate_of", sa.Integer(), nullable=True),
        sa.Column("reprocess_of", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("hl7_messages", schema=None) as batch_op:
        batch_op.create_index("ix_hl7_messages_received_at", ["received_at"], unique=False)
        batch_op.create_index("ix_hl7_messages_sender", ["sender"], unique=False)
        batch_op.create_index("ix_hl7_messages_type", ["type"], unique=False)
        batch_op.create_index("ix_hl7_messages_outcome", ["outcome"], unique=False)
        batch_op.create_index("ix_hl7_messages_patient_id", ["patient_id"], unique=False)
        batch_op.create_index("ix_hl7_messages_order_id", ["order_id"], unique=False)
        batch_op.create_index(
            "ix_hl7_messages_control_sender", ["control_id", "sender", "facility"], unique=False
        )


def downgrade() -> None:
    op.drop_table("hl7_messages")
