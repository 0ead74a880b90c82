"""folded names: an index on lower(patient_name) for case-insensitive name searches

Revision ID: 0016
Revises: 0015

PatientName is matched case-insensitively (``hub.services.study_search``), so
a ``Schm*`` search compared every stored name. On PostgreSQL the index's
collation is "C" (byte order), which lets both the wildcard's prefix range and
an exact name use it whatever the database's own collation; SQLite compares
bytes already. A new index fills itself: nothing to backfill.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

_NAME = "ix_studies_patient_name_folded"


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f'CREATE INDEX {_NAME} ON studies ((lower(patient_name)) COLLATE "C")')
    else:
        op.create_index(_NAME, "studies", [sa.text("lower(patient_name)")])


def downgrade() -> None:
    op.drop_index(_NAME, table_name="studies")
