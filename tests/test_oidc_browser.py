"""Single sign-on in a real browser (headless Debian Chromium driven by Playwright):
the hub's sign-in page, the provider's login and consent pages (oidc-provider
run by node), and back to the console signed in with the mapped role."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from hub.db import Database
from hub.models import User
from tests.browser import launch, require_chromium
from tests.harness import ServedHub, empty_tables, free_port, start_hub
from tests.oidc_fixture import CLIENT_ID, CLIENT_SECRET, running_provider

sync_api = require_chromium()


@pytest.fixture
def sso_served(db_url: str, tmp_path: Path) -> Iterator[ServedHub]:
    """``vethub serve`` on a known port (the provider must know its callback first)."""
    if db_url.startswith("postgresql"):
        db = Database(db_url)
        empty_tables(db)
        db.dispose()
    port = free_port()
    public = f"http://127.0.0.1:{port}"
    callback = f"{public}/sign-in/oidc/callback"
    with running_provider(callback, {"vera": ["vets"]}, tmp_path / "oidc") as provider:
        served = start_hub(
            tmp_path / "served",
            db_url,
            VETHUB_HTTP_PORT=str(port),
            VETHUB_PUBLIC_URL=public,
            VETHUB_OIDC_ISSUER=provider.issuer,
            VETHUB_OIDC_CLIENT_ID=CLIENT_ID,
            VETHUB_OIDC_CLIENT_SECRET=CLIENT_SECRET,
            VETHUB_OIDC_ROLE_MAP='{"vets": "vet"}',
            VETHUB_OIDC_PROVIDER_NAME="Clinic SSO",
        )
        try:
            yield served
        finally:
            served.stop()


def test_a_vet_signs_in_through_the_provider(
    sso_served: ServedHub, db_url: str, tmp_path: Path
) -> None:
    url = sso_served.url
    with sync_api.sync_playwright() as p:
        browser = launch(p)
        try:
            page = browser.new_context().new_page()
            page.goto(f"{url}/sign-in")
            page.get_by_role("link", name="Sign in with Clinic SSO").click()
            page.wait_for_selector("input[name=login]")  # the provider's own login page
            assert not page.url.startswith(url)
            page.fill("input[name=login]", "vera")
            page.fill("input[name=password]", "any password")
            page.get_by_role("button", name="Sign-in").click()
            # A first sign-in to the hub: the provider asks to consent (its own page).
            page.get_by_role("button", name="Continue").click()
            page.wait_for_url(f"{url}/console")
            assert "Signed in as vera (vet)" in " ".join(page.inner_text("body").split())
            page.screenshot(path=str(tmp_path / "sso-console.png"))
        finally:
            browser.close()
    db = Database(db_url)
    try:
        with db.read_session() as s:
            (user,) = s.scalars(select(User)).all()
    finally:
        db.dispose()
    assert (user.username, user.role, user.oidc_subject) == ("vera", "vet", "vera")
