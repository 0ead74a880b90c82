"""First image of a 0.5 MB radiograph on screen: the same OHIF build against the hub
and against Orthanc, in headless Chromium.

    .venv/bin/python scripts/dicomweb_first_image.py --data /tmp/dwbench/data \\
        --work /tmp/dwbench/work [--runs 3]

Uses the servers and storage of ``dicomweb_bench.py run`` (same WORK, so both
already hold its 10,000 studies) and stores one 512x512 16-bit DX into each
with ``storescu`` if they lack it. Each server gets a small proxy on its own
loopback port that serves the stock OHIF files (hub/viewer_assets/ohif, the
hub's own config from ``ohif_assets.app_config``) and passes ``/dicom-web/``
through to that server's DICOMweb root, the hub's with a Bearer key: one
origin for the page and its data, as in the hub's viewer, and nothing
differing between the two but the server behind the proxy. Then RUNS cold
opens (a fresh browser context) and RUNS warm ones (the same context again),
the servers taking turns. Prints the median seconds from navigation until a
viewport shows the image, and OHIF's own ``studyToFirstImage`` timer (from
its study query to the first image drawn: the part the server decides).
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from playwright.sync_api import sync_playwright

from hub.api.ohif_assets import OHIF_DIR, app_config
from scripts.dicomweb_bench import Server, start_orthanc, start_vethub
from tests.browser import launch

SHOWN = (
    "() => window.cornerstone && window.cornerstone.getRenderingEngines().some("
    "e => e.getViewports().some(v => v.getCurrentImageId && v.getCurrentImageId()))"
)
PASSED = ("content-type", "content-encoding", "cache-control", "warning")
DX_STUDY = "1.2.826.0.1.3680043.10.1156.77.1"


def write_dx(path: Path) -> None:
    """A 512x512 16-bit radiograph (0.5 MB), its study UID fixed."""
    import numpy as np
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    yy, xx = np.mgrid[0:512, 0:512]
    body = ((np.hypot(xx - 256, yy - 170) < 128) * 1500).astype(np.uint16)
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = DX_STUDY
    ds.SeriesInstanceUID = generate_uid()
    ds.StudyDate, ds.StudyTime, ds.Modality = "20261127", "101500", "DX"
    ds.PatientID, ds.PatientName, ds.AccessionNumber = "P-DX-1", "Köhler^Rex", "ADX0001"
    ds.StudyDescription, ds.SeriesNumber, ds.InstanceNumber = "Thorax", "1", "1"
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows = ds.Columns = 512
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.ImagerPixelSpacing = [0.2, 0.2]
    ds.WindowCenter, ds.WindowWidth = 2048, 4096
    ds.PixelData = ((xx * 4 + yy + body) % 4096).astype(np.uint16).tobytes()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def ensure_dx(server: Server, path: Path) -> None:
    with server.client() as client:
        found = client.get(f"/studies?StudyInstanceUID={DX_STUDY}")
        if found.status_code == 200 and found.json():
            return
    cmd = ["storescu", "-aet", "BENCHSCU", "-aec", server.ae_title, "-nh", "127.0.0.1"]
    subprocess.run([*cmd, str(server.dicom_port), str(path)], check=True)


def proxy_app(server: Server, origin: str) -> Starlette:
    """OHIF's files, its config, and /dicom-web/ passed through to ``server``."""
    backend = httpx.AsyncClient(base_url=server.base, headers=server.headers, timeout=60)
    config = app_config("/", f"{origin}/dicom-web", show_study_list=False)

    async def dicomweb(request: Request) -> Response:
        headers = {k: v for k, v in request.headers.items() if k in ("accept", "accept-encoding")}
        url = "/" + request.path_params["path"]
        if request.url.query:
            url += "?" + request.url.query
        answer = await backend.send(backend.build_request("GET", url, headers=headers), stream=True)
        kept = {k: v for k, v in answer.headers.items() if k in PASSED}
        return StreamingResponse(
            answer.aiter_raw(), status_code=answer.status_code, headers=kept, background=None
        )

    async def files(request: Request) -> Response:
        name = request.url.path.lstrip("/")
        if name == "app-config.js":
            return Response(config, media_type="text/javascript")
        if name in ("sw.js", "init-service-worker.js"):
            return PlainTextResponse("", status_code=404)
        path = (OHIF_DIR / name).resolve()
        if name and path.is_file() and path.is_relative_to(OHIF_DIR.resolve()):
            media = "application/wasm" if path.suffix == ".wasm" else None
            return FileResponse(path, media_type=media)
        return FileResponse(OHIF_DIR / "index.html")  # OHIF's routes

    routes = [Route("/dicom-web/{path:path}", dicomweb), Route("/{rest:path}", files)]
    return Starlette(routes=routes)


def serve_proxy(server: Server, port: int) -> uvicorn.Server:
    origin = f"http://127.0.0.1:{port}"
    config = uvicorn.Config(proxy_app(server, origin), port=port, log_level="warning")
    proxy = uvicorn.Server(config)
    threading.Thread(target=proxy.run, daemon=True).start()
    while not proxy.started:
        time.sleep(0.05)
    return proxy


def first_image(page: Any, url: str) -> tuple[float, float | None]:
    timer: list[float] = []

    def note(message: Any) -> None:
        if found := re.search(r"studyToFirstImage: ([\d.]+) ms", message.text):
            timer.append(float(found.group(1)) / 1000)

    page.on("console", note)
    began = time.monotonic()
    page.goto(url)
    page.locator(".cornerstone-canvas").first.wait_for(timeout=60_000)
    page.wait_for_function(SHOWN, polling=20, timeout=60_000)
    took = time.monotonic() - began
    page.remove_listener("console", note)
    return took, (timer[0] if timer else None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--work", required=True)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--first-port", type=int, default=18090)
    args = parser.parse_args()
    dx = Path(args.data) / "dx" / "dx.dcm"
    if not dx.exists():
        write_dx(dx)
    work = Path(args.work)
    servers = [start_orthanc(work / "orthanc"), start_vethub(work / "vethub")]
    results: dict[str, dict[str, list[tuple[float, float | None]]]] = {}
    try:
        urls = {}
        for n, server in enumerate(servers):
            ensure_dx(server, dx)
            serve_proxy(server, args.first_port + n)
            port = args.first_port + n
            urls[server.name] = f"http://127.0.0.1:{port}/viewer?StudyInstanceUIDs={DX_STUDY}"
            results[server.name] = {"cold": [], "warm": []}
        with sync_playwright() as p:
            browser = launch(p)
            for run in range(args.runs):
                order = servers if run % 2 == 0 else servers[::-1]
                for server in order:
                    context = browser.new_context(viewport={"width": 1280, "height": 900})
                    page = context.new_page()
                    results[server.name]["cold"].append(first_image(page, urls[server.name]))
                    if run == args.runs - 1:
                        for _ in range(args.runs):
                            results[server.name]["warm"].append(
                                first_image(page, urls[server.name])
                            )
                    context.close()
            browser.close()
    finally:
        for server in servers:
            server.stop()
    for name, found in results.items():
        for kind, times in found.items():
            total = statistics.median(t for t, _ in times)
            ohif = [o for _, o in times if o is not None]
            inner = f"{statistics.median(ohif):.2f} s" if ohif else "n/a"
            each = ", ".join(f"{t:.2f}/{o if o is None else round(o, 2)}" for t, o in times)
            print(
                f"{name} {kind}: navigation to first image {total:.2f} s, "
                f"OHIF studyToFirstImage {inner}  ({each})"
            )


if __name__ == "__main__":
    main()
