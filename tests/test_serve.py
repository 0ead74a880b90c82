"""The whole process: `vethub serve`, ports.json, health, keys CLI, shutdown."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from tests.harness import REPO, ServedHub, start_hub


def vethub(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hub.cli", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )


def test_doors_ports_and_health(served_hub: ServedHub) -> None:
    ports = json.loads((served_hub.data_dir / "ports.json").read_text())
    assert set(ports) >= {"http", "dicom", "hl7"}
    assert all(isinstance(ports[k], int) and ports[k] > 0 for k in ("http", "dicom"))
    assert httpx.get(f"{served_hub.url}/health").json() == {"status": "ok"}
    assert httpx.get(f"{served_hub.url}/docs").status_code == 200
    assert httpx.get(f"{served_hub.url}/api/v1/orders").status_code == 401
    # Logs are JSON, one object a line.
    lines = [ln for ln in served_hub.log().splitlines() if ln.startswith("{")]
    assert lines and all(isinstance(json.loads(ln), dict) for ln in lines)


def test_keys_cli_while_serving(served_hub: ServedHub, db_url: str) -> None:
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
