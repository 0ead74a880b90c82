"""Devices and sources (``/console/devices``) through the app with signed-in sessions
on SQLite and PostgreSQL: who sees what, unknown callers registered by an admin,
the C-ECHO button, sources without their secrets, CSRF and escaping."""

from __future__ import annotations

from fastapi.testclient import TestClient

from hub.context import Hub
from hub.services import events, modalities, peers
from tests.test_console_deliveries import EVIL, csrf, nav_links, signed_in

SECRET = "a-webhook-secret-never-shown"


def setup(client: TestClient, hub: Hub) -> None:
    r = client.put(
        "/api/v1/modalities/DX_ROOM1",
        json={
            "modality": "DX",
            "site": "main",
            "host": "10.0.0.20",
            "port": 104,
            "description": f"X-ray {EVIL}",
        },
    )
    assert r.status_code == 201, r.text
    assert client.put("/api/v1/modalities/US_ROOM", json={"modality": "US"}).status_code == 201
    r = client.put(
        "/api/v1/sources/pims-main",
        json={
            "webhook_url": "https://pims.example/hook",
            "webhook_secret": SECRET,
            "results": ["webhook"],
        },
    )
    assert r.status_code == 201, r.text
    with hub.db.session() as s:
        peers.record(s, "dicom", "CT_NEW", "10.0.0.9", refused=True)
        peers.record(s, "hl7", "LABSYS", "10.0.0.44", facility="EAST", refused=True)
        modalities.touch(s, "DX_ROOM1", "query")


def test_a_tech_sees_devices_and_sources_but_changes_nothing(hub: Hub, client: TestClient) -> None:
    setup(client, hub)
    tech = signed_in(hub, client, "tech")
    assert "/console/devices" in nav_links(tech.get("/console").text)
    r = tech.get("/console/devices")
    assert r.status_code == 200
    text = r.text
    assert "DX_ROOM1" in text and "10.0.0.20:104" in text and "US_ROOM" in text
    assert 'hx-post="/api/v1/modalities/DX_ROOM1/echo"' in text
    assert "/api/v1/modalities/US_ROOM/echo" not in text  # no host/port, no button
    assert "never" in text  # US_ROOM never queried
    assert "pims-main" in text and ">set<" in text and SECRET not in text
    assert "Unknown callers" not in text and "CT_NEW" not in text  # admin only
    assert "LABSYS" not in text
    assert "Register a device" not in text and "Remove" not in text
    r = tech.post(
        "/console/devices/register", data={"csrf_token": csrf(tech), "ae_title": "CT_NEW"}
    )
    assert r.status_code == 403


def test_frontdesk_and_vets_do_not_open_devices(hub: Hub, client: TestClient) -> None:
    for role in ("frontdesk", "vet"):
        browser = signed_in(hub, client, role)
        assert "/console/devices" not in nav_links(browser.get("/console").text)
        assert browser.get("/console/devices").status_code == 403


def test_an_admin_registers_an_unknown_caller_and_removes_a_device(
    hub: Hub, client: TestClient
) -> None:
    setup(client, hub)
    admin = signed_in(hub, client, "admin", "ada")
    text = admin.get("/console/devices").text
    assert "CT_NEW" in text and "10.0.0.9" in text and "refused" in text
    assert "Unknown HL7 senders (1)" in text and "LABSYS" in text and "EAST" in text
    form = {"ae_title": "CT_NEW", "host": "10.0.0.9", "modality": "CT"}
    assert admin.post("/console/devices/register", data=form).status_code == 403  # no token
    r = admin.post(
        "/console/devices/register",
        data={**form, "csrf_token": csrf(admin)},
        follow_redirects=False,
    )
    assert r.status_code == 303
    with hub.db.read_session() as s:
        row = modalities.get(s, "CT_NEW")
        assert row is not None and row.modality == "CT" and row.host == "10.0.0.9"
        [entry], _ = events.audit_trail(s, action="modality.put", target_id="CT_NEW")
    assert entry.actor.endswith(":ada")
    page = admin.get("/console/devices").text
    assert "Unknown callers (0)" in page
    again = admin.post("/console/devices/register", data={**form, "csrf_token": csrf(admin)})
    assert again.status_code == 409
    bad = admin.post(
        "/console/devices/register",
        data={"ae_title": "X", "port": "99999", "csrf_token": csrf(admin)},
    )
    assert bad.status_code == 400 and "port" in bad.text
    r = admin.post("/console/devices/US_ROOM/remove", data={"csrf_token": csrf(admin)})
    assert r.status_code == 200 and "The device is removed." in r.text
    with hub.db.read_session() as s:
        assert modalities.get(s, "US_ROOM") is None


def test_a_devices_description_is_escaped(hub: Hub, client: TestClient) -> None:
    setup(client, hub)
    admin = signed_in(hub, client, "admin")
    text = admin.get("/console/devices").text
    assert EVIL not in text and "X-ray &lt;script&gt;alert(1)&lt;/script&gt;" in text


def test_the_echo_button_reaches_the_api_with_the_session(hub: Hub, client: TestClient) -> None:
    """What the button does: POST with the session cookie and the CSRF header."""
    setup(client, hub)
    tech = signed_in(hub, client, "tech")
    refused = tech.post("/api/v1/modalities/US_ROOM/echo")
    assert refused.status_code == 403  # no CSRF header
    r = tech.post("/api/v1/modalities/US_ROOM/echo", headers={"X-CSRF-Token": csrf(tech)})
    assert r.status_code == 409  # reached the route: US_ROOM has no host/port
