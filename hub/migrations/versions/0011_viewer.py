"""viewer: share link modes, downloads and use counts; saved annotations per study

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("shares") as batch:
        batch.add_column(
            sa.Column("mode", sa.String(16), nullable=False, server_default="referral")
        )
        batch.add_column(
            sa.Column("allow_download", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(sa.Column("use_count", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "annotations",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("study_instance_uid", sa.String(64), nullable=False, unique=True),
        sa.Column("document", sa.JSON(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("updated_by", sa.String(128), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("annotations")
    with op.batch_alter_table("shares") as batch:
        batch.drop_column("last_used_at")
        batch.drop_column("use_count")
        batch.drop_column("allow_download")
        batch.drop_column("mode")
