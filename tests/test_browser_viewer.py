"""The diagnostic viewer in a real browser (headless Debian Chromium, WebGL in
software) against a real ``vethub serve`` and its DICOMweb: a vet signs in from
the study link, drags window/level, measures a length in mm that is still there
after a reload, opens a prior side by side (linked; the prior JPEG 2000
compressed, decoded in the browser), and a multi-frame ultrasound plays; a
referral share of a study with one series per stored transfer syntax shows each
one decoded and drawn. One served hub and five page loads for the module.

Screenshots go to ``$VETHUB_SCREENSHOTS`` (default tests/artifacts/)."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import JPEG2000Lossless, generate_uid
from pynetdicom import AE

from hub.api import ohif_assets
from tests import study_factory as sf
from tests.browser import launch, require_chromium, screenshots, watched_page
from tests.factories import rex
from tests.harness import ServedHub, add_user, start_hub

sync_api = require_chromium()
PASSWORD = "vet password 12"
US_MULTIFRAME = "1.2.840.10008.5.1.4.1.1.3.1"


def _dx(order: dict[str, Any], rows: int, study_date: str) -> Dataset:
    """A 16-bit radiograph (rows x rows) with the detector's ImagerPixelSpacing of 0.2 mm."""
    yy, xx = np.mgrid[0:rows, 0:rows]
    body = ((np.hypot(xx - rows / 2, yy - rows / 3) < rows / 4) * 1500).astype(np.uint16)
    pixels = (xx * 4 + yy + body) % 4096
    ds = sf.instance(
        accession=order["accession_number"],
        study_uid=order["study_instance_uid"],
        patient_id=order["patient"]["id"],
        study_date=study_date,
        rows=rows,
        ImagerPixelSpacing=[0.2, 0.2],
        WindowCenter=2048,
        WindowWidth=4096,
        StudyDescription="Thorax, 2 views",
    )
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    return ds


def _us_cine(frames: int = 8, rows: int = 96) -> Dataset:
    """A multi-frame 8-bit ultrasound clip: a bright bar moving down frame by frame."""
    clip = np.zeros((frames, rows, rows), dtype=np.uint8)
    for n in range(frames):
        clip[n, n * rows // frames : (n + 1) * rows // frames, :] = 255
    ds = sf.instance(sop_class=US_MULTIFRAME, modality="US", patient_id="P-555", rows=rows)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.NumberOfFrames = frames
    ds.FrameTime = 100
    ds.CineRate = 10
    ds.FrameIncrementPointer = (0x0018, 0x1063)
    ds.PixelData = clip.tobytes()
    ds.SeriesInstanceUID = generate_uid()
    return ds


def _send_compressed(port: int, *datasets: Dataset) -> list[int]:
    """C-STORE each data set in its own transfer syntax (as a modality sends it)."""
    ae = AE(ae_title="DX_ROOM1")
    for ds in datasets:
        ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", port, ae_title="VETHUB")
    assert assoc.is_established
    try:
        return [int(assoc.send_c_store(ds).Status) for ds in datasets]
    finally:
        assoc.release()


# One small image per stored transfer syntax besides uncompressed and JPEG 2000
# lossless (the prior above): pydicom's own test files (shipped with it), given
# one new study. Lossless ones must reach the viewer with their exact pixels.
CODECS = {
    "JPEG baseline (colour)": ("SC_rgb_jpeg_dcmtk.dcm", False),
    "JPEG extended 12-bit": ("JPEG-lossy.dcm", False),
    "JPEG lossless SV1 (colour)": ("SC_rgb_jpeg_gdcm.dcm", False),
    "JPEG-LS lossless": ("MR_small_jpeg_ls_lossless.dcm", True),
    "JPEG-LS near-lossless": ("JPEGLSNearLossless_16.dcm", False),
    "JPEG 2000": ("JPEG2000.dcm", False),
    "RLE lossless": ("MR_small_RLE.dcm", True),
    "deflated little endian": ("image_dfl.dcm", True),
    "explicit VR big endian (retired)": ("MR_small_bigendian.dcm", True),
}


def _codec_study() -> tuple[list[Dataset], dict[str, dict[str, Any]]]:
    """The CODECS images as one study of patient P-777, and per series what the
    viewer must show: name, rows, columns, the grayscale pixel sum if exact."""
    study = generate_uid()
    datasets, expected = [], {}
    for number, (name, (file, exact)) in enumerate(CODECS.items(), start=1):
        path = Path(str(get_testdata_file(file)))  # bundled: never downloaded
        assert Path(pydicom.__file__).parent in path.parents, path
        ds = pydicom.dcmread(path)
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, generate_uid()
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.PatientID, ds.PatientName, ds.StudyDate = "P-777", "Codec^Dog", "20261128"
        ds.SeriesNumber, ds.SeriesDescription = number, name
        expected[str(ds.SeriesInstanceUID)] = {
            "name": name,
            "rows": int(ds.Rows),
            "columns": int(ds.Columns),
            "sum": int(ds.pixel_array.sum()) if exact else None,
        }
        datasets.append(ds)
    return datasets, expected


@pytest.fixture(scope="module")
def viewer_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServedHub, dict]]:
    assert ohif_assets.installed(), "the OHIF build is not installed: run `make viewer-assets`"
    folder = tmp_path_factory.mktemp("viewer")
    db_url = f"sqlite:///{folder / 'vethub.db'}"
    hub = start_hub(folder / "data", db_url)
    try:
        add_user(db_url, "vera", "vet", PASSWORD, actor="test")
        with hub.api() as api:
            now = api.post("/api/v1/orders", json=rex()).json()
            then = api.post(
                "/api/v1/orders",
                json=rex(placer_order_number="ORD-900", accession_number="A0900"),
            ).json()
        cine = _us_cine()
        # A ~0.5 MB radiograph, an ultrasound clip, and an older radiograph of the
        # same dog as its modality sent it, JPEG 2000 compressed (decoded by OHIF).
        assert sf.send(hub.dicom, [_dx(now, 512, "20261127"), cine]) == [0, 0]
        prior = _dx(then, 256, "20250310")
        prior_sum = int(prior.pixel_array.sum())
        prior.compress(JPEG2000Lossless)
        assert _send_compressed(hub.dicom, prior) == [0]
        codecs, shown = _codec_study()
        assert _send_compressed(hub.dicom, *codecs) == [0] * len(codecs)
        yield (
            hub,
            {
                "now": now["study_instance_uid"],
                "then": then["study_instance_uid"],
                "us": str(cine.StudyInstanceUID),
                "prior_sum": prior_sum,
                "codecs": str(codecs[0].StudyInstanceUID),
                "codec_series": shown,
            },
        )
    finally:
        hub.stop()


def _ohif(page: Any) -> Any:
    """The OHIF frame once its viewports show an image and the hub script is done."""
    frame = page.frame_locator("iframe.ohif")
    frame.locator(".cornerstone-canvas").first.wait_for(timeout=60_000)
    inner = next(f for f in page.frames if "/viewer/app/" in f.url)
    inner.wait_for_function("() => window.vethub && window.vethub.loaded !== null", timeout=60_000)
    return inner


def _svg_text(frame: Any) -> str:
    return str(
        frame.evaluate(
            "() => Array.from(document.querySelectorAll('svg text'))"
            ".map(t => t.textContent).join(' | ')"
        )
    )


def test_a_vet_reads_measures_and_compares(
    viewer_hub: tuple[ServedHub, dict], request: pytest.FixtureRequest
) -> None:
    hub, uids = viewer_hub
    shots = screenshots()
    timers: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = launch(p)
        try:
            page, blocked = watched_page(browser)
            page.on(
                "console",
                lambda m: timers.append(m.text) if "ToFirstImage" in m.text else None,
            )
            # The study link from the practice system: sign in, then the viewer.
            link = f"{hub.url}/viewer/studies/{uids['now']}"
            page.goto(link)
            page.get_by_label("Username").fill("vera")
            page.get_by_label("Password").fill(PASSWORD)
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url(link)
            banner = page.inner_text("header")
            for shown in ("Rex", "Labrador Retriever", "7 y 7 mo", "Anna Smith", "A1001"):
                assert shown in banner
            ohif = _ohif(page)
            assert ohif.evaluate("() => window.vethub.contexts") == 1  # one WebGL context
            app = page.frame_locator("iframe.ohif")
            canvas = app.locator(".cornerstone-canvas").first
            box = canvas.bounding_box()
            cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2

            # Window/level: the left button drags it by default.
            before = canvas.screenshot()
            overlay = app.locator('[data-cy="viewport-overlay-bottom-left"]')
            wl_before = overlay.inner_text()
            page.mouse.move(cx, cy)
            page.mouse.down()
            page.mouse.move(cx + 120, cy + 60, steps=8)
            page.mouse.up()
            sync_api.expect(overlay).not_to_have_text(wl_before)  # drawn with the new W/L
            assert canvas.screenshot() != before

            # A length, in mm from ImagerPixelSpacing, saved with the study.
            app.locator('[data-cy="MeasurementTools-split-button-primary"]').click()
            page.mouse.move(cx - 200, cy - 100)
            page.mouse.down()
            page.mouse.move(cx + 100, cy + 50, steps=8)
            page.mouse.up()
            ohif.wait_for_function("() => window.vethub.saves >= 1", timeout=15_000)
            measured = re.search(r"(\d+(?:\.\d+)?) mm", _svg_text(ohif))
            assert measured, _svg_text(ohif)
            with hub.api() as api:
                saved = api.get(f"/api/v1/studies/{uids['now']}/annotations").json()
            assert [a["type"] for a in saved["annotations"]] == ["length"]
            assert saved["updated_by"].endswith(":vera")

            # Reload: the measurement is back, unchanged and not saved again.
            page.reload()
            ohif = _ohif(page)
            assert ohif.evaluate("() => window.vethub.loaded") == 1
            ohif.wait_for_function(
                f"() => document.body.textContent.includes('{measured.group(0)}') || "
                f"Array.from(document.querySelectorAll('svg text'))"
                f".some(t => t.textContent.includes('{measured.group(0)}'))",
                timeout=15_000,
            )
            shot = shots / "viewer-dx-length.png"
            page.screenshot(path=str(shot))
            print(f"screenshot: {shot}")
            assert ohif.evaluate("() => window.vethub.saves") == 0

            # The prior, side by side: two viewports, zoom and scrolling linked.
            page.locator("summary", has_text="Priors (1)").click()
            page.get_by_role("link", name="open side by side").click()
            page.wait_for_url(re.compile(r"\?compare="))
            ohif = _ohif(page)
            ohif.wait_for_function("() => window.vethub.linked", timeout=30_000)
            assert app.locator(".cornerstone-canvas").count() == 2
            zooms = (
                "() => cornerstone.getRenderingEngines()[0].getViewports().map(v => v.getZoom())"
            )
            assert ohif.evaluate(zooms) == [1, 1]
            # The prior came in JPEG 2000: decoded in the browser, its real pixels.
            prior = ohif.evaluate(
                "() => { const v = cornerstone.getRenderingEngines()[0].getViewports()[1];"
                " const img = cornerstone.cache.getImage(v.getCurrentImageId());"
                " return [img.rows, img.getPixelData().reduce((a, b) => a + b, 0)]; }"
            )
            assert prior == [256, uids["prior_sum"]], prior
            left = app.locator(".cornerstone-canvas").first.bounding_box()
            page.mouse.move(left["x"] + 100, left["y"] + 200)
            page.mouse.down(button="right")  # right-button drag zooms
            page.mouse.move(left["x"] + 100, left["y"] + 320, steps=8)
            page.mouse.up(button="right")
            ohif.wait_for_function(f"() => ({zooms})()[1] !== 1", timeout=10_000)
            zoomed = ohif.evaluate(zooms)
            assert zoomed[0] != 1 and zoomed[1] == pytest.approx(zoomed[0], rel=0.01)
            shot = shots / "viewer-side-by-side.png"
            page.screenshot(path=str(shot))
            print(f"screenshot: {shot}")

            # A multi-frame ultrasound plays by itself (OHIF's cine for US).
            page.goto(f"{hub.url}/viewer/studies/{uids['us']}")
            ohif = _ohif(page)
            clip = app.locator(".cornerstone-canvas").first
            frames = {clip.screenshot() for _ in range(6)}
            assert len(frames) > 1, "the displayed frame never changed"
            assert blocked == [], blocked
        finally:
            browser.close()
    print("OHIF timers:", "; ".join(timers))


SHOW_SERIES = """series => {
  const set = services.displaySetService.getActiveDisplaySets()
    .find(d => d.SeriesInstanceUID === series);
  const viewportId = services.viewportGridService.getActiveViewportId();
  commandsManager.runCommand('setDisplaySetsForViewports', {
    viewportsToUpdate: [{viewportId, displaySetInstanceUIDs: [set.displaySetInstanceUID]}],
  });
}"""
# The image the active viewport shows, once it is that series' and decoded.
SHOWN_IMAGE = """series => {
  const id = services.viewportGridService.getActiveViewportId();
  const vp = services.cornerstoneViewportService.getCornerstoneViewport(id);
  const imageId = vp && vp.getCurrentImageId && vp.getCurrentImageId();
  const ours = imageId && imageId.includes('/series/' + series + '/');
  const img = ours && cornerstone.cache.getImage(imageId);
  if (!img) return null;
  const px = img.getPixelData();
  let min = Infinity, max = -Infinity, sum = 0;
  for (let i = 0; i < px.length; i++) {
    const x = px[i];
    sum += x;
    min = Math.min(min, x);
    max = Math.max(max, x);
  }
  return {rows: img.rows, columns: img.columns, color: !!img.color, min, max, sum};
}"""


DRAWN = "() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))"


def test_every_stored_transfer_syntax_displays(viewer_hub: tuple[ServedHub, dict]) -> None:
    """A referral share of a study with one series per stored transfer syntax: each
    series, put in the viewport, is decoded (lossless ones to their exact pixels)
    and drawn (the canvas is not blank). One page load, no sign-in."""
    hub, uids = viewer_hub
    expected = uids["codec_series"]
    with hub.api() as api:
        made = api.post(f"/api/v1/studies/{uids['codecs']}/shares", json={"mode": "referral"})
        assert made.status_code == 201, made.text
    token = made.json()["url"].rsplit("/", 1)[-1]
    failed: dict[str, str] = {}
    with sync_api.sync_playwright() as p:
        browser = launch(p)
        try:
            page, blocked = watched_page(browser)
            page.goto(f"{hub.url}/shared/{token}")
            app = page.frame_locator("iframe.ohif")
            canvas = app.locator(".cornerstone-canvas").first
            canvas.wait_for(timeout=60_000)
            ohif = next(f for f in page.frames if "/app/" in f.url)
            sets = "services.displaySetService.getActiveDisplaySets().length"
            ohif.wait_for_function(f"() => {sets} === {len(expected)}", timeout=30_000)
            for series, want in expected.items():
                ohif.evaluate(SHOW_SERIES, series)
                try:
                    shown = ohif.wait_for_function(SHOWN_IMAGE, arg=series, timeout=15_000)
                except sync_api.TimeoutError:
                    failed[want["name"]] = "not decoded or not shown"
                    continue
                got = shown.json_value()
                ohif.evaluate(DRAWN)
                low, high = Image.open(io.BytesIO(canvas.screenshot())).convert("L").getextrema()
                if (got["rows"], got["columns"]) != (want["rows"], want["columns"]):
                    failed[want["name"]] = f"{got['rows']}x{got['columns']} shown"
                elif got["max"] <= got["min"] or high - low < 16:
                    failed[want["name"]] = f"blank: {got['min']}..{got['max']}, drawn {low}..{high}"
                elif want["sum"] is not None and got["sum"] != want["sum"]:
                    failed[want["name"]] = f"pixel sum {got['sum']} not {want['sum']}"
            shot = screenshots() / "viewer-codecs.png"
            page.screenshot(path=str(shot))
            assert blocked == [], blocked
        finally:
            browser.close()
    assert failed == {}, failed
