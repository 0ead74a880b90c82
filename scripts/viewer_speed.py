"""First-image time of the diagnostic viewer, from navigation, in headless Chromium.

    .venv/bin/python scripts/viewer_speed.py [RUNS]

Starts ``vethub serve`` on a throwaway SQLite database (the test harness's
``start_hub``), stores one 512x512 16-bit radiograph (0.5 MB, as in
tests/test_browser_viewer.py), signs a vet in and opens the study link RUNS
times (default 3) in a fresh browser context (cold: nothing cached) and RUNS
times more in the same context (warm: OHIF's code cached, as on a vet's second
study of the day). Prints the median seconds from navigation until the
viewport shows the image, and OHIF's own studyToFirstImage timer.
Figures: docs/viewer.md.
"""

from __future__ import annotations

import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from playwright.sync_api import sync_playwright

from hub.db import Database
from hub.services import users
from tests import study_factory as sf
from tests.browser import launch
from tests.factories import rex
from tests.harness import start_hub
from tests.test_browser_viewer import _dx

PASSWORD = "vet password 12"
SHOWN = (
    "() => window.cornerstone && window.cornerstone.getRenderingEngines().some("
    "e => e.getViewports().some(v => v.getCurrentImageId && v.getCurrentImageId()))"
)


def first_image(page: Any, link: str) -> tuple[float, float | None]:
    timer: list[float] = []

    def note(message: Any) -> None:
        if found := re.search(r"studyToFirstImage: ([\d.]+) ms", message.text):
            timer.append(float(found.group(1)) / 1000)

    page.on("console", note)
    start = time.monotonic()
    page.goto(link)
    page.frame_locator("iframe.ohif").locator(".cornerstone-canvas").first.wait_for()
    inner = next(f for f in page.frames if "/viewer/app/" in f.url)
    inner.wait_for_function(SHOWN, polling=20)
    took = time.monotonic() - start
    page.remove_listener("console", note)
    return took, (timer[0] if timer else None)


def main(runs: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        db_url = f"sqlite:///{tmp}/vethub.db"
        hub = start_hub(Path(tmp) / "data", db_url)
        try:
            db = Database(db_url)
            with db.session() as s:
                users.create(s, "vera", "vet", PASSWORD, actor="speed")
            db.dispose()
            with hub.api() as api:
                order = api.post("/api/v1/orders", json=rex()).json()
            assert sf.send(hub.dicom, [_dx(order, 512, "20261127")]) == [0]
            link = f"{hub.url}/viewer/studies/{order['study_instance_uid']}"
            with sync_playwright() as p:
                browser = launch(p)
                cold, warm = [], []
                for n in range(runs):
                    context = browser.new_context(viewport={"width": 1280, "height": 900})
                    page = context.new_page()
                    page.goto(f"{hub.url}/sign-in")
                    page.get_by_label("Username").fill("vera")
                    page.get_by_label("Password").fill(PASSWORD)
                    page.get_by_role("button", name="Sign in").click()
                    page.wait_for_load_state()
                    cold.append(first_image(page, link))
                    if n == runs - 1:
                        warm = [first_image(page, link) for _ in range(runs)]
                    context.close()
                browser.close()
        finally:
            hub.stop()
    for name, found in (("cold", cold), ("warm", warm)):
        total = statistics.median(t for t, _ in found)
        ohif = [o for _, o in found if o is not None]
        inner = f"{statistics.median(ohif):.2f} s" if ohif else "n/a"
        print(f"{name}: navigation to first image {total:.2f} s, OHIF studyToFirstImage {inner}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
