"""The whole process: `vethub serve`, ports.json, health, keys CLI, shutdown."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from hub.db import Database
from tests.conftest import BACKENDS
from tests.harness import REPO, ServedHub, empty_tables, start_hub


def vethub(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hub.cli", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )


@pytest.fixture(scope="module", params=BACKENDS)
def running(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServedHub, str]]:
    """One plain hub per backend for the tests that only read from it or add keys
    (the SIGTERM test stops its hub, so it has its own): ``(hub, database URL)``."""
    folder = tmp_path_factory.mktemp(f"serve-{request.param}")
    if request.param == "sqlite":
        db_url = f"sqlite:///{folder / 'vethub.db'}"
    else:
        db_url = request.getfixturevalue("pg_url")
        db = Database(db_url)
        empty_tables(db)
        db.dispose()
    served = start_hub(folder / "served", db_url)
    yield served, db_url
    served.stop()


def test_doors_ports_and_health(running: tuple[ServedHub, str]) -> None:
    served_hub, _ = running
    ports = json.loads((served_hub.data_dir / "ports.json").read_text())
    assert set(ports) >= {"http", "dicom", "hl7"}
    assert all(isinstance(ports[k], int) and ports[k] > 0 for k in ("http", "dicom"))
    # A hub without TLS names no TLS port and serves plain HTTP.
    assert ports["http"] == served_hub.http and "https" not in ports
    assert "dicom_tls" not in ports and "hl7_tls" not in ports
    assert served_hub.url.startswith("http://")
    assert httpx.get(f"{served_hub.url}/health").json() == {"status": "ok"}
    assert httpx.get(f"{served_hub.url}/docs").status_code == 200
    assert httpx.get(f"{served_hub.url}/api/v1/orders").status_code == 401
    # Logs are JSON, one object a line.
    lines = [ln for ln in served_hub.log().splitlines() if ln.startswith("{")]
    assert lines and all(isinstance(json.loads(ln), dict) for ln in lines)


def test_keys_cli_while_serving(running: tuple[ServedHub, str]) -> None:
    served_hub, db_url = running
    env = {"VETHUB_DATA_DIR": str(served_hub.data_dir), "VETHUB_DATABASE_URL": db_url}
    made = vethub("keys", "create", "--name", "pims", "--role", "integration", env=env)
    assert made.returncode == 0, made.stderr
    created = json.loads(made.stdout)
    assert created["role"] == "integration" and created["key"]
    auth = {"Authorization": f"Bearer {created['key']}"}
    assert httpx.get(f"{served_hub.url}/api/v1/orders", headers=auth).status_code == 200
    assert httpx.get(f"{served_hub.url}/api/v1/audit", headers=auth).status_code == 403

    listed = [json.loads(ln) for ln in vethub("keys", "list", env=env).stdout.splitlines()]
    assert any(k["id"] == created["id"] and not k["revoked"] for k in listed)
    assert all("key" not in k for k in listed)  # only hashes are stored

    assert vethub("keys", "revoke", str(created["id"]), env=env).returncode == 0
    bad = vethub("keys", "create", "--name", "x", "--role", "superuser", env=env)
    assert bad.returncode != 0 and "role" in bad.stderr


def test_sigterm_stops_cleanly_and_data_survives(served_hub: ServedHub, db_url: str) -> None:
    body = {
        "placer_order_number": "KEEP-1",
        "patient": {"id": "P1", "name": "Rex"},
        "owner": {"last_name": "Smith"},
        "procedure": {"code": "XR-THORAX"},
    }
    with served_hub.api() as api:
        assert api.post("/api/v1/orders", json=body).status_code == 201
    # uvicorn re-raises the signal after its clean shutdown: death by SIGTERM
    # (-15), not a crash; the log line proves the doors were closed in order.
    assert served_hub.stop(signal.SIGTERM) in (0, -signal.SIGTERM)
    assert "vethub stopped" in served_hub.log()

    again = start_hub(served_hub.data_dir, db_url)
    try:
        with again.api() as api:
            found = api.get("/api/v1/orders", params={"placer_order_number": "KEEP-1"}).json()
        assert [o["placer_order_number"] for o in found["items"]] == ["KEEP-1"]
    finally:
        again.stop()


def test_first_start_prints_an_admin_key(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "VETHUB_DATA_DIR": str(tmp_path),
        "VETHUB_HTTP_PORT": "0",
        "VETHUB_DICOM_PORT": "0",
        "VETHUB_HL7_PORT": "0",
        "VETHUB_DICOM_HOST": "127.0.0.1",
        "VETHUB_HL7_HOST": "127.0.0.1",
    }
    env.pop("VETHUB_BOOTSTRAP_ADMIN_KEY", None)
    env.pop("VETHUB_DATABASE_URL", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "hub.cli", "serve"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=REPO,
    )
    try:
        assert proc.stdout is not None
        key = None
        for line in proc.stdout:
            if "admin API key" in line:
                key = line.rsplit(" ", 1)[-1].strip()
            if line.startswith("vethub ready"):
                break
        assert key, "no admin key printed on first start"
        http = json.loads((tmp_path / "ports.json").read_text())["http"]
        r = httpx.get(
            f"http://127.0.0.1:{http}/api/v1/audit", headers={"Authorization": f"Bearer {key}"}
        )
        assert r.status_code == 200
        assert (tmp_path / "vethub.db").exists()  # the embedded default
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
