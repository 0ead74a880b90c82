"""dicomweb index: instance numbers and image size for QIDO-RS, modality and date-time indexes

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

_INSTANCE_COLUMNS = ("instance_number", "pixel_rows", "pixel_columns", "number_of_frames")


def upgrade() -> None:
    with op.batch_alter_table("instances") as batch:
        for name in _INSTANCE_COLUMNS:
            batch.add_column(sa.Column(name, sa.Integer(), nullable=True))
    op.create_index("ix_studies_modality", "studies", ["modality"])
    op.create_index("ix_series_modality", "series", ["modality"])
    # Study searches list newest first: date and time in one index, so a page is
    # read in index order instead of sorting every match.
    op.create_index("ix_studies_study_date_time", "studies", ["study_date", "study_time"])
    op.drop_index("ix_studies_study_date", table_name="studies")


def downgrade() -> None:
    op.create_index("ix_studies_study_date", "studies", ["study_date"])
    op.drop_index("ix_studies_study_date_time", table_name="studies")
    op.drop_index("ix_series_modality", table_name="series")
    op.drop_index("ix_studies_modality", table_name="studies")
    with op.batch_alter_table("instances") as batch:
        for name in reversed(_INSTANCE_COLUMNS):
            batch.drop_column(name)
