"""oidc: users linked to an OpenID provider's (issuer, subject); sign-ins under way

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("oidc_issuer", sa.String(255), nullable=True))
        batch.add_column(sa.Column("oidc_subject", sa.String(255), nullable=True))
        batch.create_unique_constraint("uq_users_oidc", ["oidc_issuer", "oidc_subject"])
    op.create_table(
        "oidc_logins",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("state_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("browser_hash", sa.String(64), nullable=False),
        sa.Column("nonce", sa.String(128), nullable=False),
        sa.Column("code_verifier", sa.String(128), nullable=False),
        sa.Column("next_path", sa.String(2048), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_oidc_logins_created_at", "oidc_logins", ["created_at"])


def downgrade() -> None:
    op.drop_table("oidc_logins")
    with op.batch_alter_table("users") as batch:
        batch.drop_constraint("uq_users_oidc", type_="unique")
        batch.drop_column("oidc_subject")
        batch.drop_column("oidc_issuer")
