"""C-ECHO from the hub to a registered device (``POST /api/v1/modalities/{ae}/echo``):
against a real DCMTK ``storescp`` (plain and over TLS with a trustme CA), a
closed port, a wrong AE title, an unregistered device and one without host/port."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
from fastapi.testclient import TestClient

from hub.context import Hub
from hub.serve import build_app
from hub.services import events
from tests.harness import ADMIN_KEY, free_port, key_for, make_settings, start_listener, write_cert

STORESCP = shutil.which("storescp")
pytestmark = pytest.mark.skipif(STORESCP is None, reason="DCMTK storescp is not installed")


def start_storescp(tmp_path: Path, ae: str, *tls: str) -> Iterator[int]:
    port = free_port()
    out = tmp_path / "scp"
    out.mkdir(exist_ok=True)
    assert STORESCP is not None
    proc = start_listener([STORESCP, "-aet", ae, "-od", str(out), *tls, str(port)], port)
    try:
        yield port
    finally:
        proc.terminate()
        proc.wait(5)


@pytest.fixture
def device(tmp_path: Path) -> Iterator[int]:
    yield from start_storescp(tmp_path, "DX_ROOM1")


def register(client: TestClient, ae: str, **values: object) -> None:
    r = client.put(f"/api/v1/modalities/{ae}", json={"modality": "DX", **values})
    assert r.status_code in (200, 201), r.text


def test_echo_a_device_that_answers(hub: Hub, client: TestClient, device: int) -> None:
    register(client, "DX_ROOM1", host="127.0.0.1", port=device)
    tech = TestClient(client.app, headers={"Authorization": f"Bearer {key_for(hub, 'tech')}"})
    r = tech.post("/api/v1/modalities/DX_ROOM1/echo")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["ok"] is True and body["status"] == 0
    assert "DX_ROOM1 at 127.0.0.1" in body["detail"] and 0 < body["ms"] < 5000
    with hub.db.read_session() as s:
        [entry], _ = events.audit_trail(s, action="modality.echo")
    assert entry.target_id == "DX_ROOM1" and entry.actor.endswith(":test-tech")


def test_a_device_that_refuses_the_association_is_a_result(
    hub: Hub, client: TestClient, tmp_path: Path
) -> None:
    for port in start_storescp(tmp_path, "SOMEONE_ELSE", "--refuse"):
        register(client, "DX_ROOM1", host="127.0.0.1", port=port)
        body = client.post("/api/v1/modalities/DX_ROOM1/echo").json()
        assert body["ok"] is False and body["status"] is None
        # storescp refuses with A-ASSOCIATE-RJ and closes at once; under load the
        # close can overtake the reject, which pynetdicom then reports as an abort.
        assert "rejected the association" in body["detail"] or "aborted" in body["detail"]


def test_a_closed_port_is_a_result_not_an_error(hub: Hub, client: TestClient) -> None:
    register(client, "US_ROOM", host="127.0.0.1", port=free_port())
    started = time.monotonic()
    r = client.post("/api/v1/modalities/US_ROOM/echo")
    assert r.status_code == 200
    body = r.json()
    assert body["ok"] is False and body["status"] is None
    assert "US_ROOM at 127.0.0.1" in body["detail"]
    assert time.monotonic() - started < 10


def test_unregistered_device_no_address_and_roles(hub: Hub, client: TestClient) -> None:
    assert client.post("/api/v1/modalities/NOBODY/echo").status_code == 404
    register(client, "CT_ROOM")
    r = client.post("/api/v1/modalities/CT_ROOM/echo")
    assert r.status_code == 409 and "no host and port" in r.json()["detail"]
    for role in ("frontdesk", "vet", "integration"):
        other = TestClient(client.app, headers={"Authorization": f"Bearer {key_for(hub, role)}"})
        assert other.post("/api/v1/modalities/CT_ROOM/echo").status_code == 403


def test_echo_over_tls_checks_the_devices_certificate(
    hub: Hub, db_url: str, tmp_path: Path
) -> None:
    ca = trustme.CA()
    cert, key = write_cert(ca, tmp_path / "device", "device")
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    tls = ["+tls", str(key), str(cert), "-ic"]
    trusting = Hub.open(make_settings(tmp_path / "h", db_url, tls_extra_ca=ca_file), upgrade=True)
    try:
        for port in start_storescp(tmp_path, "DX_TLS", *tls):
            with TestClient(
                build_app(trusting), headers={"Authorization": f"Bearer {ADMIN_KEY}"}
            ) as client:
                register(client, "DX_TLS", host="127.0.0.1", port=port, tls=True)
                body = client.post("/api/v1/modalities/DX_TLS/echo").json()
                assert body["ok"] is True, body
                assert "(TLS)" in body["detail"]
            # The hub without the clinic's CA refuses the device's certificate.
            with TestClient(
                build_app(hub), headers={"Authorization": f"Bearer {ADMIN_KEY}"}
            ) as plain:
                refused = plain.post("/api/v1/modalities/DX_TLS/echo").json()
                assert refused["ok"] is False, refused
    finally:
        trusting.close()
