"""A person signs in and out in a real browser (headless Chromium driven by Playwright)
against a real ``vethub serve``: the form, the cookie, the console, sign-out."""

from __future__ import annotations

from pathlib import Path

from hub.db import Database
from hub.services import users
from tests.browser import launch, require_chromium
from tests.harness import ServedHub

PASSWORD = "correct horse battery"

sync_api = require_chromium()


def test_a_person_signs_in_lands_on_the_console_and_signs_out(
    served_hub: ServedHub, db_url: str, tmp_path: Path
) -> None:
    db = Database(db_url)
    try:
        with db.session() as s:
            users.create(s, "anna", "vet", PASSWORD, actor="test")
    finally:
        db.dispose()
    url = served_hub.url
    with sync_api.sync_playwright() as p:
        browser = launch(p)
        try:
            context = browser.new_context()
            page = context.new_page()
            page.goto(f"{url}/console")  # not signed in: sent to the sign-in form
            assert page.url == f"{url}/sign-in?next=/console"

            page.get_by_label("Username").fill("anna")
            page.get_by_label("Password").fill("not the password")
            with page.expect_response(f"{url}/sign-in") as wrong:
                page.get_by_role("button", name="Sign in").click()
            assert wrong.value.status == 401
            assert "not right" in page.content()

            page.get_by_label("Username").fill("anna")
            page.get_by_label("Password").fill(PASSWORD)
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url(f"{url}/console")
            assert "Signed in as anna (vet)" in page.inner_text("body")
            page.screenshot(path=str(tmp_path / "console.png"))
            (cookie,) = [c for c in context.cookies() if c["name"] == "vethub_session"]
            assert cookie["httpOnly"] and cookie["sameSite"] == "Lax"

            page.get_by_role("button", name="Sign out").click()
            page.wait_for_url(f"{url}/sign-in")
            assert [c for c in context.cookies() if c["name"] == "vethub_session"] == []
            page.goto(f"{url}/console")
            assert page.url == f"{url}/sign-in?next=/console"
        finally:
            browser.close()
