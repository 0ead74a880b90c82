"""The schema the migrations build is the schema the models declare, on both databases."""

from __future__ import annotations

import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect
from sqlmodel import SQLModel

from hub.context import Hub
from hub.db import (
    MIGRATIONS_DIR,
    Database,
    SchemaNotCurrent,
    alembic_config,
    head_revision,
    new_revision,
)
from tests.harness import pg_admin, pg_database_url


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
    assert hub.db.revision() == head_revision() is not None
    names = set(inspect(hub.db.engine).get_table_names())
    assert {t.name for t in SQLModel.metadata.sorted_tables} <= names
    hub.db.check_schema()  # current: no complaint


def test_a_fresh_database_is_refused_until_upgraded(db_url: str, tmp_path: Path) -> None:
    db = Database(_fresh(db_url, tmp_path))
    try:
        with pytest.raises(SchemaNotCurrent, match="vethub db upgrade"):
            db.check_schema()
        assert db.revision() is None
        db.upgrade()
        assert db.revision() == head_revision()
        db.check_schema()
    finally:
        db.dispose()


def test_concurrent_upgrades_of_one_postgresql_database_take_turns(tmp_path: Path) -> None:
    """Processes started together each run the upgrade; the advisory lock serialises them."""
    url = _fresh("postgresql", tmp_path)
    dbs = [Database(url) for _ in range(4)]
    errors: list[BaseException] = []
    start = threading.Barrier(len(dbs))

    def upgrade(db: Database) -> None:
        start.wait()
        try:
            db.upgrade()
        except BaseException as exc:  # reported below, on the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=upgrade, args=(db,), daemon=True) for db in dbs]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 90
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    try:
        assert not any(t.is_alive() for t in threads), "upgrades blocked each other"
        assert errors == []
        assert {db.revision() for db in dbs} == {head_revision()}
    finally:
        for db in dbs:
            db.dispose()


def test_revision_writes_the_next_numbered_migration(tmp_path: Path) -> None:
    migrations = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, migrations, ignore=shutil.ignore_patterns("__pycache__"))
    db = Database(f"sqlite:///{tmp_path / 'head.db'}")
    try:
        db.upgrade()
        path = Path(new_revision(db.engine, "add a thing", migrations))
    finally:
        db.dispose()
    head = head_revision() or ""
    assert path.parent == migrations / "versions"
    assert path.name == f"{int(head) + 1:04d}_add_a_thing.py"
    text_ = path.read_text()
    assert f"down_revision = {head!r}" in text_
    # models and migrations agree, so the new migration changes nothing
    assert "op." not in text_


def _fresh(db_url: str, tmp_path: Path) -> str:
    """An empty database of the same kind (PostgreSQL: dropped with the session's server)."""
    if not db_url.startswith("postgresql"):
        return f"sqlite:///{tmp_path / 'fresh.db'}"
    name = f"vethub_fresh_{uuid.uuid4().hex[:10]}"
    with pg_admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    FRESH_DATABASES.append(name)
    return pg_database_url(name)


FRESH_DATABASES: list[str] = []


@pytest.fixture(autouse=True, scope="module")
def _drop_fresh_databases() -> Iterator[None]:
    yield
    if not FRESH_DATABASES:
        return
    with pg_admin() as conn:
        for name in FRESH_DATABASES:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (name,),
            )
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
