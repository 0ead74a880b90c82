"""First-image time of the diagnostic viewer, from navigation, in headless Chromium.

    .venv/bin/python scripts/viewer_speed.py [RUNS] [--cpu] [--chunks]

Starts ``vethub serve`` on a throwaway SQLite database (the test harness's
``start_hub``), stores one 512x512 16-bit radiograph (0.5 MB, as in
tests/test_browser_viewer.py), signs a vet in and opens the study link RUNS
times (default 3) in a fresh browser context (cold: nothing cached) and RUNS
times more in the same context (warm: OHIF's code cached, as on a vet's second
study of the day). Prints the median seconds from navigation until the
viewport shows the image, and OHIF's own studyToFirstImage timer.

``--cpu``: Cornerstone's CPU rendering instead of WebGL (OHIF's
``useCPURendering`` added to the config the browser gets), to compare.
``--chunks``: also print the OHIF chunks the first cold start loads before it
asks for the image (``ohif_assets.FIRST_CHUNKS``, re-listed after an upgrade).
Figures: docs/viewer.md.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from playwright.sync_api import sync_playwright

from tests import study_factory as sf
from tests.browser import launch
from tests.factories import rex
from tests.harness import add_user, start_hub
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


CHUNKS = (
    "() => { const res = performance.getEntriesByType('resource');"
    " const frame = res.find(e => e.name.includes('/frames/'));"
    " return res.filter(e => e.initiatorType !== 'other')"  # workers: not preloadable
    ".filter(e => !frame || e.startTime < frame.startTime)"
    ".map(e => e.name.split('/').pop()).filter(n => /^\\d+\\.(bundle\\.\\w+\\.js|css)$/.test(n))"
    ".map(n => n.split('.')[0]); }"
)


def _cpu_config(route: Any) -> None:
    body = route.fetch().text() + "window.config.useCPURendering = true;\n"
    route.fulfill(body=body, content_type="text/javascript")


def main(runs: int, cpu: bool = False, chunks: bool = False) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        db_url = f"sqlite:///{tmp}/vethub.db"
        hub = start_hub(Path(tmp) / "data", db_url)
        try:
            add_user(db_url, "vera", "vet", PASSWORD, actor="speed")
            with hub.api() as api:
                order = api.post("/api/v1/orders", json=rex()).json()
            assert sf.send(hub.dicom, [_dx(order, 512, "20261127")]) == [0]
            link = f"{hub.url}/viewer/studies/{order['study_instance_uid']}"
            with sync_playwright() as p:
                browser = launch(p)
                cold, warm = [], []
                for n in range(runs):
                    context = browser.new_context(viewport={"width": 1280, "height": 900})
                    if cpu:
                        context.route("**/app-config.js", _cpu_config)
                    page = context.new_page()
                    page.goto(f"{hub.url}/sign-in")
                    page.get_by_label("Username").fill("vera")
                    page.get_by_label("Password").fill(PASSWORD)
                    page.get_by_role("button", name="Sign in").click()
                    page.wait_for_load_state()
                    cold.append(first_image(page, link))
                    if chunks and n == 0:
                        inner = next(f for f in page.frames if "/viewer/app/" in f.url)
                        print(
                            "chunks before the image:",
                            " ".join(sorted(set(inner.evaluate(CHUNKS)), key=int)),
                        )
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
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="?", type=int, default=3)
    parser.add_argument("--cpu", action="store_true", help="Cornerstone's CPU rendering")
    parser.add_argument("--chunks", action="store_true", help="list the chunks loaded first")
    args = parser.parse_args()
    main(args.runs, args.cpu, args.chunks)
