"""The archive's speed (issue #13) beside Orthanc and DCMTK dcmqrscp, same files in each.

    .venv/bin/python scripts/archive_bench.py gen-ct --out /tmp/arbench/ct500
    .venv/bin/python scripts/archive_bench.py run --small /tmp/dwbench/data \\
        --ct /tmp/arbench/ct500 --work /tmp/arbench/work --out /tmp/arbench/results.json

``gen-ct`` writes one CT series of SLICES 512x512 16-bit slices (uncompressed,
~0.5 MB each). The small studies are ``scripts/dicomweb_bench.py gen``'s
(one 8x8 instance per study, PatientID P000000.., owner^pet names, StudyDate
over 2026, DX/CR/US/CT/MR), read from SMALL/small with SMALL/manifest.json.

``run`` starts every server itself on loopback, each with its own storage
under WORK (kept between runs, so a loaded server is not loaded twice):

- ``vethub serve`` on SQLite (the test harness's ``start_hub``), loaded by
  DCMTK ``storescu`` over C-STORE, STREAMS associations at once;
- Orthanc (Debian package, no plugins, DICOM 14243, HTTP 18043), loaded the
  same way;
- DCMTK ``dcmqrscp`` (port 14244), its index built by ``dcmqridx`` on the
  same files where they lie (no copy, no network).

Then, the servers taking turns request by request so a change in the
machine's load hits them all alike:

- ``find``: study-level C-FIND (Study Root) as a workstation asks for priors,
  by PatientID, PatientName wildcard, StudyDate range and ModalitiesInStudy;
  pynetdicom SCU with TCP_NODELAY, one association per server, REPS timed queries per kind
  after 2 warm-ups: median and p95 ms from sending the request to the last
  response, and the number of matches each answered;
- ``findscu``: the same C-FIND kinds from DCMTK ``findscu`` (a C client, so the
  servers' own time shows): ROUNDS rounds of a ``--repeat 1`` and a
  ``--repeat REPEAT`` run on one association, the time per query their
  difference over REPEAT - 1;
- ``move``: C-MOVE of the CT study to a DCMTK ``storescp`` (registered in
  each server as STORESCP), DCMTK ``movescu`` as the client, ROUNDS rounds:
  instances/s from starting movescu to its exit (every instance received);
- ``export``: ``vethub export --to DIR`` of the hub's whole archive against
  ``cp -r`` of the hub's own ``studies/`` folder, both followed by ``sync``,
  the page cache dropped before each: MB/s and instances/s.

Figures and how to read them: docs/performance.md, "The archive:
Query/Retrieve and export (issue #13)".
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scripts.dicomweb_bench import storescu_all
from tests.harness import ADMIN_KEY, start_hub

ORTHANC_HTTP = 18043
ORTHANC_DICOM = 14243
DCMQRSCP_PORT = 14244
DCMQRSCP_MAX = 500  # studies per storage area, DCMTK's DB_UpperMaxStudies
STORESCP_PORT = 14245
SCU_AE = "BENCHSCU"
DEST_AE = "STORESCP"
# Debian's DCMTK leaves Nagle on unless TCP_NODELAY=1 is in the environment; then a
# request's or answer's second PDU waits for the peer's delayed ACK (~40 ms). The hub
# sets TCP_NODELAY itself; findscu, Orthanc and dcmqrscp get it from here.
NO_DELAY = {**os.environ, "TCP_NODELAY": "1"}
CT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.2"
FIND_KEYS = (
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "PatientName",
    "PatientID",
    "StudyDescription",
    "ModalitiesInStudy",
)


# --------------------------------------------------------------------- gen


def gen_ct(out: Path, slices: int, seed: int) -> None:
    """One CT series of ``slices`` 512x512 16-bit slices, with a manifest."""
    import numpy as np
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    manifest_path = out / "manifest.json"
    if manifest_path.exists():
        print(f"{manifest_path} exists: nothing to do")
        return
    out.mkdir(parents=True, exist_ok=True)
    root = "1.2.826.0.1.3680043.10.1156.13."
    study, series = generate_uid(root), generate_uid(root)
    yy, xx = np.mgrid[0:512, 0:512]
    body = ((xx - 256) / 200.0) ** 2 + ((yy - 270) / 150.0) ** 2 <= 1.0
    rng = np.random.default_rng(seed)
    for z in range(slices):
        ds = Dataset()
        ds.SpecificCharacterSet = "ISO_IR 192"
        ds.SOPClassUID = CT_SOP_CLASS
        ds.SOPInstanceUID = generate_uid(root)
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.StudyDate, ds.StudyTime, ds.Modality = "20261128", "101500", "CT"
        ds.PatientID, ds.PatientName = "P-CT-500", "Jäger^Bello"
        ds.AccessionNumber, ds.StudyDescription = "ACT0500", "CT thorax"
        ds.SeriesNumber, ds.InstanceNumber = "2", str(z + 1)
        ds.ImagePositionPatient = [0, 0, z]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing, ds.SliceThickness = [0.5, 0.5], 1
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows = ds.Columns = 512
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        img = np.where(body, 1064, 24) + rng.integers(0, 24, size=(512, 512))
        ds.PixelData = img.astype(np.uint16).tobytes()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = ds.SOPClassUID
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta = meta
        ds.save_as(out / f"ct{z:04d}.dcm", enforce_file_format=True)
    manifest_path.write_text(json.dumps({"study": study, "series": series, "slices": slices}))
    print(f"wrote a CT series of {slices} slices into {out}")


# --------------------------------------------------------------------- servers


@dataclass
class Server:
    name: str
    port: int
    ae_title: str
    count: Callable[[], int]  # studies held, not asked over DICOM
    stop: Callable[[], object] = lambda: None
    info: dict[str, Any] = field(default_factory=dict)


def _wait(check: Callable[[], bool], proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited {proc.returncode}")
        try:
            if check():
                return
        except (httpx.HTTPError, OSError):
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"{what} did not come up in 60 s")


def _stopper(proc: subprocess.Popen[bytes]) -> Callable[[], None]:
    def stop() -> None:
        proc.terminate()
        proc.wait(30)

    return stop


def start_vethub(work: Path) -> Server:
    """``vethub serve`` on SQLite under WORK, the storescp destination registered."""
    work.mkdir(parents=True, exist_ok=True)
    db_url = f"sqlite:///{work}/vethub.db"
    hub = start_hub(work / "data", db_url, VETHUB_DICOM_ALLOW_UNKNOWN_AE="true")
    answer = httpx.put(
        f"{hub.url}/api/v1/modalities/{DEST_AE}",
        json={"host": "127.0.0.1", "port": STORESCP_PORT},
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
    )
    answer.raise_for_status()

    def count() -> int:
        import sqlite3

        with sqlite3.connect(work / "vethub.db") as db:
            return int(db.execute("SELECT count(*) FROM studies").fetchone()[0])

    env = {"VETHUB_DATA_DIR": str(work / "data"), "VETHUB_DATABASE_URL": db_url}
    return Server("vethub", hub.dicom, hub.ae_title, count, hub.stop, env)


def start_orthanc(work: Path) -> Server:
    """Orthanc from the Debian package with a private config, never the system service."""
    work.mkdir(parents=True, exist_ok=True)
    config = {
        "Name": "archive-bench",
        "StorageDirectory": str(work / "storage"),
        "IndexDirectory": str(work / "storage"),
        "HttpPort": ORTHANC_HTTP,
        "DicomPort": ORTHANC_DICOM,
        "DicomAet": "ORTHANC",
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomCheckCalledAet": False,
        "Plugins": [],
        "DicomModalities": {
            "storescp": [DEST_AE, "127.0.0.1", STORESCP_PORT],
            "bench": [SCU_AE, "127.0.0.1", 1],
        },
    }
    (work / "orthanc.json").write_text(json.dumps(config, indent=2))
    with open(work / "orthanc.log", "ab") as log:
        cmd = ["Orthanc", str(work / "orthanc.json")]
        proc = subprocess.Popen(cmd, stdout=log, stderr=log, env=NO_DELAY)
    url = f"http://127.0.0.1:{ORTHANC_HTTP}"
    _wait(lambda: httpx.get(f"{url}/system").status_code == 200, proc, "Orthanc")

    def count() -> int:
        return int(httpx.get(f"{url}/statistics").json()["CountStudies"])

    version = httpx.get(f"{url}/system").json().get("Version")
    return Server("orthanc", ORTHANC_DICOM, "ORTHANC", count, _stopper(proc), {"version": version})


def start_dcmqrscp(work: Path, files: list[Path]) -> Server:
    """dcmqrscp with a private config; its index built once by dcmqridx on FILES."""
    store = work / "db"
    store.mkdir(parents=True, exist_ok=True)
    config = work / "dcmqrscp.cfg"
    config.write_text(
        "MaxPDUSize = 16384\n"
        "MaxAssociations = 16\n"
        "HostTable BEGIN\n"
        f"storescp = ({DEST_AE}, 127.0.0.1, {STORESCP_PORT})\n"
        "HostTable END\n"
        "VendorTable BEGIN\nVendorTable END\n"
        "AETable BEGIN\n"
        f"DCMQRSCP {store} RW ({DCMQRSCP_MAX}, 1024mb) ANY\n"
        "AETable END\n"
    )
    indexed = work / "indexed"
    if not indexed.exists():
        began = time.monotonic()
        for i in range(0, len(files), 1000):
            batch = [str(f) for f in files[i : i + 1000]]
            subprocess.run(["dcmqridx", str(store), *batch], check=True)
        indexed.write_text(f"{len(files)} files in {time.monotonic() - began:.1f} s\n")
        print(f"  dcmqridx: {indexed.read_text().strip()}")
    with open(work / "dcmqrscp.log", "ab") as log:
        cmd = ["dcmqrscp", "-c", str(config), str(DCMQRSCP_PORT)]
        proc = subprocess.Popen(cmd, stdout=log, stderr=log, env=NO_DELAY)
    _wait(lambda: _echo(DCMQRSCP_PORT, "DCMQRSCP"), proc, "dcmqrscp")

    def count() -> int:
        return DCMQRSCP_MAX  # the CT and DCMQRSCP_MAX - 1 one-instance studies

    return Server("dcmqrscp", DCMQRSCP_PORT, "DCMQRSCP", count, _stopper(proc))


def _echo(port: int, ae: str) -> bool:
    cmd = ["echoscu", "-aet", SCU_AE, "-aec", ae, "127.0.0.1", str(port)]
    return subprocess.run(cmd, capture_output=True).returncode == 0


def load(server: Server, folders: list[Path], streams: int) -> float:
    """C-STORE every file with ``storescu``, ``streams`` associations at once; seconds."""
    return storescu_all(folders, SCU_AE, server.name, server.ae_title, server.port, streams)


# --------------------------------------------------------------------- measures


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def find_kinds(small: list[dict[str, str]]) -> dict[str, dict[str, str]]:
    """Prior searches as a workstation sends them (ASCII, so no character set differs)."""
    return {
        "patient_id": {"PatientID": small[250]["patient_id"]},
        "patient_name_wildcard": {"PatientName": "Schm*"},
        "study_date_week": {"StudyDate": "20260301-20260307"},
        "modalities_in_study_mr": {"ModalitiesInStudy": "MR"},
    }


def expected_matches(small: list[dict[str, str]], kind: str, held: int) -> int:
    """Matches among the small studies the server holds (dcmqrscp only the first ones)."""
    small = small[: held - 1]
    rows = {
        "patient_id": [r for r in small if r["patient_id"] == small[250]["patient_id"]],
        "patient_name_wildcard": [r for r in small if r["patient_name"].startswith("Schm")],
        "study_date_week": [r for r in small if "20260301" <= r["date"] <= "20260307"],
        "modalities_in_study_mr": [r for r in small if r["modality"] == "MR"],
    }[kind]
    return len(rows)


def _query(keys: dict[str, str]) -> Any:
    from pydicom.dataset import Dataset

    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    for name in FIND_KEYS:
        setattr(ds, name, "")
    for name, value in keys.items():
        setattr(ds, name, value)
    return ds


def bench_find(
    servers: list[Server], small: list[dict[str, str]], reps: int
) -> list[dict[str, Any]]:
    from pynetdicom import AE
    from pynetdicom.sop_class import (  # type: ignore[attr-defined]
        StudyRootQueryRetrieveInformationModelFind as FIND,
    )

    ae = AE(ae_title=SCU_AE)
    ae.add_requested_context(FIND)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 600
    assocs = {}
    for server in servers:
        assoc = ae.associate("127.0.0.1", server.port, ae_title=server.ae_title)
        if not assoc.is_established:
            raise RuntimeError(f"{server.name}: no association for C-FIND")
        # pynetdicom leaves Nagle on: each query would wait ~40 ms for the
        # server's delayed ACK, timing the client. DCMTK's tools set it too.
        wire = assoc.dul.socket
        if wire is None or wire.socket is None:
            raise RuntimeError(f"{server.name}: association without a socket")
        wire.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        assocs[server.name] = assoc
    rows = []
    try:
        for kind, keys in find_kinds(small).items():
            times: dict[str, list[float]] = {s.name: [] for s in servers}
            matches: dict[str, int] = {}
            statuses: dict[str, str] = {}
            for rep in range(reps + 2):
                for server in servers:
                    began = time.perf_counter()
                    n, last = 0, 0
                    for status, ident in assocs[server.name].send_c_find(_query(keys), FIND):
                        last = status.Status if status else -1
                        if ident is not None and last in (0xFF00, 0xFF01):
                            n += 1
                    elapsed = (time.perf_counter() - began) * 1000
                    if rep >= 2:
                        times[server.name].append(elapsed)
                    matches[server.name], statuses[server.name] = n, f"0x{last:04X}"
            for server in servers:
                ms = times[server.name]
                rows.append(
                    {
                        "kind": kind,
                        "keys": keys,
                        "server": server.name,
                        "median_ms": round(statistics.median(ms), 2),
                        "p95_ms": round(pct(ms, 0.95), 2),
                        "matches": matches[server.name],
                        "expected": expected_matches(small, kind, server.count()),
                        "final_status": statuses[server.name],
                    }
                )
                print(f"  find {kind:24} {server.name:9} {rows[-1]}")
    finally:
        for assoc in assocs.values():
            assoc.release()
    return rows


def _findscu(server: Server, keys: dict[str, str], repeat: int, *extra: str) -> Any:
    cmd = ["findscu", "-S", "-aet", SCU_AE, "-aec", server.ae_title, "--repeat", str(repeat)]
    cmd += [*extra, "-k", "QueryRetrieveLevel=STUDY"]
    for name in FIND_KEYS:
        cmd += ["-k", f"{name}={keys[name]}" if name in keys else name]
    cmd += ["127.0.0.1", str(server.port)]
    began = time.perf_counter()
    # errors="replace": answers in Latin-1 are printed as they came
    done = subprocess.run(cmd, capture_output=True, text=True, errors="replace", env=NO_DELAY)
    return done, time.perf_counter() - began


def bench_findscu(
    servers: list[Server], small: list[dict[str, str]], repeat: int, rounds: int
) -> list[dict[str, Any]]:
    """The same C-FIND kinds from DCMTK findscu, a C client that decodes each answer in
    microseconds (pynetdicom takes ~0.4 ms), so the server's own time shows.

    Per round and server: one findscu run with ``--repeat 1`` and one with
    ``--repeat REPEAT`` (10 x REPEAT for kinds of at most 10 matches; both one
    association, responses not printed); the time per query is their
    difference over REPEAT - 1, which leaves out the process start and the
    association. The servers take turns run by run.
    """
    rows = []
    for kind, keys in find_kinds(small).items():
        per_query: dict[str, list[float]] = {s.name: [] for s in servers}
        matches: dict[str, int] = {}
        for server in servers:  # answers counted once, from findscu's own log
            done, _ = _findscu(server, keys, 1, "-v")
            said = done.stdout + done.stderr
            matches[server.name] = len(re.findall(r"Find Response:? \d+ \(Pending", said))
            if "Received Final Find Response (Success)" not in said or done.returncode:
                print(f"  findscu {kind} {server.name}: exit {done.returncode}", said[-600:])
        # A few answers take milliseconds: more repeats, so the process start's jitter
        # (several ms on a busy machine) is small beside what is measured.
        times = repeat * 10 if max(matches.values()) <= 10 else repeat
        for _ in range(rounds):
            for server in servers:
                _, one = _findscu(server, keys, 1, "-sr")
                done, many = _findscu(server, keys, times, "-sr")
                if done.returncode:
                    print(f"  findscu {kind} {server.name}: exit {done.returncode}")
                per_query[server.name].append((many - one) / (times - 1) * 1000)
        for server in servers:
            ms = per_query[server.name]
            rows.append(
                {
                    "kind": kind,
                    "keys": keys,
                    "server": server.name,
                    "median_ms": round(statistics.median(ms), 2),
                    "rounds_ms": [round(x, 2) for x in ms],
                    "repeat": times,
                    "matches": matches[server.name],
                    "expected": expected_matches(small, kind, server.count()),
                }
            )
            print(f"  findscu {kind:24} {server.name:9} {rows[-1]}")
    return rows


def bench_move(
    servers: list[Server], ct: dict[str, Any], work: Path, rounds: int
) -> list[dict[str, Any]]:
    """C-MOVE the CT study to a fresh storescp per round; instances/s, all servers in turn."""
    results: dict[str, list[float]] = {s.name: [] for s in servers}
    received: dict[str, list[int]] = {s.name: [] for s in servers}
    for _ in range(rounds):
        for server in servers:
            dest = work / "received"
            shutil.rmtree(dest, ignore_errors=True)
            dest.mkdir(parents=True)
            scp = subprocess.Popen(
                ["storescp", "-aet", DEST_AE, "-od", str(dest), str(STORESCP_PORT)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            _wait(lambda: _echo(STORESCP_PORT, DEST_AE), scp, "storescp")
            cmd = ["movescu", "-aet", SCU_AE, "-aec", server.ae_title, "-aem", DEST_AE, "-S"]
            cmd += ["-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={ct['study']}"]
            cmd += ["127.0.0.1", str(server.port)]
            began = time.perf_counter()
            done = subprocess.run(cmd, capture_output=True, text=True)
            elapsed = time.perf_counter() - began
            scp.terminate()
            scp.wait(30)
            got = len(list(dest.iterdir()))
            if done.returncode != 0 or got != ct["slices"]:
                print(
                    f"  move {server.name}: exit {done.returncode}, {got} received",
                    done.stderr[-800:],
                )
            results[server.name].append(got / elapsed)
            received[server.name].append(got)
            print(f"  move {server.name:9} {got} in {elapsed:.2f} s = {got / elapsed:.1f}/s")
    return [
        {
            "server": s.name,
            "instances_per_s_median": round(statistics.median(results[s.name]), 1),
            "rounds": [round(x, 1) for x in results[s.name]],
            "received": received[s.name],
        }
        for s in servers
    ]


def _drop_caches() -> None:
    subprocess.run(["sync"], check=True)
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def _tree(path: Path) -> tuple[int, int]:
    files = [p for p in path.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def bench_export(hub: Server, work: Path, rounds: int) -> dict[str, Any]:
    """``vethub export --to`` against ``cp -r`` of the same files, cold cache, with sync."""
    env = {**os.environ, **hub.info}
    source = Path(hub.info["VETHUB_DATA_DIR"]) / "studies"
    n_files, n_bytes = _tree(source)
    runs: dict[str, list[float]] = {"export": [], "cp": []}
    exported: tuple[int, int] = (0, 0)
    vethub = str(Path(sys.executable).with_name("vethub"))
    for _ in range(rounds):
        for how in ("export", "cp"):
            target = work / f"out-{how}"
            shutil.rmtree(target, ignore_errors=True)
            _drop_caches()
            began = time.perf_counter()
            if how == "export":
                done = subprocess.run(
                    [vethub, "export", "--to", str(target)], env=env, capture_output=True, text=True
                )
            else:
                done = subprocess.run(
                    ["cp", "-r", str(source), str(target)], capture_output=True, text=True
                )
            subprocess.run(["sync"], check=True)
            elapsed = time.perf_counter() - began
            if done.returncode != 0:
                print(f"  {how} exited {done.returncode}: {done.stderr[-800:]}")
            runs[how].append(elapsed)
            if how == "export":
                exported = _tree(target)
            print(f"  {how:6} {elapsed:.2f} s")
    med = {how: statistics.median(ts) for how, ts in runs.items()}
    return {
        "stored_files": n_files,
        "stored_mb": round(n_bytes / 1e6, 1),
        "exported_files": exported[0],
        "exported_mb": round(exported[1] / 1e6, 1),
        "seconds": {how: [round(t, 2) for t in ts] for how, ts in runs.items()},
        "mb_per_s_median": {
            "export": round(exported[1] / 1e6 / med["export"], 1),
            "cp": round(n_bytes / 1e6 / med["cp"], 1),
        },
        "files_per_s_median": {
            "export": round(exported[0] / med["export"], 1),
            "cp": round(n_files / med["cp"], 1),
        },
    }


def versions() -> dict[str, str]:
    found = {}
    for tool in ("dcmqrscp", "movescu", "storescp"):
        found[tool] = subprocess.run(
            [tool, "--version"], capture_output=True, text=True
        ).stdout.splitlines()[0]
    found["vethub"] = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    return found


def run(args: argparse.Namespace) -> None:
    small_manifest = json.loads((args.small / "manifest.json").read_text())
    small: list[dict[str, str]] = small_manifest["small"]
    ct = json.loads((args.ct / "manifest.json").read_text())
    folders = [*sorted((args.small / "small").iterdir()), args.ct]
    wanted = args.servers.split(",")
    servers: list[Server] = []
    results: dict[str, Any] = {"started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
    try:
        for name in wanted:
            if name == "dcmqrscp":
                # dcmqrscp holds at most 500 studies per storage area (DB_UpperMaxStudies,
                # compiled in): the CT and the first 499 small studies.
                files = sorted(args.ct.glob("*.dcm"))
                files += sorted(p for f in folders[:-1] for p in f.glob("*.dcm"))[
                    : DCMQRSCP_MAX - 1
                ]
                servers.append(start_dcmqrscp(args.work / "dcmqrscp", files))
                continue
            server = {"vethub": start_vethub, "orthanc": start_orthanc}[name](args.work / name)
            held = server.count()
            if held < len(small) + 1:
                seconds = load(server, folders, args.streams)
                print(f"  loaded {server.name} in {seconds:.0f} s, holds {server.count()} studies")
                results[f"load_s_{name}"] = round(seconds, 1)
            servers.append(server)
        results["studies"] = {s.name: s.count() for s in servers}
        results["load_avg_before"] = os.getloadavg()
        if "find" in args.parts:
            results["find"] = bench_find(servers, small, args.reps)
        if "findscu" in args.parts:
            results["findscu"] = bench_findscu(servers, small, args.repeat, args.rounds)
        if "move" in args.parts:
            results["move"] = bench_move(servers, ct, args.work, args.rounds)
        if "export" in args.parts:
            hub = next(s for s in servers if s.name == "vethub")
            results["export"] = bench_export(hub, args.work, args.rounds)
        results["load_avg_after"] = os.getloadavg()
        results["versions"] = {**versions(), **{s.name: s.info.get("version", "") for s in servers}}
    finally:
        for server in servers:
            server.stop()
    args.out.write_text(json.dumps(results, indent=2))
    print(f"results in {args.out}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("gen-ct", help="write the CT series once")
    g.add_argument("--out", type=Path, required=True)
    g.add_argument("--slices", type=int, default=500)
    g.add_argument("--seed", type=int, default=13)
    r = sub.add_parser("run", help="start, load and measure the servers")
    r.add_argument("--small", type=Path, required=True, help="dicomweb_bench.py gen's output")
    r.add_argument("--ct", type=Path, required=True, help="gen-ct's output")
    r.add_argument("--work", type=Path, required=True)
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--servers", default="vethub,orthanc,dcmqrscp")
    r.add_argument("--parts", default="find,findscu,move,export")
    r.add_argument("--reps", type=int, default=20)
    r.add_argument("--rounds", type=int, default=3)
    r.add_argument("--repeat", type=int, default=20, help="findscu --repeat per timed run")
    r.add_argument("--streams", type=int, default=4)
    args = parser.parse_args()
    if args.cmd == "gen-ct":
        gen_ct(args.out, args.slices, args.seed)
    else:
        run(args)


if __name__ == "__main__":
    main()
