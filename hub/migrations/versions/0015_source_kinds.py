"""sources by kind: a vendor adapter's settings, sealed secrets and state

Revision ID: 0015
Revises: 0014
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sources") as batch:
        batch.add_column(sa.Column("kind", sa.String(16), nullable=False, server_default="hl7"))
        batch.add_column(sa.Column("kind_settings", sa.JSON(), nullable=False, server_default="{}"))
        batch.add_column(sa.Column("kind_secrets", sa.Text(), nullable=True))
        batch.add_column(sa.Column("kind_state", sa.JSON(), nullable=False, server_default="{}"))


def downgrade() -> None:
    with op.batch_alter_table("sources") as batch:
        batch.drop_column("kind_state")
        batch.drop_column("kind_secrets")
        batch.drop_column("kind_settings")
        batch.drop_column("kind")
