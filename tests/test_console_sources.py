"""Practice systems (sources) registered and edited from the console
(``/console/devices/sources``), admin only, on SQLite and PostgreSQL: the same
checks and service as ``PUT /api/v1/sources/{name}``, the secret write-only,
field errors beside their fields, CSRF, escaping and the audit log."""

from __future__ import annotations

from fastapi.testclient import TestClient

from hub.context import Hub
from hub.services import events, sources
from tests.test_console_deliveries import EVIL, csrf, signed_in

SECRET = "first-secret-never-shown-1"
NEW_SECRET = "second-secret-never-shown-2"


def form(browser: TestClient, **fields: object) -> dict[str, object]:
    base: dict[str, object] = {
        "csrf_token": csrf(browser),
        "hl7_profile": "default",
        "webhook_url": "https://pims.example/hook",
        "webhook_secret": "",
        "hl7_host": "",
        "hl7_port": "",
        "results": ["webhook"],
        "events": ["study.received", "order.completed"],
        "hl7_senders": "",
    }
    return {**base, **fields}


def stored(hub: Hub, name: str) -> dict[str, object]:
    with hub.db.read_session() as s:
        row = sources.get(s, name)
        return {**sources.public(row), "secret": row.webhook_secret}


def test_an_admin_registers_a_source_and_edits_it(hub: Hub, client: TestClient) -> None:
    admin = signed_in(hub, client, "admin", "ada")
    page = admin.get("/console/devices").text
    assert "Register a source" in page and 'value="hl7-oru"' in page and "qc.daily" in page
    r = admin.post(
        "/console/devices/sources",
        data=form(admin, name="pims-main", webhook_secret=SECRET),
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text
    assert r.headers["location"] == "/console/devices?done=source-registered"
    row = stored(hub, "pims-main")
    assert row["secret"] == SECRET and row["results"] == ["webhook"]
    assert row["events"] == ["study.received", "order.completed"]
    assert "The source is registered." in admin.get(r.headers["location"]).text
    again = admin.post("/console/devices/sources", data=form(admin, name="pims-main"))
    assert again.status_code == 422 and "is registered already" in again.text

    edit = admin.get("/console/devices/sources/pims-main")
    assert edit.status_code == 200
    assert 'value="https://pims.example/hook"' in edit.text and "(set)" in edit.text
    assert SECRET not in edit.text
    # An empty secret keeps the stored one; the other fields are replaced.
    r = admin.post(
        "/console/devices/sources/pims-main",
        data=form(
            admin,
            webhook_url="https://pims.example/v2",
            hl7_host="10.0.0.5",
            hl7_port="2575",
            tls="on",
            results=["webhook", "hl7-oru"],
            events=["order.cancelled"],
            hl7_senders="PIMS, MAIN, 10.0.0.0/24\n\n, , 10.0.0.9\nLAB,,",
        ),
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text
    assert r.headers["location"] == "/console/devices?done=source-saved"
    row = stored(hub, "pims-main")
    assert row["secret"] == SECRET and row["webhook_url"] == "https://pims.example/v2"
    assert row["hl7_host"] == "10.0.0.5" and row["hl7_port"] == 2575 and row["tls"] is True
    assert row["results"] == ["webhook", "hl7-oru"] and row["events"] == ["order.cancelled"]
    assert row["hl7_senders"] == [
        {"application": "PIMS", "facility": "MAIN", "address": "10.0.0.0/24"},
        {"address": "10.0.0.9"},
        {"application": "LAB"},
    ]
    text = admin.get("/console/devices/sources/pims-main").text
    assert "PIMS, MAIN, 10.0.0.0/24\n, , 10.0.0.9\nLAB, , " in text and "checked" in text
    # A typed secret replaces it, and is shown nowhere.
    r = admin.post(
        "/console/devices/sources/pims-main",
        data=form(admin, webhook_secret=NEW_SECRET),
        follow_redirects=False,
    )
    assert r.status_code == 303
    assert stored(hub, "pims-main")["secret"] == NEW_SECRET
    for url in ("/console/devices", "/console/devices/sources/pims-main"):
        text = admin.get(url).text
        assert NEW_SECRET not in text and SECRET not in text
    with hub.db.read_session() as s:
        trail, _ = events.audit_trail(s, action="source.put", target_id="pims-main")
    assert len(trail) == 3
    assert all(e.actor.startswith("user:") and e.actor.endswith(":ada") for e in trail)
    assert all(NEW_SECRET not in str(e.detail) and SECRET not in str(e.detail) for e in trail)


def test_a_bad_webhook_url_shows_the_field_error_and_keeps_the_values(
    hub: Hub, client: TestClient
) -> None:
    admin = signed_in(hub, client, "admin")
    r = admin.post(
        "/console/devices/sources",
        data=form(
            admin,
            name="pims-main",
            webhook_url="ftp://pims.example/hook",
            webhook_secret=SECRET,
            hl7_host="10.0.0.5",
            hl7_senders="PIMS, MAIN, not-an-address",
        ),
    )
    assert r.status_code == 422
    text = r.text
    assert 'id="e-webhook_url"' in text and "must be an http:// or https:// URL" in text
    assert 'aria-describedby="e-webhook_url"' in text
    assert 'id="e-hl7_senders"' in text and "sender 1 (address)" in text
    assert 'value="ftp://pims.example/hook"' in text and 'value="10.0.0.5"' in text
    assert 'value="pims-main"' in text and "PIMS, MAIN, not-an-address" in text
    assert SECRET not in text
    assert admin.get("/console/devices/sources/pims-main").status_code == 404  # nothing saved
    # An edit's error re-renders the edit form; the stored source is unchanged.
    assert (
        client.put(
            "/api/v1/sources/pims-main",
            json={
                "webhook_url": "https://pims.example/hook",
                "webhook_secret": SECRET,
                "results": ["webhook"],
            },
        ).status_code
        == 201
    )
    r = admin.post(
        "/console/devices/sources/pims-main",
        data=form(admin, webhook_url="https://pims .example"),
    )
    assert r.status_code == 422 and "must not contain spaces" in r.text
    assert "(set)" in r.text and SECRET not in r.text and "Save source" in r.text
    r = admin.post("/console/devices/sources/pims-main", data=form(admin, hl7_port="http"))
    assert r.status_code == 422 and 'id="e-hl7_port"' in r.text and 'value="http"' in r.text
    assert stored(hub, "pims-main")["webhook_url"] == "https://pims.example/hook"


def test_a_tech_may_not_edit_sources(hub: Hub, client: TestClient) -> None:
    r = client.put("/api/v1/sources/pims-main", json={"hl7_profile": "default"})
    assert r.status_code == 201, r.text
    tech = signed_in(hub, client, "tech")
    page = tech.get("/console/devices").text
    assert "pims-main" in page and "Register a source" not in page
    assert "/console/devices/sources/pims-main" not in page
    assert tech.get("/console/devices/sources/pims-main").status_code == 403
    r = tech.post("/console/devices/sources/pims-main", data=form(tech))
    assert r.status_code == 403
    r = tech.post("/console/devices/sources", data=form(tech, name="other"))
    assert r.status_code == 403
    assert stored(hub, "pims-main")["webhook_url"] is None


def test_a_post_without_the_csrf_token_is_refused(hub: Hub, client: TestClient) -> None:
    assert client.put("/api/v1/sources/pims-main", json={}).status_code == 201
    admin = signed_in(hub, client, "admin")
    data = form(admin, name="other")
    del data["csrf_token"]
    assert admin.post("/console/devices/sources", data=data).status_code == 403
    assert admin.post("/console/devices/sources/pims-main", data=data).status_code == 403
    bad = {**data, "csrf_token": "forged"}
    assert admin.post("/console/devices/sources/pims-main", data=bad).status_code == 403
    with hub.db.read_session() as s:
        assert [r.name for r in sources.list_all(s)] == ["pims-main"]
    assert stored(hub, "pims-main")["webhook_url"] is None


def test_script_in_a_name_or_url_is_escaped(hub: Hub, client: TestClient) -> None:
    admin = signed_in(hub, client, "admin")
    r = admin.post("/console/devices/sources", data=form(admin, name=EVIL))
    assert r.status_code == 422 and EVIL not in r.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in r.text
    url = f"https://pims.example/{EVIL}"
    r = admin.post(
        "/console/devices/sources",
        data=form(admin, name="pims-main", webhook_url=url, webhook_secret=SECRET),
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text
    for page in ("/console/devices", "/console/devices/sources/pims-main"):
        text = admin.get(page).text
        assert EVIL not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert admin.get(f"/console/devices/sources/{EVIL}").status_code == 404
