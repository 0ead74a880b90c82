"""A tech reconciles a waiting study in a real browser (headless Debian Chromium
driven by Playwright) against a real ``vethub serve``: sign in, Today, the queue,
attach after confirming; the order moves on as reconcile says (in progress).

Screenshots of Today and the queue go to ``$VETHUB_SCREENSHOTS`` (default
tests/artifacts/); their paths are printed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from hub.db import Database
from hub.services import completion, users
from tests import study_factory as sf
from tests.browser import launch, require_chromium, screenshots, watched_page
from tests.factories import rex
from tests.harness import ServedHub

PASSWORD = "correct horse battery"

sync_api = require_chromium()


def make_tech(db_url: str) -> None:
    db = Database(db_url)
    try:
        with db.session() as s:
            users.create(s, "tina", "tech", PASSWORD, actor="test")
    finally:
        db.dispose()


def test_a_tech_attaches_a_waiting_study_from_the_queue(
    served_hub: ServedHub, db_url: str, request: pytest.FixtureRequest
) -> None:
    backend = "postgresql" if db_url.startswith("postgresql") else "sqlite"
    make_tech(db_url)
    now = datetime.now().replace(microsecond=0)
    with served_hub.api() as api:
        order = api.post("/api/v1/orders", json=rex(scheduled_start=now.isoformat())).json()
    # Keyed in by hand at the unit: Rex's name, but a patient id and no accession.
    study = sf.instance(
        patient_id="P-999", patient_name="Smith^Rex", study_date=now.strftime("%Y%m%d"), rows=64
    )
    assert sf.send(served_hub.dicom, [study]) == [0]
    uid = str(study.StudyInstanceUID)

    url = served_hub.url
    shots = screenshots()
    with sync_api.sync_playwright() as p:
        browser = launch(p)
        try:
            page, blocked = watched_page(browser)
            page.goto(f"{url}/console")
            page.get_by_label("Username").fill("tina")
            page.get_by_label("Password").fill(PASSWORD)
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url(f"{url}/console")
            body = page.inner_text("main")
            assert "main · DX_ROOM1" in body and "Rex" in body and "waiting: no match" in body
            today = shots / f"console-today-{backend}.png"
            page.screenshot(path=str(today), full_page=True)

            # htmx is loaded from the hub and sends the session's CSRF token on its requests.
            assert page.evaluate("typeof window.htmx") == "object"
            with page.expect_request(lambda r: r.url == f"{url}/console") as poll:
                page.evaluate(
                    "htmx.ajax('GET', '/console', {source: '#today-live', target: '#today-live'})"
                )
            token = page.get_attribute('meta[name="csrf-token"]', "content")
            assert token and poll.value.headers.get("x-csrf-token") == token
            assert poll.value.headers.get("hx-request") == "true"
            assert poll.value.headers.get("x-console-poll") == "1"  # not a use of the session

            page.get_by_role("link", name="Reconciliation queue").click()
            page.wait_for_url(f"{url}/console/queue")
            card = page.locator("article", has_text="No order fits")
            assert card.count() == 1
            thumb = card.locator("img").first
            thumb.wait_for()
            page.wait_for_function(
                "img => img.complete && img.naturalWidth > 0", arg=thumb.element_handle()
            )
            queue = shots / f"console-queue-{backend}.png"
            page.screenshot(path=str(queue), full_page=True)
            page.set_viewport_size({"width": 768, "height": 1024})  # a tablet, upright
            tablet = shots / f"console-queue-tablet-{backend}.png"
            page.screenshot(path=str(tablet), full_page=True)
            wide = page.evaluate("document.documentElement.scrollWidth")
            assert wide <= 768, "the queue scrolls sideways on a tablet"

            card.get_by_role("link", name="Attach to Rex, order A1001").click()
            page.wait_for_url(f"{url}/console/queue/{uid}/attach?order_id={order['id']}")
            assert "Attach this study to Rex's order?" in page.inner_text("h1")
            page.get_by_role("button", name="Attach study to order A1001").click()
            page.wait_for_url(f"{url}/console/queue?*")
            assert "the order is now in progress" in page.inner_text("[role=status]")
            assert page.locator("article", has_text="No order fits").count() == 0
            assert blocked == []
        finally:
            browser.close()
    with served_hub.api() as api:
        attached = api.get(f"/api/v1/studies/{uid}").json()
        assert attached["order_id"] == order["id"] and attached["match_method"] == "manual"
        # reconcile starts a scheduled order (docs/studies.md); MPPS or the quiet
        # period completes it later.
        assert api.get(f"/api/v1/orders/{order['id']}").json()["status"] == "in_progress"
        trail = api.get("/api/v1/audit", params={"action": "reconcile"}).json()["items"]
        assert [e["actor"].split(":")[-1] for e in trail] == ["tina"]
    # The unit sends no MPPS: the hub's quiet-period job completes the order once
    # images have stopped arriving (run here as the job runs it, 31 minutes on).
    db = Database(db_url)
    try:
        with db.session() as s:
            later = datetime.now(UTC) + timedelta(minutes=31)
            done = completion.complete_quiet_orders(s, quiet_minutes=30, now=later)
    finally:
        db.dispose()
    assert done == [order["id"]]
    with served_hub.api() as api:
        assert api.get(f"/api/v1/orders/{order['id']}").json()["status"] == "completed"
    print(f"\nscreenshots: {today} {queue} {tablet}")
