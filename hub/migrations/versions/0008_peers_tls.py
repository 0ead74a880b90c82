"""peers and TLS: unknown callers, HL7 sender allow-lists, TLS flags, source-scoped keys

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "unknown_peers",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("door", sa.String(8), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("facility", sa.String(64), nullable=False),
        sa.Column("address", sa.String(64), nullable=False),
        sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("refused", sa.Boolean(), nullable=False),
        sa.UniqueConstraint("door", "name", "facility", "address", name="uq_unknown_peers"),
    )
    with op.batch_alter_table("api_keys") as t:
        t.add_column(sa.Column("source", sa.String(64), nullable=True))
    with op.batch_alter_table("modalities") as t:
        t.add_column(sa.Column("tls", sa.Boolean(), nullable=False, server_default=sa.false()))
    with op.batch_alter_table("sources") as t:
        t.add_column(sa.Column("tls", sa.Boolean(), nullable=False, server_default=sa.false()))
        t.add_column(sa.Column("hl7_senders", sa.JSON(), nullable=False, server_default="[]"))


def downgrade() -> None:
    with op.batch_alter_table("sources") as t:
        t.drop_column("hl7_senders")
        t.drop_column("tls")
    with op.batch_alter_table("modalities") as t:
        t.drop_column("tls")
    with op.batch_alter_table("api_keys") as t:
        t.drop_column("source")
    op.drop_table("unknown_peers")
