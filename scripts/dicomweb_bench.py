"""DICOMweb speed of the hub beside Orthanc's DICOMweb plugin, same files in each.

    .venv/bin/python scripts/dicomweb_bench.py gen --out /tmp/dwbench/data
    .venv/bin/python scripts/dicomweb_bench.py run --data /tmp/dwbench/data \\
        --work /tmp/dwbench/work --out /tmp/dwbench/results.json

``gen`` writes the data once: STUDIES one-instance studies (8x8 pixels;
PatientID, owner^pet names with umlauts, StudyDate over 2026, Modality
DX/CR/US/CT/MR, AccessionNumber all varied) and one CT series of SLICES
512x512 16-bit slices (uncompressed, ~0.5 MB each), with a manifest.

``run`` starts the servers itself on loopback: Orthanc (the Debian package,
DICOMweb plugin, its own config and storage under WORK/orthanc, HTTP 18042,
DICOM 14242, authentication off) and ``vethub serve`` (the test harness's
``start_hub``, admin Bearer key): ``vethub`` on SQLite under WORK/vethub,
``vethub-pg`` on database dicomweb_bench of the test PostgreSQL server. Each
is loaded with DCMTK ``storescu`` over C-STORE (a few associations at once)
unless it already holds the data from an earlier run. Then, the servers
taking turns request by request so a load change hits them all alike:

- QIDO-RS study searches by kind, REPS timed requests each after 2 warm-ups:
  median and p95 ms, and the number of studies each answered;
- WADO-RS frames: every slice's ``/frames/1`` as OHIF asks for it (Accept
  ``multipart/related; type=application/octet-stream; transfer-syntax=*``),
  CONCURRENCY requests in flight, frames/s per round (median of ROUNDS) and
  per-request median/p95 ms; the first frame's bytes are checked against the
  file's pixel data;
- WADO-RS whole series (``application/dicom``, streamed): MB/s, median of
  ROUNDS.

Figures and how to read them: docs/performance.md, "DICOMweb and the viewer".
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
from sqlalchemy import create_engine, text

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.harness import ADMIN_KEY, ServedHub, pg_admin, pg_database_url, start_hub

ORTHANC_HTTP = 18042
ORTHANC_DICOM = 14242
PLUGINS = "/usr/share/orthanc/plugins"
FRAME_ACCEPT = "multipart/related; type=application/octet-stream; transfer-syntax=*"
SERIES_ACCEPT = 'multipart/related; type="application/dicom"; transfer-syntax=*'

LAST_NAMES = [
    "Müller", "Mülheim", "Schröder", "Jäger", "Weiß", "Köhler", "Öztürk", "Bäcker",
    "Smith", "Meier", "Schmidt", "Fischer", "Wagner", "Becker", "Hoffmann", "Koch",
    "Richter", "Klein", "Wolf", "Neumann", "Schwarz", "Zimmermann", "Braun", "Krüger",
    "Hofmann", "Hartmann", "Lange", "Schmitt", "Werner", "Krause", "Lehmann", "Dupont",
]  # fmt: skip
PET_NAMES = ["Rex", "Bello", "Luna", "Mia", "Max", "Nala", "Felix", "Paula", "Sámi", "Ödön"]
MODALITIES = [("DX", 40), ("CR", 10), ("US", 25), ("CT", 15), ("MR", 10)]
SOP_CLASS = {
    "DX": "1.2.840.10008.5.1.4.1.1.1.1",
    "CR": "1.2.840.10008.5.1.4.1.1.1",
    "US": "1.2.840.10008.5.1.4.1.1.6.1",
    "CT": "1.2.840.10008.5.1.4.1.1.2",
    "MR": "1.2.840.10008.5.1.4.1.1.4",
}


# --------------------------------------------------------------------- gen


def _dataset(uid_root: str, n: int, **fields: Any) -> Any:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    for name, value in fields.items():
        setattr(ds, name, value)
    ds.StudyTime = "101500"
    ds.ReferringPhysicianName = "Doe^Jane"
    ds.PatientBirthDate = "20190402"
    ds.PatientSex = "M"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    return ds


def _write(ds: Any, path: Path) -> None:
    ds.save_as(path, enforce_file_format=True)


def gen(out: Path, studies: int, slices: int, seed: int) -> None:
    """Write the small studies (in folders of 1,000) and the CT series, once."""
    import numpy as np
    from pydicom.uid import generate_uid

    manifest_path = out / "manifest.json"
    if manifest_path.exists():
        print(f"{manifest_path} exists: nothing to do")
        return
    rng = random.Random(seed)
    root = "1.2.826.0.1.3680043.10.1156."
    kinds = [m for m, weight in MODALITIES for _ in range(weight)]
    small: list[dict[str, str]] = []
    for i in range(studies):
        modality = rng.choice(kinds)
        day = 1 + rng.randrange(365)
        date = time.strftime("%Y%m%d", time.gmtime(time.mktime((2026, 1, day, 12, 0, 0, 0, 0, 0))))
        row = {
            "study": generate_uid(root),
            "patient_id": f"P{i:06d}",
            "patient_name": f"{rng.choice(LAST_NAMES)}^{rng.choice(PET_NAMES)}",
            "date": date,
            "modality": modality,
            "accession": f"A{i:07d}",
        }
        ds = _dataset(
            root,
            i,
            SOPClassUID=SOP_CLASS[modality],
            SOPInstanceUID=generate_uid(root),
            StudyInstanceUID=row["study"],
            SeriesInstanceUID=generate_uid(root),
            StudyDate=date,
            SeriesDate=date,
            Modality=modality,
            PatientID=row["patient_id"],
            PatientName=row["patient_name"],
            AccessionNumber=row["accession"],
            StudyID=str(i),
            StudyDescription=f"{modality} study {i}",
            SeriesNumber="1",
            InstanceNumber="1",
            Rows=8,
            Columns=8,
            PixelData=bytes(range(128)),
        )
        folder = out / "small" / f"{i // 1000:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        _write(ds, folder / f"{i:06d}.dcm")
        small.append(row)

    ct_study, ct_series = generate_uid(root), generate_uid(root)
    yy, xx = np.mgrid[0:512, 0:512]
    body = ((xx - 256) / 200.0) ** 2 + ((yy - 270) / 150.0) ** 2 <= 1.0
    nprng = np.random.default_rng(seed)
    ct_folder = out / "ct"
    ct_folder.mkdir(parents=True, exist_ok=True)
    sops = []
    for z in range(slices):
        img = np.where(body, 1064, 24) + nprng.integers(0, 24, size=(512, 512))
        sop = generate_uid(root)
        ds = _dataset(
            root,
            z,
            SOPClassUID=SOP_CLASS["CT"],
            SOPInstanceUID=sop,
            StudyInstanceUID=ct_study,
            SeriesInstanceUID=ct_series,
            StudyDate="20261128",
            Modality="CT",
            PatientID="P-CT-1",
            PatientName="Jäger^Bello",
            AccessionNumber="ACT0001",
            StudyDescription="CT thorax",
            SeriesNumber="2",
            InstanceNumber=str(z + 1),
            ImagePositionPatient=[0, 0, z],
            ImageOrientationPatient=[1, 0, 0, 0, 1, 0],
            PixelSpacing=[0.5, 0.5],
            SliceThickness=1,
            RescaleIntercept=-1024,
            RescaleSlope=1,
            Rows=512,
            Columns=512,
            PixelData=img.astype(np.uint16).tobytes(),
        )
        _write(ds, ct_folder / f"ct{z:04d}.dcm")
        sops.append(sop)
    manifest = {
        "studies": studies,
        "small": small,
        "ct": {"study": ct_study, "series": ct_series, "sops": sops},
    }
    manifest_path.write_text(json.dumps(manifest))
    print(f"wrote {studies} small studies and a CT series of {slices} slices into {out}")


# --------------------------------------------------------------------- servers


@dataclass
class Server:
    name: str
    base: str  # the DICOMweb root, no trailing slash
    dicom_port: int
    ae_title: str
    headers: dict[str, str] = field(default_factory=dict)
    db_url: str = ""  # the hub's database, for counting what it holds
    stop: Callable[[], object] = lambda: None

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.base, headers=self.headers, timeout=120)


def start_orthanc(work: Path) -> Server:
    """Orthanc from the Debian package with a private config, never the system service."""
    work.mkdir(parents=True, exist_ok=True)
    config = {
        "Name": "dicomweb-bench",
        "StorageDirectory": str(work / "storage"),
        "IndexDirectory": str(work / "storage"),
        "HttpPort": ORTHANC_HTTP,
        "DicomPort": ORTHANC_DICOM,
        "DicomAet": "ORTHANC",
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomCheckCalledAet": False,
        "Plugins": [PLUGINS],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": False},
    }
    (work / "orthanc.json").write_text(json.dumps(config, indent=2))
    log = open(work / "orthanc.log", "ab")  # noqa: SIM115 (lives with the process)
    proc = subprocess.Popen(["Orthanc", str(work / "orthanc.json")], stdout=log, stderr=log)
    url = f"http://127.0.0.1:{ORTHANC_HTTP}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"Orthanc exited, see {work / 'orthanc.log'}")
        try:
            if httpx.get(f"{url}/system").status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.2)

    def stop() -> None:
        proc.terminate()
        proc.wait(30)

    return Server("orthanc", f"{url}/dicom-web", ORTHANC_DICOM, "ORTHANC", stop=stop)


PG_DATABASE = "dicomweb_bench"


def start_vethub(work: Path, postgres: bool = False) -> Server:
    """``vethub serve`` on SQLite under WORK, or on database PG_DATABASE of the test
    PostgreSQL server (made if missing, kept between runs like WORK)."""
    work.mkdir(parents=True, exist_ok=True)
    db_url = f"sqlite:///{work}/vethub.db"
    if postgres:
        with pg_admin() as admin:
            made = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (PG_DATABASE,))
            if made.fetchone() is None:
                admin.execute(f"CREATE DATABASE {PG_DATABASE}")
        db_url = pg_database_url(PG_DATABASE)
    hub: ServedHub = start_hub(work / "data", db_url, VETHUB_DICOM_ALLOW_UNKNOWN_AE="true")
    return Server(
        "vethub-pg" if postgres else "vethub",
        f"{hub.url}/dicomweb",
        hub.dicom,
        hub.ae_title,
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
        db_url=db_url,
        stop=hub.stop,
    )


def study_count(server: Server) -> int:
    """How many studies the server holds, not asked through DICOMweb."""
    if server.name == "orthanc":
        return int(httpx.get(f"{server.base.rsplit('/', 1)[0]}/statistics").json()["CountStudies"])
    engine = create_engine(server.db_url)
    try:
        with engine.connect() as db:
            return int(db.execute(text("SELECT count(*) FROM studies")).scalar_one())
    finally:
        engine.dispose()


def load(server: Server, data: Path, manifest: dict[str, Any], streams: int) -> float:
    """C-STORE every file with ``storescu``, ``streams`` associations at once; seconds."""
    folders = [*sorted((data / "small").iterdir()), data / "ct"]
    return storescu_all(
        folders, "BENCHSCU", server.name, server.ae_title, server.dicom_port, streams
    )


def storescu_all(
    folders: list[Path], calling: str, name: str, called: str, port: int, streams: int
) -> float:
    """Each folder sent by its own DCMTK ``storescu`` process, ``streams`` at once
    (the real C-STORE path, no bulk ingest); the seconds it took."""
    began = time.monotonic()
    pending = list(folders)
    running: list[subprocess.Popen[bytes]] = []
    while pending or running:
        while pending and len(running) < streams:
            cmd = ["storescu", "-aet", calling, "-aec", called, "+sd", "+r", "-nh"]
            cmd += ["127.0.0.1", str(port), str(pending.pop(0))]
            running.append(subprocess.Popen(cmd, stderr=subprocess.DEVNULL))
        time.sleep(0.2)
        for proc in list(running):
            if proc.poll() is not None:
                running.remove(proc)
                if proc.returncode != 0:
                    print(f"  storescu into {name} exited {proc.returncode}")
    return time.monotonic() - began


# --------------------------------------------------------------------- measures


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def qido_kinds(manifest: dict[str, Any]) -> dict[str, dict[str, str]]:
    """The study searches, each with a limit that both servers honour (the hub's
    default page is 100, its largest 1,000; Orthanc's is unlimited)."""
    small = manifest["small"]
    one = small[len(small) // 2]["patient_id"]
    return {
        "PatientID (1 hit)": {"PatientID": one},
        "PatientName=Mül*": {"PatientName": "Mül*", "limit": "1000"},
        "PatientName=Wag*": {"PatientName": "Wag*", "limit": "1000"},
        "StudyDate 10-day range": {"StudyDate": "20260601-20260610", "limit": "1000"},
        "ModalitiesInStudy=CT, limit=100": {"ModalitiesInStudy": "CT", "limit": "100"},
        "ModalitiesInStudy=CT, limit=1000": {"ModalitiesInStudy": "CT", "limit": "1000"},
        "no filter, limit=100": {"limit": "100"},
    }


def expected_hits(manifest: dict[str, Any], kind: str, params: dict[str, str]) -> int:
    """How many studies a right answer holds."""
    small = manifest["small"]
    if "PatientID" in params:
        found = 1
    elif "PatientName" in params:
        found = sum(r["patient_name"].startswith(params["PatientName"][:-1]) for r in small)
    elif "StudyDate" in params:
        low, high = params["StudyDate"].split("-")
        found = sum(low <= r["date"] <= high for r in small)
    elif "ModalitiesInStudy" in params:
        found = sum(r["modality"] == "CT" for r in small) + 1  # and the CT series' study
    else:
        found = len(small) + 1
    return min(found, int(params.get("limit", found)))


def bench_qido(servers: list[Server], manifest: dict[str, Any], reps: int) -> list[dict[str, Any]]:
    rows = []
    clients = {s.name: s.client() for s in servers}
    accept = {"Accept": "application/dicom+json"}
    for kind, params in qido_kinds(manifest).items():
        # '*' and '?' sent as they are, as a browser does: Orthanc takes "%2A" literally.
        url = "/studies?" + urlencode(params, safe="*?^")
        times: dict[str, list[float]] = {s.name: [] for s in servers}
        hits: dict[str, int] = {}
        for rep in range(reps + 2):
            order = servers if rep % 2 == 0 else servers[::-1]
            for server in order:
                client = clients[server.name]
                began = time.perf_counter()
                answer = client.get(url, headers=accept)
                elapsed = (time.perf_counter() - began) * 1000
                if answer.status_code not in (200, 204):
                    raise RuntimeError(f"{server.name} {kind}: {answer.status_code} {answer.text}")
                hits[server.name] = len(answer.json()) if answer.status_code == 200 else 0
                if rep >= 2:
                    times[server.name].append(elapsed)
        row: dict[str, Any] = {"kind": kind, "expected": expected_hits(manifest, kind, params)}
        for name, values in times.items():
            row[name] = {
                "median_ms": statistics.median(values),
                "p95_ms": pct(values, 0.95),
                "hits": hits[name],
            }
        rows.append(row)
        print(
            f"  {kind:33s} expected {row['expected']:4d}  "
            + "  ".join(
                f"{n} {row[n]['median_ms']:7.1f}/{row[n]['p95_ms']:7.1f} ms ({row[n]['hits']})"
                for n in times
            )
        )
    for client in clients.values():
        client.close()
    return rows


def _pixel_bytes(path: Path) -> bytes:
    import pydicom

    return bytes(pydicom.dcmread(path).PixelData)


def _part_body(answer: httpx.Response) -> bytes:
    """The first part of a multipart/related answer (one frame)."""
    body = answer.content
    start = body.index(b"\r\n\r\n") + 4
    boundary = body[2 : body.index(b"\r\n")]
    end = body.index(b"\r\n--" + boundary, start)
    return body[start:end]


def frames_round(
    server: Server, urls: list[str], concurrency: int, encoding: str
) -> tuple[float, list[float]]:
    """Fetch every URL once with ``concurrency`` threads; (frames/s, per-request ms)."""
    queue = list(urls)
    lock = threading.Lock()
    latencies: list[float] = []
    errors: list[str] = []

    def worker() -> None:
        with server.client() as client:
            while True:
                with lock:
                    if not queue:
                        return
                    url = queue.pop()
                began = time.perf_counter()
                answer = client.get(
                    url, headers={"Accept": FRAME_ACCEPT, "Accept-Encoding": encoding}
                )
                elapsed = (time.perf_counter() - began) * 1000
                if answer.status_code != 200 or len(answer.content) < 512 * 512 * 2:
                    errors.append(f"{answer.status_code} {len(answer.content)}")
                with lock:
                    latencies.append(elapsed)

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    began = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - began
    if errors:
        raise RuntimeError(f"{server.name} frames: {len(errors)} failed, e.g. {errors[0]}")
    return len(urls) / wall, latencies


def series_round(server: Server, study: str, series: str) -> tuple[float, int]:
    """One whole-series retrieve, streamed; (MB/s, bytes)."""
    size = 0
    with server.client() as client:
        began = time.perf_counter()
        with client.stream(
            "GET", f"/studies/{study}/series/{series}", headers={"Accept": SERIES_ACCEPT}
        ) as answer:
            if answer.status_code != 200:
                raise RuntimeError(f"{server.name} series: {answer.status_code} {answer.read()!r}")
            for chunk in answer.iter_bytes(1 << 20):
                size += len(chunk)
        wall = time.perf_counter() - began
    return size / wall / 1e6, size


# What a browser sends (Orthanc then gzips each frame) and no compression.
ENCODINGS = {"browser": "gzip, deflate, br", "identity": "identity"}


def bench_wado(
    servers: list[Server], manifest: dict[str, Any], data: Path, rounds: int, concurrency: int
) -> dict[str, Any]:
    ct = manifest["ct"]
    base = f"/studies/{ct['study']}/series/{ct['series']}/instances"
    urls = [f"{base}/{sop}/frames/1" for sop in ct["sops"]]
    expected = _pixel_bytes(data / "ct" / "ct0000.dcm")
    result: dict[str, Any] = {"frames": len(urls), "concurrency": concurrency}
    for server in servers:
        mine: dict[str, Any] = {"series_mbps": []}
        with server.client() as client:
            for enc, header in ENCODINGS.items():
                first = client.get(
                    urls[0], headers={"Accept": FRAME_ACCEPT, "Accept-Encoding": header}
                )
                first.raise_for_status()
                mine[enc] = {
                    "frame_ok": _part_body(first) == expected,
                    "content_encoding": first.headers.get("content-encoding", "none"),
                    "rounds_fps": [],
                    "latencies": [],
                }
                print(
                    f"  {server.name} ({enc}): first frame equals the file's pixels: "
                    f"{mine[enc]['frame_ok']}, Content-Encoding {mine[enc]['content_encoding']}"
                )
        result[server.name] = mine
    for r in range(rounds):
        order = servers if r % 2 == 0 else servers[::-1]
        for enc, header in ENCODINGS.items():
            for server in order:
                fps, lat = frames_round(server, urls, concurrency, header)
                result[server.name][enc]["rounds_fps"].append(fps)
                result[server.name][enc]["latencies"] += lat
        for server in order:
            mbps, size = series_round(server, ct["study"], ct["series"])
            result[server.name]["series_mbps"].append(mbps)
            result[server.name]["series_bytes"] = size
    for server in servers:
        mine = result[server.name]
        for enc in ENCODINGS:
            part = mine[enc]
            lat = part.pop("latencies")
            part["frames_per_s"] = statistics.median(part["rounds_fps"])
            part["frame_median_ms"] = statistics.median(lat)
            part["frame_p95_ms"] = pct(lat, 0.95)
            print(
                f"  {server.name} frames ({enc}): {part['frames_per_s']:.0f} frames/s "
                f"(rounds {', '.join(f'{v:.0f}' for v in part['rounds_fps'])}), "
                f"per request {part['frame_median_ms']:.1f}/{part['frame_p95_ms']:.1f} ms"
            )
        mine["series_mb_per_s"] = statistics.median(mine["series_mbps"])
        print(
            f"  {server.name} series: {mine['series_mb_per_s']:.0f} MB/s "
            f"({', '.join(f'{v:.0f}' for v in mine['series_mbps'])}; "
            f"{mine['series_bytes'] / 1e6:.0f} MB)"
        )
    return result


def versions(servers: list[Server]) -> dict[str, Any]:
    found: dict[str, Any] = {"loadavg": os.getloadavg(), "cpus": os.cpu_count()}
    for server in servers:
        if server.name == "orthanc":
            url = server.base.rsplit("/", 1)[0]
            found["orthanc"] = httpx.get(f"{url}/system").json().get("Version")
            found["orthanc_dicomweb"] = httpx.get(f"{url}/plugins/dicom-web").json().get("Version")
        else:
            found["vethub_commit"] = subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
            ).stdout.strip()
    return found


def run(args: argparse.Namespace) -> None:
    data, work = Path(args.data), Path(args.work)
    manifest = json.loads((data / "manifest.json").read_text())
    want = manifest["studies"] + 1
    if args.fresh:
        shutil.rmtree(work, ignore_errors=True)
        if "vethub-pg" in args.servers:
            with pg_admin() as admin:
                admin.execute(f"DROP DATABASE IF EXISTS {PG_DATABASE}")
    starters: dict[str, Callable[[Path], Server]] = {
        "orthanc": start_orthanc,
        "vethub": start_vethub,
        "vethub-pg": lambda work: start_vethub(work, postgres=True),
    }
    servers: list[Server] = []
    try:
        for name in args.servers.split(","):
            servers.append(starters[name](work / name))
        result: dict[str, Any] = {"versions": versions(servers), "load_s": {}}
        for server in servers:
            held = study_count(server)
            if held < want:
                print(f"loading {server.name} ({held} of {want} studies held)")
                result["load_s"][server.name] = load(server, data, manifest, args.streams)
                held = study_count(server)
            print(f"{server.name} holds {held} studies")
        print(f"QIDO-RS, {args.reps} requests per kind and server: median/p95 ms (studies found)")
        result["qido"] = bench_qido(servers, manifest, args.reps)
        print(f"WADO-RS, {args.rounds} rounds, {args.concurrency} in flight")
        result["wado"] = bench_wado(servers, manifest, data, args.rounds, args.concurrency)
        result["versions"]["loadavg_end"] = os.getloadavg()
        if args.out:
            Path(args.out).write_text(json.dumps(result, indent=2))
    finally:
        for server in servers:
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    g = sub.add_parser("gen", help="write the test data once")
    g.add_argument("--out", required=True)
    g.add_argument("--studies", type=int, default=10_000)
    g.add_argument("--slices", type=int, default=300)
    g.add_argument("--seed", type=int, default=11)
    r = sub.add_parser("run", help="start, load and measure the servers")
    r.add_argument("--data", required=True)
    r.add_argument("--work", required=True, help="the servers' storage (kept between runs)")
    r.add_argument(
        "--servers", default="orthanc,vethub", help="of orthanc, vethub, vethub-pg (PostgreSQL)"
    )
    r.add_argument("--reps", type=int, default=25, help="timed QIDO requests per kind")
    r.add_argument("--rounds", type=int, default=3, help="WADO rounds per server")
    r.add_argument("--concurrency", type=int, default=4, help="frame requests in flight")
    r.add_argument("--streams", type=int, default=3, help="storescu processes at once")
    r.add_argument(
        "--fresh", action="store_true", help="empty WORK (and the PostgreSQL database) first"
    )
    r.add_argument("--out")
    args = parser.parse_args()
    if args.command == "gen":
        gen(Path(args.out), args.studies, args.slices, args.seed)
    else:
        run(args)


if __name__ == "__main__":
    main()
