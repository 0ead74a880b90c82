"""The schema the migrations build is the schema the models declare, on both databases."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlmodel import SQLModel

from hub.context import Hub
from hub.db import alembic_config


def test_one_head() -> None:
    assert len(ScriptDirectory.from_config(alembic_config()).get_heads()) == 1


def test_migrated_schema_matches_models(hub: Hub) -> None:
    with hub.db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), SQLModel.metadata)
    # Only differences that change what is stored count; type spellings of
    # the same column (e.g. AutoString vs VARCHAR) are not reported by default.
    assert diff == [], diff


def test_upgrade_is_idempotent(hub: Hub) -> None:
    hub.db.upgrade()
    hub.db.upgrade()
