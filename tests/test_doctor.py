"""``vethub doctor`` against a running hub with a real device (DCMTK storescp) and
source, then against broken setups: each fault is named and the exit is 1."""

from __future__ import annotations

import json
import socket
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import trustme

from hub.cli import main
from tests.harness import ServedHub, start_hub, start_listener


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedHub]:
    data = tmp_path_factory.mktemp("doctor") / "data"
    hub = start_hub(data, f"sqlite:///{data / 'vethub.db'}")
    port = _free_port()
    device = start_listener(["storescp", "--aetitle", "ECHO_PEER", str(port)], port)
    try:
        with hub.api() as api:
            r = api.put("/api/v1/modalities/ECHO_PEER", json={"host": "127.0.0.1", "port": port})
            assert r.status_code in (200, 201), r.text
            body = {
                "webhook_url": f"{hub.url}/health",
                "hl7_host": "127.0.0.1",
                "hl7_port": hub.hl7,
            }
            r = api.put("/api/v1/sources/pims", json=body)
            assert r.status_code in (200, 201), r.text
        yield hub
    finally:
        device.terminate()
        device.wait()
        hub.stop()


def _env_of(monkeypatch: pytest.MonkeyPatch, hub: ServedHub) -> None:
    """The settings the served hub runs with, its real ports included."""
    for name, value in {
        "DATA_DIR": str(hub.data_dir),
        "DATABASE_URL": f"sqlite:///{hub.data_dir / 'vethub.db'}",
        "HTTP_PORT": str(hub.http),
        "DICOM_PORT": str(hub.dicom),
        "HL7_PORT": str(hub.hl7),
        "DICOM_HOST": "127.0.0.1",
        "HL7_HOST": "127.0.0.1",
        "PUBLIC_URL": hub.url,
    }.items():
        monkeypatch.setenv(f"VETHUB_{name}", value)


def _doctor(capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, tuple[str, str]]]:
    capsys.readouterr()
    code = main(["doctor", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is (code == 0)
    return code, {c["name"]: (c["status"], c["detail"]) for c in report["checks"]}


def test_healthy_hub_passes_every_check(
    served: ServedHub, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _env_of(monkeypatch, served)
    code, checks = _doctor(capsys)
    assert code == 0, checks
    for name in (
        "config",
        "database",
        "database schema",
        "clock",
        "door http",
        "door dicom",
        "door hl7",
        "public url",
        "disk",
        "tls certificate",
        "device ECHO_PEER",
        "source pims webhook",
        "source pims hl7",
    ):
        assert checks[name][0] == "ok", (name, checks[name])
    assert "in use by this hub" in checks["door dicom"][1]
    assert "success" in checks["device ECHO_PEER"][1]


def test_unreachable_source_mllp_fails_by_name(
    served: ServedHub, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with served.api() as api:
        r = api.put(
            "/api/v1/sources/gone", json={"hl7_host": "127.0.0.1", "hl7_port": _free_port()}
        )
        assert r.status_code in (200, 201), r.text
    try:
        _env_of(monkeypatch, served)
        code, checks = _doctor(capsys)
    finally:
        with served.api() as api:
            api.delete("/api/v1/sources/gone")
    assert code == 1
    assert checks["source gone hl7"][0] == "fail"
    assert "not reachable" in checks["source gone hl7"][1]
    assert checks["source pims hl7"][0] == "ok"


def test_broken_setup_names_each_fault(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    sqlite3.connect(data / "vethub.db").close()  # a database, but never migrated
    ca = trustme.CA()
    now = datetime.now(UTC)
    old = ca.issue_cert(
        "127.0.0.1", not_before=now - timedelta(days=90), not_after=now - timedelta(days=1)
    )
    cert, key = tmp_path / "hub.pem", tmp_path / "hub.key"
    old.cert_chain_pems[0].write_to_path(str(cert))
    old.private_key_pem.write_to_path(str(key))
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    for name, value in {
        "DATA_DIR": str(data),
        "DATABASE_URL": f"sqlite:///{data / 'vethub.db'}",
        "HTTP_PORT": "0",
        "DICOM_PORT": "0",
        "HL7_PORT": str(taken.getsockname()[1]),
        "HL7_HOST": "127.0.0.1",
        "TLS_CERT": str(cert),
        "TLS_KEY": str(key),
        "PUBLIC_URL": "https://127.0.0.1:9",
    }.items():
        monkeypatch.setenv(f"VETHUB_{name}", value)
    try:
        code, checks = _doctor(capsys)
        assert main(["doctor"]) == 1  # the readable report says the same
        table = capsys.readouterr().out
    finally:
        taken.close()
    assert code == 1
    assert checks["database schema"] == ("fail", "no vethub schema: run `vethub db upgrade`")
    assert checks["door hl7"][0] == "fail" and "another program" in checks["door hl7"][1]
    assert checks["tls certificate"][0] == "fail" and "expired" in checks["tls certificate"][1]
    assert checks["public url"][0] == "warn"  # nothing runs here: not a failure
    for name in ("database schema", "door hl7", "tls certificate"):
        assert name in table
    assert "failed" in table


def test_unreachable_database_and_bad_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("VETHUB_DATA_DIR", str(tmp_path))
    monkeypatch.setenv(
        "VETHUB_DATABASE_URL", f"postgresql+psycopg://postgres@127.0.0.1:{_free_port()}/x"
    )
    code, checks = _doctor(capsys)
    assert code == 1 and checks["database"][0] == "fail"
    assert "cannot use" in checks["database"][1]
    monkeypatch.setenv("VETHUB_HTTP_PORT", "not-a-port")
    code, checks = _doctor(capsys)
    assert code == 1
    assert checks["config"][0] == "fail" and "HTTP_PORT" in checks["config"][1]
