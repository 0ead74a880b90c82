"""The console's pages (docs/console.md) through the app with a signed-in session:
who sees which page, what each page shows, CSRF on its forms, escaping, headers."""

from __future__ import annotations

import re
from datetime import datetime

import pytest
from fastapi.testclient import TestClient

from hub.context import Hub
from hub.services import users
from tests import study_factory as sf
from tests.factories import rex

PASSWORD = "correct horse battery"
EVIL = "<script>alert(1)</script>"


def person(hub: Hub, client: TestClient, role: str) -> TestClient:
    """A browser (cookies only, no API key) signed in as a new ``role`` account."""
    with hub.db.session() as s:
        users.create(s, f"{role}-user", role, PASSWORD, actor="test")
    browser = TestClient(client.app)
    r = browser.post(
        "/sign-in", data={"username": f"{role}-user", "password": PASSWORD}, follow_redirects=False
    )
    assert r.status_code == 303
    return browser


def csrf(browser: TestClient) -> str:
    return users.csrf_token(browser.cookies["vethub_session"])


def now_local() -> str:
    """Now as a naive local time: the hub's zone is the machine's in the tests."""
    return datetime.now().replace(microsecond=0).isoformat()


def nav_links(html: str) -> list[str]:
    nav = html.split('<nav aria-label="Console">', 1)[1].split("</nav>", 1)[0]
    return re.findall(r'href="([^"]+)"', nav)


@pytest.mark.parametrize(
    ("role", "pages"),
    [
        ("frontdesk", ["/console", "/console/orders"]),
        ("tech", ["/console", "/console/queue", "/console/orders"]),
        ("vet", ["/console", "/console/queue", "/console/orders"]),
        ("admin", ["/console", "/console/queue", "/console/orders"]),
    ],
)
def test_the_nav_shows_a_role_only_its_pages(
    hub: Hub, client: TestClient, role: str, pages: list[str]
) -> None:
    browser = person(hub, client, role)
    r = browser.get("/console")
    assert r.status_code == 200
    assert nav_links(r.text) == pages
    assert f"Signed in as <strong>{role}-user</strong> ({role})" in r.text
    assert f'<meta name="csrf-token" content="{csrf(browser)}">' in r.text


def test_today_shows_the_day_per_station_and_what_arrived(hub: Hub, client: TestClient) -> None:
    now = now_local()
    sf.place(client, scheduled_start=now)  # Rex, DX_ROOM1, site main
    sf.place(
        client,
        placer_order_number="ORD-2",
        accession_number="A2",
        station_ae_title="US_ROOM",
        modality="US",
        scheduled_start=now,
    )
    sf.place(
        client,
        placer_order_number="ORD-OLD",
        accession_number="A-OLD",
        scheduled_start="2020-01-02T09:00:00",
    )
    day = now[:10].replace("-", "")
    sf.store(hub, sf.instance(accession="A1001", study_date=day))  # starts Rex's order
    sf.store(hub, sf.instance(patient_id="X-1", patient_name="Jones^Bella", study_date=day))
    browser = person(hub, client, "frontdesk")
    r = browser.get("/console")
    assert r.status_code == 200
    text = r.text
    assert "main · DX_ROOM1" in text and "main · US_ROOM" in text
    assert "A-OLD" not in text  # another day
    assert "scheduled: <strong>1</strong>" in text and "in progress: <strong>1</strong>" in text
    assert "Booked, not started (1)" in text
    assert "Studies received today (2)" in text
    assert "Bella Jones" in text and "waiting: no match" in text


def test_a_poll_gets_the_fragment_only(hub: Hub, client: TestClient) -> None:
    browser = person(hub, client, "vet")
    r = browser.get("/console", headers={"HX-Request": "true"})
    assert r.status_code == 200
    assert "<html" not in r.text and "Worklist by site and station" in r.text
    full = browser.get("/console").text
    assert 'hx-trigger="every 15s"' in full


def test_nobody_signed_in_is_sent_to_sign_in(hub: Hub, client: TestClient) -> None:
    browser = TestClient(client.app)
    r = browser.get("/console", headers={"accept": "text/html"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/sign-in?next=/console"
    poll = browser.get("/console", headers={"HX-Request": "true"}, follow_redirects=False)
    assert poll.status_code == 401 and poll.headers["hx-redirect"] == "/sign-in?next=/console"
    # An API key is for machines: it does not open the console (401, not a sign-in page).
    keyed = client.get("/console", headers={"accept": "text/html"}, follow_redirects=False)
    assert keyed.status_code == 401


def test_console_pages_allow_only_the_hubs_own_script_and_style(
    hub: Hub, client: TestClient
) -> None:
    browser = person(hub, client, "admin")
    r = browser.get("/console")
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "style-src 'self'" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert "frame-ancestors 'none'" in csp and r.headers["cache-control"] == "no-store"
    # No inline script or style: every <script> has a src, no style attributes.
    assert re.findall(r"<script(?![^>]*\ssrc=)", r.text) == []
    assert "<style" not in r.text and " style=" not in r.text
    assert "http://" not in r.text and "https://" not in r.text  # nothing from elsewhere


def test_static_files_are_served_and_nothing_else(hub: Hub, client: TestClient) -> None:
    browser = TestClient(client.app)
    css = browser.get("/console/static/console.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    js = browser.get("/console/static/console.js")
    assert js.status_code == 200 and "X-CSRF-Token" in js.text
    htmx = browser.get("/console/static/vendor/htmx.min.js")
    assert htmx.status_code == 200, "run `make web-assets` (npm ci --prefix web)"
    assert htmx.headers["content-type"].startswith("text/javascript")
    for name in ("../web.py", "..%2Fweb.py", "templates/base.html", "nope.js", "/etc/passwd"):
        assert browser.get(f"/console/static/{name}").status_code == 404, name


def test_an_animals_name_is_escaped_on_today(hub: Hub, client: TestClient) -> None:
    body = rex(scheduled_start=now_local())
    body["patient"]["name"] = EVIL
    assert client.post("/api/v1/orders", json=body).status_code == 201
    browser = person(hub, client, "tech")
    text = browser.get("/console").text
    assert EVIL not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
