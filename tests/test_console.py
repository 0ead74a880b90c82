"""The console's pages (docs/console.md) through the app with a signed-in session:
who sees which page, what each page shows, CSRF on its forms, escaping, headers."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from hub.console import web
from hub.context import Hub
from hub.models import StaffSession, as_utc, utcnow
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
    ("role", "shown", "hidden"),
    [
        ("frontdesk", ["/console", "/console/orders"], ["/console/queue"]),
        ("tech", ["/console", "/console/queue", "/console/orders"], []),
        ("vet", ["/console", "/console/queue", "/console/orders"], []),
        ("admin", ["/console", "/console/queue", "/console/orders"], []),
    ],
)
def test_the_nav_shows_a_role_only_its_pages(
    hub: Hub, client: TestClient, role: str, shown: list[str], hidden: list[str]
) -> None:
    browser = person(hub, client, role)
    r = browser.get("/console")
    assert r.status_code == 200
    links = nav_links(r.text)
    assert links == [p.path for p in web.PAGES if p.allows(role)]  # every page, in order
    assert [x for x in links if x in shown] == shown
    assert not set(hidden) & set(links)
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


def test_a_poll_does_not_keep_the_session_alive(hub: Hub, client: TestClient) -> None:
    browser = person(hub, client, "tech")
    ago = utcnow() - timedelta(minutes=5)

    def last_used() -> datetime:
        with hub.db.read_session() as s:
            return as_utc(s.scalars(select(StaffSession.last_used_at)).one())

    with hub.db.session() as s:
        s.execute(update(StaffSession).values(last_used_at=ago))
    poll = {"HX-Request": "true", "X-Console-Poll": "1"}
    assert browser.get("/console/queue", headers=poll).status_code == 200
    assert abs(last_used() - ago) < timedelta(seconds=1)  # a list refreshing itself
    assert browser.get("/console/queue").status_code == 200
    assert utcnow() - last_used() < timedelta(seconds=30)  # a person opening the page
    # Idle too long: the next poll is sent to sign in.
    idle = hub.settings.session_idle_minutes
    with hub.db.session() as s:
        s.execute(update(StaffSession).values(last_used_at=utcnow() - timedelta(minutes=idle + 1)))
    ended = browser.get("/console/queue", headers=poll, follow_redirects=False)
    assert ended.status_code == 401 and ended.headers["hx-redirect"].startswith("/sign-in")


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


# -- the reconciliation queue ---------------------------------------------------


def waiting_study(hub: Hub, **changes: object) -> str:
    """A study that waits: Rex's name but a patient id no order has (no_match)."""
    ds = sf.instance(patient_id="P-999", patient_name="Smith^Rex", **changes)
    sf.store(hub, ds)
    return str(ds.StudyInstanceUID)


def test_the_queue_shows_why_a_study_waits_its_previews_and_candidates(
    hub: Hub, client: TestClient
) -> None:
    order = sf.place(client)
    uid = waiting_study(hub)
    tech = person(hub, client, "tech")
    r = tech.get("/console/queue")
    assert r.status_code == 200
    assert "no match" in r.text and "No order fits" in r.text
    assert f"/viewer/studies/{uid}/instances/" in r.text and "preview.png" in r.text
    attach = f"/console/queue/{uid}/attach?order_id={order['id']}"
    assert attach in r.text and "Rex" in r.text and "Smith" in r.text and "DX" in r.text
    # A preview the page links to is served to this session.
    src = re.search(r'src="(/viewer/studies/[^"]+/preview\.png)"', r.text)
    assert src is not None and tech.get(src.group(1)).status_code in (200, 204)
    # A vet sees the queue but no buttons that change it.
    vet = person(hub, client, "vet")
    seen = vet.get("/console/queue").text
    assert uid in seen and "/attach?" not in seen


def test_a_role_opening_a_page_by_url_gets_403(hub: Hub, client: TestClient) -> None:
    frontdesk = person(hub, client, "frontdesk")
    r = frontdesk.get("/console/queue")
    assert r.status_code == 403 and "may not open this page" in r.text
    assert "/console/queue" not in nav_links(r.text)
    uid = waiting_study(hub)
    assert frontdesk.get(f"/console/queue/{uid}/attach?order_id=1").status_code == 403
    vet = person(hub, client, "vet")
    assert vet.get(f"/console/queue/{uid}/attach?order_id=1").status_code == 403


def test_attach_after_confirming_reconciles_and_audits_the_person(
    hub: Hub, client: TestClient
) -> None:
    order = sf.place(client)
    uid = waiting_study(hub)
    tech = person(hub, client, "tech")
    confirm = tech.get(f"/console/queue/{uid}/attach?order_id={order['id']}")
    assert confirm.status_code == 200
    assert f'action="/console/queue/{uid}/attach"' in confirm.text
    assert f'name="csrf_token" value="{csrf(tech)}"' in confirm.text

    url = f"/console/queue/{uid}/attach"
    no_token = tech.post(url, data={"order_id": order["id"]}, follow_redirects=False)
    assert no_token.status_code == 403
    wrong = tech.post(
        url, data={"order_id": order["id"], "csrf_token": "x" * 43}, follow_redirects=False
    )
    assert wrong.status_code == 403
    assert client.get(f"/api/v1/studies/{uid}").json()["order_id"] is None
    vet = person(hub, client, "vet")
    refused = vet.post(
        url, data={"order_id": order["id"], "csrf_token": csrf(vet)}, follow_redirects=False
    )
    assert refused.status_code == 403

    r = tech.post(
        url, data={"order_id": order["id"], "csrf_token": csrf(tech)}, follow_redirects=False
    )
    assert r.status_code == 303 and r.headers["location"].startswith("/console/queue?attached=")
    study = client.get(f"/api/v1/studies/{uid}").json()
    assert study["order_id"] == order["id"] and study["match_method"] == "manual"
    assert client.get(f"/api/v1/orders/{order['id']}").json()["status"] == "in_progress"
    trail = client.get("/api/v1/audit", params={"action": "reconcile"}).json()["items"]
    assert [e["actor"] for e in trail if e["target_id"] == uid] == [
        f"user:{tech_id(hub)}:tech-user"
    ]
    after = tech.get(r.headers["location"]).text
    assert "Study attached to order A1001 (Rex); the order is now in progress." in after
    assert "Attached in the last days" in after and f"/console/studies/{uid}/detach" in after


def tech_id(hub: Hub) -> int:
    with hub.db.read_session() as s:
        found = users.by_name(s, "tech-user")
        assert found.id is not None
        return found.id


def test_detach_returns_the_study_to_the_queue(hub: Hub, client: TestClient) -> None:
    order = sf.place(client)
    sf.store(hub, sf.instance(accession="A1001"))  # matched by accession on arrival
    uid = client.get("/api/v1/studies").json()["items"][0]["study_instance_uid"]
    tech = person(hub, client, "tech")
    confirm = tech.get(f"/console/studies/{uid}/detach")
    assert confirm.status_code == 200 and "A1001" in confirm.text
    url = f"/console/studies/{uid}/detach"
    assert tech.post(url, follow_redirects=False).status_code == 403  # no CSRF token
    r = tech.post(url, data={"csrf_token": csrf(tech)}, follow_redirects=False)
    assert r.status_code == 303
    study = client.get(f"/api/v1/studies/{uid}").json()
    assert study["order_id"] is None and study["unmatched_reason"] == "no_match"
    assert client.get(f"/api/v1/orders/{order['id']}").json()["status"] == "in_progress"
    assert "is waiting again" in tech.get(r.headers["location"]).text
    again = tech.post(url, data={"csrf_token": csrf(tech)}, follow_redirects=False)
    assert again.status_code == 409 and "not attached" in again.text


def test_attaching_to_a_cancelled_order_is_refused_on_a_page(hub: Hub, client: TestClient) -> None:
    order = sf.place(client)
    assert client.post(f"/api/v1/orders/{order['id']}/cancel").status_code == 200
    uid = waiting_study(hub)
    tech = person(hub, client, "tech")
    r = tech.post(
        f"/console/queue/{uid}/attach",
        data={"order_id": order["id"], "csrf_token": csrf(tech)},
        follow_redirects=False,
    )
    assert r.status_code == 409 and "cancelled" in r.text and "<html" in r.text
    missing = tech.get("/console/queue/1.2.3/attach?order_id=1")
    assert missing.status_code == 404 and "<html" in missing.text


# -- orders ---------------------------------------------------------------------


def test_order_search_by_name_id_accession_date_and_status(hub: Hub, client: TestClient) -> None:
    sf.place(client)  # Rex, P-555, A1001, 2026-11-27
    bella = rex(placer_order_number="ORD-2", accession_number="A2")
    bella["patient"] |= {"id": "P-777", "name": "Bella"}
    assert client.post("/api/v1/orders", json=bella).status_code == 201
    desk = person(hub, client, "frontdesk")

    def found(**params: str) -> set[str]:
        r = desk.get("/console/orders", params=params)
        assert r.status_code == 200
        return set(re.findall(r"<td>(A1001|A2)</td>", r.text))

    assert found() == {"A1001", "A2"}
    assert found(q="rex") == {"A1001"}
    assert found(q="smi") == {"A1001", "A2"}  # the owner's name
    assert found(q="P-777") == {"A2"}
    assert found(accession="A2") == {"A2"}
    assert found(date="2026-11-27") == {"A1001", "A2"}
    assert found(date="2026-11-28") == set()
    assert found(status="cancelled") == set()
    bad = desk.get("/console/orders", params={"date": "yesterday", "status": "lost"})
    assert bad.status_code == 200
    assert "is not a date" in bad.text and "Unknown status" in bad.text


def test_frontdesk_cancels_with_a_reason_and_it_is_audited(hub: Hub, client: TestClient) -> None:
    order = sf.place(client)
    url = f"/console/orders/{order['id']}"
    tech = person(hub, client, "tech")
    page = tech.get(url)
    assert page.status_code == 200 and "A1001" in page.text and "Cancel order" not in page.text
    refused = tech.post(
        f"{url}/cancel", data={"reason": "x", "csrf_token": csrf(tech)}, follow_redirects=False
    )
    assert refused.status_code == 403

    desk = person(hub, client, "frontdesk")
    assert "Cancel order" in desk.get(url).text
    no_token = desk.post(f"{url}/cancel", data={"reason": "owner called"}, follow_redirects=False)
    assert no_token.status_code == 403
    no_reason = desk.post(
        f"{url}/cancel", data={"reason": "  ", "csrf_token": csrf(desk)}, follow_redirects=False
    )
    assert no_reason.status_code == 400
    assert client.get(f"/api/v1/orders/{order['id']}").json()["status"] == "scheduled"
    r = desk.post(
        f"{url}/cancel",
        data={"reason": "owner called, dog better", "csrf_token": csrf(desk)},
        follow_redirects=False,
    )
    assert r.status_code == 303
    assert client.get(f"/api/v1/orders/{order['id']}").json()["status"] == "cancelled"
    trail = client.get("/api/v1/audit", params={"action": "cancel"}).json()["items"]
    (entry,) = [e for e in trail if e["target_id"] == str(order["id"])]
    assert entry["actor"].endswith(":frontdesk-user")
    assert entry["detail"]["reason"] == "owner called, dog better"
    after = desk.get(r.headers["location"]).text
    assert "The order is cancelled." in after and "Cancel order" not in after


def test_an_order_in_progress_is_discontinued_not_cancelled(hub: Hub, client: TestClient) -> None:
    order = sf.place(client)
    sf.store(hub, sf.instance(accession="A1001"))
    admin = person(hub, client, "admin")
    url = f"/console/orders/{order['id']}"
    page = admin.get(url).text
    assert "Discontinue order" in page and "Cancel order" not in page
    assert "/console/studies/" in page  # its study, with a detach link
    cancel = admin.post(
        f"{url}/cancel", data={"reason": "r", "csrf_token": csrf(admin)}, follow_redirects=False
    )
    assert cancel.status_code == 409 and "discontinue it instead" in cancel.text
    r = admin.post(
        f"{url}/discontinue",
        data={"reason": "patient stressed", "csrf_token": csrf(admin)},
        follow_redirects=False,
    )
    assert r.status_code == 303
    assert client.get(f"/api/v1/orders/{order['id']}").json()["status"] == "discontinued"
    assert admin.get("/console/orders/999999").status_code == 404


# -- escaping on every page -------------------------------------------------------


def test_script_in_an_animals_name_is_escaped_on_every_page(hub: Hub, client: TestClient) -> None:
    body = rex(scheduled_start=now_local())
    body["patient"]["name"] = EVIL
    body["owner"]["last_name"] = EVIL
    order = client.post("/api/v1/orders", json=body).json()
    day = now_local()[:10].replace("-", "")
    waiting = waiting_study(hub, study_date=day, StudyDescription=EVIL)
    sf.store(hub, sf.instance(patient_name=f"{EVIL}^{EVIL}", accession=order["accession_number"]))
    attached = next(
        s["study_instance_uid"]
        for s in client.get("/api/v1/studies", params={"matched": "true"}).json()["items"]
    )
    admin = person(hub, client, "admin")
    pages = [
        "/console",
        "/console/queue",
        f"/console/queue/{waiting}/attach?order_id={order['id']}",
        f"/console/studies/{attached}/detach",
        "/console/orders",
        "/console/orders?q=" + EVIL,
        f"/console/orders/{order['id']}",
    ]
    for url in pages:
        r = admin.get(url)
        assert r.status_code == 200, url
        assert EVIL not in r.text, url
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in r.text, url
    # Error pages repeat what was asked for: escaped too.
    tag = "<img src=x onerror=alert(1)>"
    missing = admin.get(f"/console/queue/{tag}/attach?order_id=1")
    assert missing.status_code == 404 and tag not in missing.text
    assert "&lt;img src=x onerror=alert(1)&gt;" in missing.text
