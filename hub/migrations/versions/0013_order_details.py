"""order details: medical alerts, microchip and other patient ids, reason for the procedure

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # All nullable: orders placed before answer as they did, with these left empty.
    with op.batch_alter_table("orders") as batch:
        batch.add_column(sa.Column("patient_alerts", sa.String(520), nullable=True))
        batch.add_column(sa.Column("patient_microchip", sa.String(64), nullable=True))
        batch.add_column(sa.Column("patient_other_ids", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("reason", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("orders") as batch:
        for name in ("reason", "patient_other_ids", "patient_microchip", "patient_alerts"):
            batch.drop_column(name)
