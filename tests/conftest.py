"""Shared fixtures: a hub on SQLite and on the real PostgreSQL, an API client,
and a whole ``vethub serve`` process for socket-level tests.

Every DB-touching test runs twice (``[sqlite]`` and ``[postgresql]``). The
PostgreSQL tests get a database of their own, created for the test session
on ``VETHUB_TEST_PG`` (default the local ``test`` server) and dropped after,
so parallel runs never see each other's rows.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest
from fastapi.testclient import TestClient
from hypothesis import settings as hypothesis_settings
from sqlalchemy import text
from sqlmodel import SQLModel

from hub.config import Settings
from hub.context import Hub
from hub.db import Database
from hub.serve import build_app
from hub.services import keys

# CI runs the property tests on a fixed sequence of examples, so a red run
# can be reproduced and a green one is not luck; local runs explore at random.
hypothesis_settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    hypothesis_settings.load_profile("ci")

PG_SERVER = os.environ.get("VETHUB_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
# CI sets VETHUB_REQUIRE_PG=1: there an unreachable PostgreSQL fails the run. On a
# contributor's machine without one, the SQLite half runs and the summary says so.
REQUIRE_PG = os.environ.get("VETHUB_REQUIRE_PG") == "1"
PG_SKIPPED = "PostgreSQL half skipped"
ADMIN_KEY = "test-admin-key-0123456789"
REPO = Path(__file__).resolve().parent.parent
BACKENDS = ["sqlite", "postgresql"]


def _pg_admin() -> psycopg.Connection:
    return psycopg.connect(PG_SERVER, autocommit=True, connect_timeout=5)


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session (and this xdist worker)."""
    name = f"vethub_t_{uuid.uuid4().hex[:12]}"
    try:
        with _pg_admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        if REQUIRE_PG:
            pytest.fail(f"PostgreSQL at {PG_SERVER} is required (VETHUB_REQUIRE_PG=1): {exc}")
        pytest.skip(f"{PG_SKIPPED}: no PostgreSQL at {PG_SERVER} ({str(exc).splitlines()[0]})")
    base = PG_SERVER.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    url = f"{base}/{name}"
    db = Database(url)
    db.upgrade()
    db.dispose()
    yield url
    with _pg_admin() as conn:
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


def _empty_tables(db: Database) -> None:
    tables = [t.name for t in SQLModel.metadata.sorted_tables]
    with db.engine.begin() as conn:
        conn.execute(text("TRUNCATE " + ", ".join(f'"{t}"' for t in tables) + " RESTART IDENTITY"))


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'vethub.db'}"
    return request.getfixturevalue("pg_url")


def make_settings(tmp_path: Path, db_url: str, **extra: object) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        database_url=db_url,
        http_port=0,
        dicom_port=0,
        hl7_port=0,
        dicom_host="127.0.0.1",
        hl7_host="127.0.0.1",
        bootstrap_admin_key=ADMIN_KEY,
        **extra,  # type: ignore[arg-type]
    )


@pytest.fixture
def hub(db_url: str, tmp_path: Path) -> Iterator[Hub]:
    """A hub on an empty database (SQLite file or the session's PostgreSQL database)."""
    h = Hub.open(make_settings(tmp_path, db_url), upgrade=True)
    if h.db.engine.dialect.name == "postgresql":
        _empty_tables(h.db)
    with h.db.session() as s:
        keys.ensure(s, "bootstrap-admin", "admin", ADMIN_KEY)
    yield h
    h.close()


@pytest.fixture
def client(hub: Hub) -> Iterator[TestClient]:
    app = build_app(hub)
    with TestClient(app, headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as c:
        yield c


def key_for(hub: Hub, role: str) -> str:
    with hub.db.session() as s:
        _, plain = keys.create(s, f"test-{role}", role, actor="test")
    return plain


@dataclass
class ServedHub:
    """A ``vethub serve`` child process with every door on a free port."""

    process: subprocess.Popen[bytes]
    data_dir: Path
    http: int
    dicom: int
    hl7: int | None
    ae_title: str
    key: str
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http}"

    def api(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {self.key}"}, timeout=30
        )

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_hub(data_dir: Path, db_url: str, **env: str) -> ServedHub:
    data_dir.mkdir(parents=True, exist_ok=True)
    ports_file = data_dir / "ports.json"
    ports_file.unlink(missing_ok=True)
    log_path = data_dir / "vethub.log"
    environ = {
        **os.environ,
        "VETHUB_DATA_DIR": str(data_dir),
        "VETHUB_DATABASE_URL": db_url,
        "VETHUB_HTTP_PORT": "0",
        "VETHUB_DICOM_PORT": "0",
        "VETHUB_HL7_PORT": "0",
        "VETHUB_DICOM_HOST": "127.0.0.1",
        "VETHUB_HL7_HOST": "127.0.0.1",
        "VETHUB_BOOTSTRAP_ADMIN_KEY": ADMIN_KEY,
        **env,
    }
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "hub.cli", "serve"],
            env=environ,
            stdout=log,
            stderr=log,
            cwd=REPO,
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"vethub serve exited: {log_path.read_text(errors='replace')}")
        if ports_file.exists():
            ports = json.loads(ports_file.read_text())
            try:
                if httpx.get(f"http://127.0.0.1:{ports['http']}/health").status_code == 200:
                    return ServedHub(
                        process=proc,
                        data_dir=data_dir,
                        http=ports["http"],
                        dicom=ports["dicom"],
                        hl7=ports.get("hl7"),
                        ae_title=env.get("VETHUB_DICOM_AE", "VETHUB"),
                        key=ADMIN_KEY,
                        log_path=log_path,
                    )
            except httpx.HTTPError:
                pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"vethub serve did not become healthy: {log_path.read_text()}")


@pytest.fixture
def served_hub(db_url: str, tmp_path: Path) -> Iterator[ServedHub]:
    if db_url.startswith("postgresql"):
        db = Database(db_url)
        _empty_tables(db)
        db.dispose()
    served = start_hub(tmp_path / "served", db_url)
    yield served
    served.stop()
