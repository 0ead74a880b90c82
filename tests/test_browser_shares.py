"""A pet owner opens a share link on a phone (headless Chromium at 390x844 with touch)
against a real ``vethub serve``: the plain banner, big images, a swipe to the next one;
a withdrawn link shows its 410 page. Screenshots go to tests/artifacts."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydicom.uid import generate_uid

from tests import study_factory as sf
from tests.browser import launch, require_chromium, screenshots
from tests.factories import REX
from tests.harness import ServedHub, start_hub

sync_api = require_chromium()
PHONE = {"width": 390, "height": 844}


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedHub]:
    """One served hub for the module (the database logic is tested on both in test_shares)."""
    folder = tmp_path_factory.mktemp("shares")
    served = start_hub(folder / "data", f"sqlite:///{folder / 'vethub.db'}")
    yield served
    served.stop()


def _phone_page(browser: Any) -> tuple[Any, list[str]]:
    context = browser.new_context(
        viewport=PHONE, is_mobile=True, has_touch=True, device_scale_factor=2
    )
    page = context.new_page()
    blocked: list[str] = []
    page.on(
        "console",
        lambda m: blocked.append(m.text) if "Content Security Policy" in m.text else None,
    )
    return page, blocked


def _swipe(page: Any, start: int, distance: int) -> None:
    """A finger drawn right to left across the screen, as touch events (Playwright's
    own touchscreen only taps), a frame apart so the compositor scrolls with it."""
    cdp = page.context.new_cdp_session(page)

    def at(x: int) -> list[dict[str, float]]:
        return [{"x": x, "y": 500, "id": 1, "radiusX": 5, "radiusY": 5, "force": 1}]

    cdp.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": at(start)})
    for step in range(1, 11):
        page.wait_for_timeout(32)
        x = start - distance * step // 10
        cdp.send("Input.dispatchTouchEvent", {"type": "touchMove", "touchPoints": at(x)})
    cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})


def test_an_owner_swipes_through_the_pictures_on_a_phone(hub: ServedHub) -> None:
    with hub.api() as api:
        order = api.post("/api/v1/orders", json=REX).json()
        uid, series = order["study_instance_uid"], generate_uid()
        images = [
            sf.instance(
                accession=order["accession_number"],
                study_uid=uid,
                series_uid=series,
                rows=128,
                InstanceNumber=str(n),
            )
            for n in (1, 2, 3)
        ]
        assert sf.send(hub.dicom, images) == [0, 0, 0]
        body = {"mode": "owner", "allow_download": True, "note": "Mrs Smith"}
        made = api.post(f"/api/v1/studies/{uid}/shares", json=body).json()
        withdrawn = api.post(f"/api/v1/studies/{uid}/shares", json={"mode": "owner"}).json()
        assert api.delete(f"/api/v1/studies/{uid}/shares/{withdrawn['id']}").status_code == 204
    # The links start with the hub's public_url, derived from the port it bound.
    link, gone_link = made["url"], withdrawn["url"]
    assert link.startswith(f"{hub.url}/shared/") and gone_link.startswith(f"{hub.url}/shared/")
    # The download streams (no length known up front) and is a whole ZIP.
    with httpx.stream("GET", f"{link}/study.zip") as zipped:
        assert zipped.status_code == 200 and "content-length" not in zipped.headers
        assert zipped.headers["transfer-encoding"] == "chunked"
        assert b"".join(zipped.iter_bytes())[:2] == b"PK"

    out = screenshots()
    with sync_api.sync_playwright() as p:
        browser = launch(p)
        try:
            page, blocked = _phone_page(browser)
            opened = page.goto(link)
            assert opened is not None and opened.status == 200
            banner = page.inner_text(".banner")
            assert "Rex, a 7-year-old Labrador Retriever (dog)." in banner
            assert "X-ray (Thorax, 2 views), 27 November 2026." in banner
            assert "3 pictures: swipe to see the next." in banner
            assert page.get_by_role("link", name="Download the pictures (ZIP)").is_visible()
            page.wait_for_function(  # the first two load at once, the third when near
                "[...document.images].slice(0, 2).every(i => i.complete && i.naturalWidth > 0)"
            )
            first = page.locator(".shot img").first.bounding_box()
            assert first is not None and first["width"] >= 380 and first["height"] >= 400
            page.screenshot(path=str(out / "share-owner-phone.png"))

            # A real touch swipe, shorter than the screen: scroll snapping finishes it.
            strip = page.locator(".strip")
            assert strip.evaluate("e => e.scrollLeft") == 0
            _swipe(page, start=300, distance=220)
            page.wait_for_function(
                "() => { const s = document.querySelector('.strip');"
                " return Math.abs(s.scrollLeft - s.clientWidth) < 2; }"
            )
            second = page.locator(".shot").nth(1).bounding_box()
            assert second is not None and abs(second["x"]) < 2  # the 2nd image fills the screen
            page.screenshot(path=str(out / "share-owner-swiped.png"))
            assert blocked == []

            gone = page.goto(gone_link)
            assert gone is not None and gone.status == 410
            text = page.inner_text("body")
            assert "This link was withdrawn by the clinic" in text
            assert "ask the clinic for a new link" in text and "Rex" not in text
            page.screenshot(path=str(out / "share-withdrawn-410.png"))
        finally:
            browser.close()
    for name in ("share-owner-phone.png", "share-owner-swiped.png", "share-withdrawn-410.png"):
        assert Path(out / name).stat().st_size > 0
