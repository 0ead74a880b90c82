"""/health/live answers without I/O; /health/ready says what keeps the hub from working."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from hub.context import Hub
from hub.db import Database
from hub.serve import build_app
from tests.harness import make_settings


@pytest.fixture
def sqlite_hub(tmp_path: Path) -> Iterator[Hub]:
    """The database-independent cases need one backend only."""
    hub = Hub.open(
        make_settings(tmp_path, f"sqlite:///{tmp_path / 'db' / 'vethub.db'}"), upgrade=True
    )
    yield hub
    hub.close()


def test_live_and_ready_on_a_working_hub(client: TestClient) -> None:
    assert client.get("/health/live", headers={"Authorization": ""}).json() == {"status": "live"}
    r = client.get("/health/ready", headers={"Authorization": ""})
    assert (r.status_code, r.json()) == (200, {"status": "ready"})
    assert client.get("/health").json() == {"status": "ok"}  # unchanged for existing probes


def test_not_ready_when_the_sqlite_file_is_gone_or_unmigrated(
    sqlite_hub: Hub, tmp_path: Path
) -> None:
    hub = sqlite_hub
    with TestClient(build_app(hub)) as client:
        assert client.get("/health/ready").status_code == 200
        hub.db.dispose()
        (tmp_path / "db").rename(tmp_path / "moved")  # the directory is gone
        r = client.get("/health/ready")
        assert r.status_code == 503
        assert "unable to open database file" in r.json()["not_ready"]["database"]
        assert client.get("/health/live").status_code == 200

        hub.db.dispose()
        (tmp_path / "db").mkdir()  # an empty file appears in its place: no schema
        r = client.get("/health/ready")
        assert r.status_code == 503
        assert "vethub db upgrade" in r.json()["not_ready"]["database"]


def test_not_ready_names_each_cause(sqlite_hub: Hub) -> None:
    hub = sqlite_hub
    working = hub.db
    hub.db = Database("postgresql+psycopg://vethub@127.0.0.1:9/vethub")  # nothing listens on 9
    try:
        with TestClient(build_app(hub)) as client:
            r = client.get("/health/ready")
            assert r.status_code == 503
            body = r.json()
            assert body["status"] == "not_ready" and list(body["not_ready"]) == ["database"]
            assert "unreachable" in body["not_ready"]["database"]
            assert client.get("/health/live").status_code == 200
        # Without the lifespan (no `with`) the doors never started: both causes named.
        r = TestClient(build_app(hub)).get("/health/ready")
        assert r.status_code == 503
        assert sorted(r.json()["not_ready"]) == ["database", "doors"]
        assert "doors" in r.json()["not_ready"]["doors"]
    finally:
        hub.db.dispose()
        hub.db = working
