"""Shared fixtures: a hub on SQLite and on the real PostgreSQL, an API client,
and a whole ``vethub serve`` process for socket-level tests.

Every DB-touching test runs twice (``[sqlite]`` and ``[postgresql]``). The
PostgreSQL tests get a database of their own, created for the test session
on ``VETHUB_TEST_PG`` (default the local ``test`` server) and dropped after,
so parallel runs never see each other's rows.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from fastapi.testclient import TestClient
from hypothesis import settings as hypothesis_settings

from hub.context import Hub
from hub.db import Database
from hub.serve import build_app
from hub.services import keys
from tests.harness import (
    ADMIN_KEY,
    PG_SERVER,
    ServedHub,
    empty_tables,
    make_settings,
    pg_admin,
    pg_database_url,
    start_hub,
)

# CI runs the property tests on a fixed sequence of examples, so a red run
# can be reproduced and a green one is not luck; local runs explore at random.
hypothesis_settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    hypothesis_settings.load_profile("ci")

# CI sets VETHUB_REQUIRE_PG=1: there an unreachable PostgreSQL fails the run. On a
# contributor's machine without one, the SQLite half runs and the summary says so.
REQUIRE_PG = os.environ.get("VETHUB_REQUIRE_PG") == "1"
PG_SKIPPED = "PostgreSQL half skipped"

# Hubs and commands the tests start read no vethub.toml of this machine's
# (./vethub.toml, ~/.config/vethub/): VETHUB_CONFIG names an empty one.
NO_CONFIG = Path(tempfile.mkdtemp(prefix="vethub-test-config-")) / "vethub.toml"
NO_CONFIG.write_text("")
os.environ["VETHUB_CONFIG"] = str(NO_CONFIG)
BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session (and this xdist worker)."""
    name = f"vethub_t_{uuid.uuid4().hex[:12]}"
    try:
        with pg_admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        if REQUIRE_PG:
            pytest.fail(f"PostgreSQL at {PG_SERVER} is required (VETHUB_REQUIRE_PG=1): {exc}")
        pytest.skip(f"{PG_SKIPPED}: no PostgreSQL at {PG_SERVER} ({str(exc).splitlines()[0]})")
    url = pg_database_url(name)
    db = Database(url)
    db.upgrade()
    db.dispose()
    yield url
    with pg_admin() as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
        )
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    skipped = [
        r for r in terminalreporter.stats.get("skipped", []) if PG_SKIPPED in str(r.longrepr)
    ]
    if skipped:
        terminalreporter.section("POSTGRESQL NOT TESTED", sep="!", red=True, bold=True)
        terminalreporter.line(
            f"{len(skipped)} tests of the PostgreSQL half were SKIPPED: no server at "
            f"{PG_SERVER}. Only SQLite was tested. Start PostgreSQL (make postgres) or set "
            "VETHUB_TEST_PG; CI runs with VETHUB_REQUIRE_PG=1 and fails instead.",
            red=True,
            bold=True,
        )


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'vethub.db'}"
    return request.getfixturevalue("pg_url")


@pytest.fixture(scope="session")
def sqlite_schema(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty SQLite hub database at head, migrated once per session (and worker)."""
    path = tmp_path_factory.mktemp("schema") / "vethub.db"
    db = Database(f"sqlite:///{path}")
    db.upgrade()
    db.dispose()
    return path


@pytest.fixture
def hub(db_url: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Hub]:
    """A hub on an empty database (SQLite file or the session's PostgreSQL database)."""
    sqlite_file = tmp_path / "vethub.db"
    if db_url == f"sqlite:///{sqlite_file}" and not sqlite_file.exists():
        # A copy of the migrated empty file: running every migration took ~0.3 s a test.
        shutil.copyfile(request.getfixturevalue("sqlite_schema"), sqlite_file)
    h = Hub.open(make_settings(tmp_path, db_url), upgrade=True)
    if h.db.engine.dialect.name == "postgresql":
        empty_tables(h.db)
    with h.db.session() as s:
        keys.ensure(s, "bootstrap-admin", "admin", ADMIN_KEY)
    yield h
    h.close()


@pytest.fixture
def client(hub: Hub) -> Iterator[TestClient]:
    app = build_app(hub)
    with TestClient(app, headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as c:
        yield c


@pytest.fixture
def served_hub(db_url: str, tmp_path: Path) -> Iterator[ServedHub]:
    if db_url.startswith("postgresql"):
        db = Database(db_url)
        empty_tables(db)
        db.dispose()
    served = start_hub(tmp_path / "served", db_url)
    yield served
    served.stop()
