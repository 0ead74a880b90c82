"""Vendor sources (upstream-mwl, provet) on the console's Devices and sources page,
on SQLite and PostgreSQL: the kind, what the adapter last did (times in the
hub's zone, the last error marked), the settings with secrets only as set /
not set, provet's webhook URL for admins only, and an edit from the console
that keeps the kind and its sealed secret."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from hub.context import Hub
from hub.models import User
from hub.services import events, sources, users
from tests.test_console_deliveries import EVIL, csrf

KEY = "a passphrase of some length for sealing"
CLIENT_SECRET = "provet-client-secret-never-shown"


def signed_in(hub: Hub, client: TestClient, role: str, name: str) -> TestClient:
    """A browser with a session of a new ``role`` account, made without the sign-in
    form's argon2 hashing (seconds of this file's budget; the sign-in has its tests)."""
    with hub.db.session() as s:
        user = User(username=name, role=role, password_hash=users.NO_PASSWORD)
        s.add(user)
        s.flush()
        assert user.id is not None
        token = users.start_session(s, user.id)
    browser = TestClient(client.app)
    browser.cookies.set("vethub_session", token)
    return browser


def register(client: TestClient, hub: Hub) -> str:
    """An upstream worklist with a failed poll, and a Provet clinic; provet's webhook URL."""
    hub.settings.secret_key = KEY
    hub.settings.timezone = "America/New_York"
    hub.settings.__dict__.pop("tz", None)  # a cached zone from before
    body: dict[str, Any] = {
        "kind": "upstream-mwl",
        "upstream": {"ae_title": "CORNERSTONE", "host": "10.0.0.30", "port": 104},
    }
    r = client.put("/api/v1/sources/cornerstone", json=body)
    assert r.status_code == 201, r.text
    provet = {
        "base_url": "https://eu.provetcloud.com",
        "provet_id": "4",
        "client_id": "vethub-client",
        "client_secret": CLIENT_SECRET,
    }
    r = client.put(
        "/api/v1/sources/clinic",
        json={"kind": "provet", "provet": provet, "results": ["provet-status"]},
    )
    assert r.status_code == 201, r.text
    with hub.db.session() as s:
        sources.set_state(
            s,
            "cornerstone",
            last_poll_at="2026-11-29T15:05:00+00:00",
            last_ok_at="2026-11-29T14:04:00+00:00",
            last_result="failed",
            last_error=f"association refused {EVIL}",
            items=7,
            failures_in_a_row=2,
        )
        sources.set_state(
            s,
            "clinic",
            last_error={
                "at": "2026-11-29T12:00:00+00:00",
                "worklist_id": "81",
                "error": "HTTP 503",
            },
            webhooks_received=3,
        )
    url: str = r.json()["status"]["webhook_url"]
    assert url.startswith("http") and "/adapters/provet/clinic/" in url
    return url


def test_vendor_sources_shown_by_role_and_edited(hub: Hub, client: TestClient) -> None:
    url = register(client, hub)
    admin = signed_in(hub, client, "admin", "ada")
    page = admin.get("/console/devices").text
    assert "<td>upstream-mwl</td>" in page and "<td>provet</td>" in page
    # Times in the hub's zone (UTC-5 in November), the error marked and escaped.
    assert "Last poll at: 2026-11-29 10:05" in page and "Items: 7" in page
    assert '<span class="badge d-failed">error</span> Last error: association refused' in page
    assert EVIL not in page and "&lt;script&gt;" in page
    assert "Last error: at: 2026-11-29 07:00; error: HTTP 503; worklist id: 81" in page
    assert CLIENT_SECRET not in page and url not in page  # the URL is on the source's page

    detail = admin.get("/console/devices/sources/clinic").text
    assert f'<input id="webhook-url" readonly value="{url}">' in detail
    assert "/console/static/copy.js" in detail
    assert '<dt>client_secret</dt><dd class="wrap"><span class="badge ok">set</span>' in detail
    assert "<dt>Webhooks received</dt>" in detail and CLIENT_SECRET not in detail
    assert "&#34;provet_id&#34;: &#34;4&#34;" in detail  # the settings box, as JSON
    assert 'value="provet-status"' in detail and 'value="provet-pull"' not in detail
    mwl = admin.get("/console/devices/sources/cornerstone").text
    assert "Last result</dt>" in mwl and "failed" in mwl and "Failures in a row" in mwl
    assert "&#34;ae_title&#34;: &#34;CORNERSTONE&#34;" in mwl and "webhook-url" not in mwl
    assert admin.get("/console/static/copy.js").status_code == 200

    # A tech sees the kinds and what they last did, not settings nor the URL.
    tech = signed_in(hub, client, "tech", "tom")
    page = tech.get("/console/devices").text
    assert "<td>provet</td>" in page and "Last poll at: 2026-11-29 10:05" in page
    assert "Last error: association refused" in page
    assert url not in page and "webhook-url" not in page and "eu.provetcloud.com" not in page
    assert tech.get("/console/devices/sources/clinic").status_code == 403

    # An admin edits a vendor source from the console: the kind and secret stay.
    form: dict[str, Any] = {
        "csrf_token": csrf(admin),
        "hl7_profile": "default",
        "results": ["provet-status"],
        "events": ["order.completed"],
    }
    bad = admin.post("/console/devices/sources/clinic", data=form | {"kind_settings": "{nope"})
    assert bad.status_code == 422 and "is not valid JSON" in bad.text
    assert "{nope" in bad.text and 'id="vendor-status"' in bad.text
    missing = '{"provet_id": "4", "client_id": "c", "base_url": ""}'
    bad = admin.post("/console/devices/sources/clinic", data=form | {"kind_settings": missing})
    assert bad.status_code == 422 and "base_url: is required" in bad.text
    assert CLIENT_SECRET not in bad.text

    settings = (
        '{"base_url": "https://us.provetcloud.com", "provet_id": "4", '
        '"client_id": "vethub-client", "page_size": 10}'
    )
    r = admin.post(
        "/console/devices/sources/clinic",
        data=form | {"kind_settings": settings},
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text
    # An empty box keeps an upstream source's settings; its status stays.
    r = admin.post(
        "/console/devices/sources/cornerstone",
        data=form | {"results": [], "kind_settings": ""},
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text
    with hub.db.read_session() as s:
        clinic = sources.get(s, "clinic")
        assert clinic.kind == "provet" and clinic.events == ["order.completed"]
        config = sources.kind_config(clinic, KEY)
        assert config["client_secret"] == CLIENT_SECRET and config["page_size"] == 10
        assert config["base_url"] == "https://us.provetcloud.com"
        mwl = sources.get(s, "cornerstone")
        assert mwl.kind == "upstream-mwl" and mwl.kind_settings["ae_title"] == "CORNERSTONE"
        assert (mwl.kind_state or {})["items"] == 7
        trail, _ = events.audit_trail(s, action="source.put", target_id="clinic")
    assert trail[0].actor.endswith(":ada") and trail[0].detail["kind"] == "provet"
    assert CLIENT_SECRET not in str(trail[0].detail)
