"""An admin retries a failed delivery in a real browser (headless Debian Chromium
driven by Playwright) against a real ``vethub serve`` whose delivery worker sends
to a real webhook receiver: the receiver fails, the delivery is failed on the
Deliveries page, the receiver is fixed, the admin presses Retry and the page
shows it delivered (its own 15 s poll). A tech does not see People and keys and
gets 403 opening it by URL.

Screenshots go to ``$VETHUB_SCREENSHOTS`` (default tests/artifacts/); their
paths are printed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from hub.db import Database
from hub.services import users
from tests.browser import await_poll, launch, require_chromium, screenshots, watched_page
from tests.delivery_receivers import WebhookReceiver
from tests.factories import rex
from tests.harness import empty_tables, start_hub

PASSWORD = "correct horse battery"
SECRET = "s3cret-s3cret-s3cret"

sync_api = require_chromium()


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    r = WebhookReceiver(SECRET, mode="500")
    yield r
    r.close()


def make_people(db_url: str) -> None:
    db = Database(db_url)
    try:
        if db_url.startswith("postgresql"):
            empty_tables(db)
        else:
            db.upgrade()
        with db.session() as s:
            users.create(s, "ada", "admin", PASSWORD, actor="test")
            users.create(s, "tina", "tech", PASSWORD, actor="test")
    finally:
        db.dispose()


def sign_in(page: sync_api.Page, url: str, name: str) -> None:
    page.goto(f"{url}/sign-in")
    page.get_by_label("Username").fill(name)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{url}/console")


def test_an_admin_retries_a_failed_delivery_and_a_tech_cannot_reach_people(
    db_url: str, tmp_path: Path, receiver: WebhookReceiver
) -> None:
    backend = "postgresql" if db_url.startswith("postgresql") else "sqlite"
    make_people(db_url)
    hub = start_hub(
        tmp_path / "served",
        db_url,
        VETHUB_DELIVERY_POLL_SECONDS="0.2",
        VETHUB_DELIVERY_BACKOFF_SECONDS="0.2",
        VETHUB_DELIVERY_MAX_ATTEMPTS="1",
    )
    try:
        with hub.api() as api:
            r = api.put(
                "/api/v1/sources/pims-main",
                json={
                    "webhook_url": receiver.url,
                    "webhook_secret": SECRET,
                    "results": ["webhook"],
                    "events": ["order.cancelled"],
                },
            )
            assert r.status_code == 201, r.text
            order = api.post("/api/v1/orders", json=rex()).json()
            assert api.post(f"/api/v1/orders/{order['id']}/cancel").status_code == 200
        shots = screenshots()
        url = hub.url
        with sync_api.sync_playwright() as p:
            browser = launch(p)
            try:
                page, blocked = watched_page(browser)
                # The page's clock is moved on a poll interval at a time (await_poll).
                page.clock.install()
                sign_in(page, url, "ada")
                page.get_by_role("link", name="Deliveries").click()
                page.wait_for_url(f"{url}/console/deliveries")
                failed = page.locator("#h-failed + div tr", has_text="order.cancelled")
                # The worker's one attempt fails (HTTP 500): the poll shows it failed.
                await_poll(page, failed)
                row = failed.first
                assert "failed" in row.inner_text() and "500" in row.inner_text()
                before = shots / f"console-deliveries-failed-{backend}.png"
                page.screenshot(path=str(before), full_page=True)

                receiver.mode = "ok"
                row.get_by_role("button", name="Retry").click()
                page.wait_for_url(f"{url}/console/deliveries?done=*")
                assert "queued to be sent again now" in page.inner_text("[role=status]")
                # The worker sends it; the page's own poll shows it delivered.
                await_poll(page, page.locator("#h-delivered + div .d-delivered"))
                assert page.locator("#h-failed + div tr").count() == 0
                after = shots / f"console-deliveries-{backend}.png"
                page.screenshot(path=str(after), full_page=True)
                assert blocked == []
                page.context.clear_cookies()

                tech = browser.new_page(viewport={"width": 1280, "height": 900})
                sign_in(tech, url, "tina")
                assert tech.get_by_role("link", name="People and keys").count() == 0
                assert tech.get_by_role("link", name="Deliveries").count() == 0
                answer = tech.goto(f"{url}/console/people")
                assert answer is not None and answer.status == 403
                assert "Not allowed" in tech.inner_text("h1")
                refused = shots / f"console-people-refused-tech-{backend}.png"
                tech.screenshot(path=str(refused), full_page=True)
            finally:
                browser.close()
        [got] = receiver.wait_for(1)
        assert got.signature_ok and got.headers["x-vethub-event"] == "order.cancelled"
        with hub.api() as api:
            [d] = api.get("/api/v1/deliveries").json()["items"]
            assert d["status"] == "delivered"
            trail = api.get("/api/v1/audit", params={"action": "delivery.retry"}).json()["items"]
            assert [e["actor"].split(":")[-1] for e in trail] == ["ada"]
    finally:
        hub.stop()
    print(f"\nscreenshots: {before} {after} {refused}")


def test_an_admin_echoes_a_device_and_reprocesses_a_message(db_url: str, tmp_path: Path) -> None:
    """The two buttons that call JSON API routes from a page (htmx, session cookie,
    CSRF header; results.js shows the answer): C-ECHO a real DCMTK storescp, and
    Reprocess an HL7 message, which opens the new message's page."""
    from datetime import UTC, datetime

    from hub.services import messages
    from tests.test_console_messages import ACK, ORM_CA
    from tests.test_echo import STORESCP, start_storescp

    if STORESCP is None:
        pytest.skip("DCMTK storescp is not installed")
    backend = "postgresql" if db_url.startswith("postgresql") else "sqlite"
    make_people(db_url)
    db = Database(db_url)
    try:
        with db.session() as s:
            first = messages.record(
                s,
                {
                    "received_at": datetime.now(UTC),
                    "sender": "VETPMS",
                    "facility": "HAPPYPAWS",
                    "control_id": "PMS000044",
                    "type": "ORM^O01",
                    "version": "2.5.1",
                    "charset": "UNICODE UTF-8",
                    "outcome": "AE",
                    "raw": ORM_CA,
                    "ack": ACK,
                },
            )
    finally:
        db.dispose()
    hub = start_hub(tmp_path / "served", db_url)
    scp = start_storescp(tmp_path, "DX_ROOM1")
    port = next(scp)
    try:
        with hub.api() as api:
            r = api.put(
                "/api/v1/modalities/DX_ROOM1",
                json={"modality": "DX", "host": "127.0.0.1", "port": port, "description": "Room 1"},
            )
            assert r.status_code == 201, r.text
            # A closed port: the button says so, as data.
            dead = api.put(
                "/api/v1/modalities/US_OFF",
                json={"modality": "US", "host": "127.0.0.1", "port": 9},
            )
            assert dead.status_code == 201
        shots = screenshots()
        url = hub.url
        with sync_api.sync_playwright() as p:
            browser = launch(p)
            try:
                page, blocked = watched_page(browser)
                sign_in(page, url, "ada")
                page.get_by_role("link", name="Devices and sources").click()
                page.wait_for_url(f"{url}/console/devices")
                page.get_by_role("button", name="C-ECHO DX_ROOM1").click()
                ok = page.locator("#devices-live .result.ok")
                ok.wait_for(timeout=10_000)
                assert ok.inner_text().startswith("OK: DX_ROOM1 at 127.0.0.1")
                page.get_by_role("button", name="C-ECHO US_OFF").click()
                bad = page.locator("#devices-live .result.bad")
                bad.wait_for(timeout=10_000)
                assert bad.inner_text().startswith("Failed:")
                devices = shots / f"console-devices-{backend}.png"
                page.screenshot(path=str(devices), full_page=True)

                page.get_by_role("link", name="Messages").click()
                page.wait_for_url(f"{url}/console/messages")
                page.locator(f"#message-{first} a").first.click()
                page.wait_for_url(f"{url}/console/messages/{first}")
                assert page.locator("th", has_text="PID-5").count() >= 1
                message = shots / f"console-message-{backend}.png"
                page.screenshot(path=str(message), full_page=True)
                page.get_by_role(
                    "button", name="Reprocess with the profiles as they are now"
                ).click()
                page.wait_for_url(lambda u: u != f"{url}/console/messages/{first}", timeout=10_000)
                assert "Reprocessing of" in page.inner_text("main")
                assert page.get_attribute("dl.facts a[href^='/console/messages/']", "href") == (
                    f"/console/messages/{first}"
                )

                others = []
                for name, path in (
                    ("people", "/console/people"),
                    ("audit", "/console/audit"),
                    ("qc", "/console/qc"),
                ):
                    page.goto(f"{url}{path}")
                    shot = shots / f"console-{name}-{backend}.png"
                    page.screenshot(path=str(shot), full_page=True)
                    others.append(shot)
                assert "modality.echo" in page.goto(f"{url}/console/audit").text()  # type: ignore[union-attr]
                assert blocked == []
            finally:
                browser.close()
    finally:
        scp.close()
        hub.stop()
    print(f"\nscreenshots: {devices} {message} {' '.join(map(str, others))}")
