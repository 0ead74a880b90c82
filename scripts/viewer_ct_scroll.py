"""Scrolling a 300-slice CT in the diagnostic viewer: what is prefetched, and the wait per slice.

    .venv/bin/python scripts/viewer_ct_scroll.py [--runs 2] [--slices 300] [--modes ...]

Starts ``vethub serve`` on a throwaway SQLite database (the test harness's
``start_hub``), stores a CT series of SLICES 512x512 16-bit slices (0.5 MB
each, a phantom with positions, spacing and a frame of reference, so OHIF
stacks it) for an order, signs a vet in and, in headless Chromium with
software WebGL, RUNS times:

- **settled**: opens the study link in a fresh browser context (OHIF's code
  cached by opening a one-image study first, the CT's frames not), waits
  for the first image, then for the frame requests to stop (none for 2 s),
  and presses the down arrow through every slice, the next press as soon as
  the viewport has drawn the slice;
- **at once**: the same in another fresh context, but the scroll starts
  the moment the first image is drawn, while the prefetch is still running;
- **held key**: as at once, but 30 presses a second whatever is drawn (an
  arrow key held down; the page takes them in only as fast as its main
  thread gets to them), so the scroll can outrun the prefetch.

``--modes`` picks some of the three (default all).

For each it prints the time to the first image, the frame requests the page
made before any key was pressed and when the last of them ended, and per
slice the time from key press to the slice drawn (median, p95, max), how
many slices were not yet in Cornerstone's memory at their key press, and
the frame requests started during the scroll. Times are the page's own
clocks (the keydown event's timeStamp, when the browser took the key in;
IMAGE_RENDERED listeners; resource timings), not Python's.

``--config-js`` appends a line of JavaScript to the served ``app-config.js``
in the browser, to try an OHIF setting without changing the hub, e.g.
``--config-js "window.config.maxNumRequests.prefetch = 6;"``.
Figures: docs/performance.md, "Scrolling a 300-slice CT in the viewer".
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from playwright.sync_api import sync_playwright
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from tests import study_factory as sf
from tests.browser import launch
from tests.factories import rex
from tests.harness import add_user, start_hub

PASSWORD = "vet password 12"
MODES = ("settled", "at once", "held key")
HELD_RATE = 30.0  # presses a second: a held arrow key's auto-repeat
VIEWPORT = (
    "window.cornerstone && window.cornerstone.getRenderingEngines().flatMap("
    "e => e.getViewports()).find(v => v.getCurrentImageId && v.getCurrentImageId())"
)
SHOWN = f"() => !!({VIEWPORT})"
# In OHIF's frame, once an image is shown: note every down-arrow keydown (with
# whether the slice it asks for is already decoded in Cornerstone's cache)
# and every IMAGE_RENDERED with the slice index drawn.
PROBE = f"""() => {{
  const cs = window.cornerstone;
  const vp = {VIEWPORT};
  const ids = vp.getImageIds();
  const probe = {{keys: [], renders: [], slices: ids.length, start: vp.getCurrentImageIdIndex()}};
  window.__scroll = probe;
  window.addEventListener('keydown', e => {{
    if (e.key !== 'ArrowDown') return;
    const next = vp.getCurrentImageIdIndex() + 1;
    // timeStamp: when the browser took the key in, before any wait for the busy page
    probe.keys.push([e.timeStamp, next, !!(ids[next] && cs.cache.isLoaded(ids[next]))]);
  }}, true);
  vp.element.addEventListener(cs.Enums.Events.IMAGE_RENDERED, () => {{
    probe.renders.push([performance.now(), vp.getCurrentImageIdIndex()]);
  }});
  return {{slices: probe.slices, start: probe.start}};
}}"""
PREFETCH_CONFIG = (
    "() => JSON.stringify(window.cornerstoneTools.utilities.stackContextPrefetch"
    ".getConfiguration())"
)
DRAWN = "i => window.__scroll.renders.some(r => r[1] >= i)"
FRAMES = """() => performance.getEntriesByType('resource')
  .filter(e => e.name.includes('/frames/'))
  .map(e => [e.name, e.startTime, e.responseEnd])"""


def ct_series(order: dict[str, Any], slices: int) -> list[Dataset]:
    """A CT phantom: body, two lungs that narrow towards both ends, a spine, a
    nodule; 1 mm slices along z, 0.7 mm pixels, stored as HU + 1024."""
    yy, xx = np.mgrid[0:512, 0:512].astype(np.float32)
    series, frame = generate_uid(), generate_uid()
    rng = np.random.default_rng(11)
    out = []
    for z in range(slices):
        f = z / max(slices - 1, 1)
        hu = np.full((512, 512), -1000.0, dtype=np.float32)
        hu[((xx - 256) / 210) ** 2 + ((yy - 270) / 160) ** 2 <= 1] = 40
        lung = 70 * np.sin(np.pi * f) + 10
        for cx in (180, 332):
            hu[((xx - cx) / lung) ** 2 + ((yy - 250) / (lung * 1.4)) ** 2 <= 1] = -800
        hu[(xx - 256) ** 2 + (yy - 380) ** 2 <= 28**2] = 700
        hu[(xx - 320) ** 2 + (yy - 230) ** 2 + (z - slices / 2) ** 2 <= 15**2] = 60
        hu += rng.normal(0, 12, size=hu.shape).astype(np.float32)
        ds = sf.instance(
            sop_class=sf.CT,
            modality="CT",
            study_uid=order["study_instance_uid"],
            series_uid=series,
            accession=order["accession_number"],
            patient_id=order["patient"]["id"],
            rows=512,
            SeriesNumber="2",
            InstanceNumber=str(z + 1),
            SeriesDescription="Thorax 1 mm",
            StudyDescription="CT thorax",
            FrameOfReferenceUID=frame,
            ImagePositionPatient=[-179.2, -179.2, -150.0 + z],
            ImageOrientationPatient=[1, 0, 0, 0, 1, 0],
            SliceLocation=-150.0 + z,
            SliceThickness=1.0,
            PixelSpacing=[0.7, 0.7],
            RescaleIntercept=-1024,
            RescaleSlope=1,
            WindowCenter=40,
            WindowWidth=400,
        )
        ds.PixelData = np.clip(hu + 1024, 0, 4095).astype(np.uint16).tobytes()
        out.append(ds)
    return out


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def signed_in(browser: Any, hub_url: str, config_js: str) -> Any:
    """A fresh context (nothing cached) with a vet signed in; resource timings
    kept for every request, not Chromium's default 250."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.add_init_script("performance.setResourceTimingBufferSize(100000)")
    if config_js:
        extra = f"\n{config_js}\n"
        context.route(
            "**/app-config.js",
            lambda route: route.fulfill(response=(r := route.fetch()), body=r.text() + extra),
        )
    page = context.new_page()
    page.goto(f"{hub_url}/sign-in")
    page.get_by_label("Username").fill("vera")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_load_state()
    return context, page


def open_viewer(page: Any, link: str) -> tuple[Any, float]:
    """Navigate to ``link``; OHIF's frame and the seconds until it shows an image."""
    start = time.monotonic()
    page.goto(link)
    page.frame_locator("iframe.ohif").locator(".cornerstone-canvas").first.wait_for()
    inner = next(f for f in page.frames if "/viewer/app/" in f.url)
    inner.wait_for_function(SHOWN, polling=10, timeout=60_000)
    return inner, time.monotonic() - start


def frames(inner: Any) -> list[tuple[str, float, float]]:
    return [tuple(e) for e in inner.evaluate(FRAMES)]


def settle(inner: Any, quiet: float = 2.0, limit: float = 180.0) -> None:
    """Until no frame request has started or ended for ``quiet`` seconds."""
    seen: tuple[int, int] = (-1, -1)
    since = start = time.monotonic()
    while time.monotonic() - start < limit:
        got = frames(inner)
        state = (len(got), sum(1 for e in got if e[2] > 0))
        if state != seen:
            seen, since = state, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return
        inner.page.wait_for_timeout(200)


def scroll(page: Any, inner: Any, rate: float | None) -> dict[str, Any]:
    """Press the down arrow through the stack: each press once the last slice is
    drawn, or ``rate`` presses a second whatever is drawn (a held key); per
    slice, keydown to the first IMAGE_RENDERED at or past it, in the page's clock."""
    probe = inner.evaluate(PROBE)
    # Focus, not a click: Cornerstone's mouse handling keeps a click from focusing the frame.
    page.frame_locator("iframe.ohif").locator(".cornerstone-viewport-element").first.focus()
    begun = time.monotonic()
    for n, i in enumerate(range(probe["start"] + 1, probe["slices"])):
        page.keyboard.press("ArrowDown")
        if rate is None:
            inner.wait_for_function(DRAWN, arg=i, polling="raf", timeout=30_000)
        else:
            time.sleep(max(0.0, begun + (n + 1) / rate - time.monotonic()))
    with contextlib.suppress(PlaywrightTimeout):  # presses lost on the way: see how far it got
        inner.wait_for_function(DRAWN, arg=probe["slices"] - 1, polling="raf", timeout=20_000)
    record = inner.evaluate("() => window.__scroll")
    waits, cold = [], 0
    for at, index, cached in record["keys"]:
        drawn = [t for t, i in record["renders"] if t >= at and i >= index]
        if drawn:
            waits.append(drawn[0] - at)
        cold += not cached
    first, last = record["keys"][0][0], max(t for t, _ in record["renders"])
    return {
        "waits_ms": waits,
        "not_cached": cold,
        "from": first,
        "to": last,
        "keys": len(record["keys"]),
        "slices": probe["slices"],
        "last_slice_drawn": max(i for _, i in record["renders"]) + 1,
    }


def run_once(browser: Any, hub_url: str, links: dict[str, str], mode: str, config_js: str) -> dict:
    context, page = signed_in(browser, hub_url, config_js)
    try:
        open_viewer(page, links["warm-up"])  # OHIF's code into the browser cache
        inner, first_image = open_viewer(page, links["ct"])
        origin = page.evaluate("performance.timeOrigin")
        offset = inner.evaluate("performance.timeOrigin") - origin  # frame clock -> page clock
        if mode == "settled":
            settle(inner)
        before = frames(inner)
        moved = scroll(page, inner, HELD_RATE if mode == "held key" else None)
        prefetch = inner.evaluate(PREFETCH_CONFIG)
        after = frames(inner)
        during = [e for e in after if moved["from"] <= e[1] <= moved["to"]]
        landed = [e for e in after if moved["from"] <= e[2] <= moved["to"]]
    finally:
        context.close()
    waits = moved["waits_ms"]
    ended = [e[2] for e in before if e[2] > 0]
    spans = [(e[1], e[2]) for e in after if e[2] > 0]
    in_flight = max(sum(1 for a, b in spans if a <= t < b) for t, _ in spans)
    fetched: dict[str, float] = {}
    for name, _, end in after:
        if end > 0:
            fetched[name] = min(end, fetched.get(name, end))
    return {
        "load_average": os.getloadavg()[0],
        "first_image_s": first_image,
        "frame_requests_before_scroll": len(before),
        "distinct_frames_before_scroll": len({e[0] for e in before}),
        "last_frame_end_before_scroll_s": (max(ended) + offset) / 1000 if ended else None,
        "all_slices_fetched_s": (
            (max(fetched.values()) + offset) / 1000 if len(fetched) >= moved["slices"] else None
        ),
        "first_frame_start_s": (min(a for a, _ in spans) + offset) / 1000,
        "peak_frames_in_flight": in_flight,
        "keys_pressed": moved["keys"],
        "last_slice_drawn": moved["last_slice_drawn"],
        "slices_scrolled": len(waits),
        "scroll_median_ms": statistics.median(waits),
        "scroll_p95_ms": pct(waits, 0.95),
        "scroll_max_ms": max(waits),
        "slices_over_100ms": sum(1 for w in waits if w > 100),
        "scroll_total_s": (moved["to"] - moved["from"]) / 1000,
        "slices_not_in_memory_at_key": moved["not_cached"],
        "frame_requests_started_in_scroll": len(during),
        "frame_requests_ended_in_scroll": len(landed),
        "stack_prefetch_config": prefetch,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--config-js", default="", help="appended to OHIF's app-config.js")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--json", help="write every run's figures to this file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db_url = f"sqlite:///{tmp}/vethub.db"
        hub = start_hub(Path(tmp) / "data", db_url)
        try:
            add_user(db_url, "vera", "vet", PASSWORD, actor="ct-scroll")
            with hub.api() as api:
                order = api.post("/api/v1/orders", json=rex(modality="CT")).json()
            started = time.monotonic()
            assert set(sf.send(hub.dicom, ct_series(order, args.slices))) == {0}
            print(f"stored {args.slices} slices in {time.monotonic() - started:.1f} s")
            small = sf.instance(patient_id="P-WARM", rows=64)
            assert sf.send(hub.dicom, [small]) == [0]
            links = {
                "ct": f"{hub.url}/viewer/studies/{order['study_instance_uid']}",
                "warm-up": f"{hub.url}/viewer/studies/{small.StudyInstanceUID}",
            }
            results: dict[str, list[dict[str, Any]]] = {m: [] for m in args.modes}
            with sync_playwright() as p:
                browser = launch(p)
                for n in range(args.runs):
                    for name in results:
                        got = run_once(browser, hub.url, links, name, args.config_js)
                        results[name].append(got)
                        shown = {k: _round(v) for k, v in got.items()}
                        print(f"run {n + 1} {name}: {shown}", flush=True)
                browser.close()
        finally:
            hub.stop()
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    for name, found in results.items():
        print(f"{name}, median of {len(found)} runs:")
        for key in found[0]:
            values = [r[key] for r in found if r[key] is not None]
            if values and not isinstance(values[0], str):
                each = [_round(v) for v in values]
                print(f"  {key}: {_round(statistics.median(values))}  (runs: {each})")


def _round(value: Any) -> Any:
    return round(value, 3) if isinstance(value, float) else value


if __name__ == "__main__":
    main()
