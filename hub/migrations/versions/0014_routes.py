"""routing rules, and the instances each DICOM forward has handed over

Revision ID: 0014
Revises: 0013
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "routes",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("destination", sa.String(16), nullable=False),
        sa.Column("when", sa.String(16), nullable=False),
        sa.Column("filter", sa.JSON(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "delivery_instances",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("delivery_id", sa.Integer(), nullable=False),
        sa.Column("sop_instance_uid", sa.String(64), nullable=False),
        sa.Column("status", sa.String(8), nullable=False),
        sa.Column("error", sa.String(255), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ux_delivery_instances",
        "delivery_instances",
        ["delivery_id", "sop_instance_uid"],
        unique=True,
    )
    # A late instance re-arms the forwards of its study: found by study UID.
    op.create_index("ix_deliveries_study", "deliveries", ["study_instance_uid"])


def downgrade() -> None:
    op.drop_index("ix_deliveries_study", table_name="deliveries")
    op.drop_index("ux_delivery_instances", table_name="delivery_instances")
    op.drop_table("delivery_instances")
    op.drop_table("routes")
