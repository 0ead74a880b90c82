"""The console's Deliveries page (docs/console.md) through the app with signed-in
sessions, on SQLite and PostgreSQL: failed and pending first with the receiver's
last answer, retry one or all failed of a source, CSRF, roles, escaping."""

from __future__ import annotations

import re
import uuid

from fastapi.testclient import TestClient

from hub.context import Hub
from hub.models import Delivery
from hub.services import events, users

PASSWORD = "correct horse battery"
EVIL = "<script>alert(1)</script>"


def signed_in(hub: Hub, client: TestClient, role: str, name: str | None = None) -> TestClient:
    """A browser (cookies only, no API key) signed in as a new ``role`` account."""
    name = name or f"{role}-user"
    with hub.db.session() as s:
        users.create(s, name, role, PASSWORD, actor="test")
    browser = TestClient(client.app)
    r = browser.post(
        "/sign-in", data={"username": name, "password": PASSWORD}, follow_redirects=False
    )
    assert r.status_code == 303
    return browser


def csrf(browser: TestClient) -> str:
    return users.csrf_token(browser.cookies["vethub_session"])


def nav_links(html: str) -> list[str]:
    nav = html.split('<nav aria-label="Console">', 1)[1].split("</nav>", 1)[0]
    return re.findall(r'href="([^"]+)"', nav)


def delivery(hub: Hub, source: str, status: str, **values: object) -> int:
    row = Delivery(
        uuid=str(uuid.uuid4()),
        source=source,
        kind="webhook",
        event_kind="order.completed",
        outbox_event_id=1,
        status=status,
        **values,  # type: ignore[arg-type]
    )
    with hub.db.session() as s:
        s.add(row)
        s.flush()
        assert row.id is not None
        return row.id


def test_failed_and_pending_come_first_with_the_receivers_answer(
    hub: Hub, client: TestClient
) -> None:
    ok = delivery(hub, "pims-main", "delivered", attempts=1)
    failed = delivery(hub, "pims-main", "failed", attempts=20, last_error="HTTP 500: boom")
    pending = delivery(hub, "lab", "pending", attempts=3, last_error="connection refused")
    browser = signed_in(hub, client, "admin")
    r = browser.get("/console/deliveries")
    assert r.status_code == 200
    text = r.text
    assert "/console/deliveries" in nav_links(text)
    assert text.index(f'id="delivery-{failed}"') < text.index(f'id="delivery-{pending}"')
    assert text.index(f'id="delivery-{pending}"') < text.index(f'id="delivery-{ok}"')
    assert "HTTP 500: boom" in text and "connection refused" in text
    assert ">pims-main</a>: 1 failed" in text and "Retry all failed of pims-main" in text
    assert 'hx-trigger="every 15s"' in text
    # One source only, and the poll answers with the fragment.
    lab = browser.get("/console/deliveries?source=lab", headers={"HX-Request": "true"})
    assert "<html" not in lab.text
    assert f'id="delivery-{pending}"' in lab.text and f'id="delivery-{failed}"' not in lab.text


def test_retry_one_resends_it_and_audits_the_person(hub: Hub, client: TestClient) -> None:
    failed = delivery(hub, "pims-main", "failed", attempts=20, last_error="HTTP 500")
    browser = signed_in(hub, client, "admin", "ada")
    refused = browser.post(f"/console/deliveries/{failed}/retry", data={})
    assert refused.status_code == 403 and "security token" in refused.text
    wrong = browser.post(f"/console/deliveries/{failed}/retry", data={"csrf_token": "nope"})
    assert wrong.status_code == 403
    with hub.db.read_session() as s:
        assert s.get(Delivery, failed).status == "failed"  # type: ignore[union-attr]
    r = browser.post(
        f"/console/deliveries/{failed}/retry",
        data={"csrf_token": csrf(browser)},
        follow_redirects=False,
    )
    assert r.status_code == 303 and r.headers["location"].endswith(f"done=retry-{failed}")
    with hub.db.read_session() as s:
        row = s.get(Delivery, failed)
        assert row is not None and row.status == "pending" and row.attempts == 0
        trail, _ = events.audit_trail(s, action="delivery.retry")
    assert [(e.target_id, e.actor.split(":")[-1]) for e in trail] == [(str(failed), "ada")]
    page = browser.get(r.headers["location"])
    assert f"Delivery {failed} is queued to be sent again now." in page.text
    missing = browser.post("/console/deliveries/999999/retry", data={"csrf_token": csrf(browser)})
    assert missing.status_code == 404 and "does not exist" in missing.text


def test_retry_all_failed_of_a_source_leaves_other_sources(hub: Hub, client: TestClient) -> None:
    a = delivery(hub, "pims-main", "failed", attempts=20)
    b = delivery(hub, "pims-main", "failed", attempts=20)
    other = delivery(hub, "lab", "failed", attempts=20)
    browser = signed_in(hub, client, "admin")
    r = browser.post(
        "/console/deliveries/retry-failed",
        data={"csrf_token": csrf(browser), "source": "pims-main"},
        follow_redirects=False,
    )
    assert r.status_code == 303 and r.headers["location"].endswith("done=retried-2")
    with hub.db.read_session() as s:
        assert [s.get(Delivery, i).status for i in (a, b, other)] == [  # type: ignore[union-attr]
            "pending",
            "pending",
            "failed",
        ]


def test_only_admins_see_and_use_deliveries(hub: Hub, client: TestClient) -> None:
    failed = delivery(hub, "pims-main", "failed", attempts=20)
    for role in ("frontdesk", "tech", "vet"):
        browser = signed_in(hub, client, role)
        assert "/console/deliveries" not in nav_links(browser.get("/console").text)
        assert browser.get("/console/deliveries").status_code == 403
        r = browser.post(f"/console/deliveries/{failed}/retry", data={"csrf_token": csrf(browser)})
        assert r.status_code == 403
    with hub.db.read_session() as s:
        assert s.get(Delivery, failed).status == "failed"  # type: ignore[union-attr]


def test_a_receivers_answer_and_source_are_escaped(hub: Hub, client: TestClient) -> None:
    delivery(hub, "pims-main", "failed", attempts=20, last_error=f"HTTP 500: {EVIL}")
    browser = signed_in(hub, client, "admin")
    text = browser.get("/console/deliveries").text
    assert EVIL not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    text = browser.get("/console/deliveries", params={"source": EVIL}).text
    assert EVIL not in text
