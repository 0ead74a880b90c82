"""One head again: the HL7, studies, deliveries and links branches meet here.

They were written side by side from 0001; from now on revisions follow 0007.

Revision ID: 0007
Revises: 0002, 0003, 0004, 0006
"""

from __future__ import annotations

revision = "0007"
down_revision = ("0002", "0003", "0004", "0006")
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
