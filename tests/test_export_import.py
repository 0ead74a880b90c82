"""``vethub export`` and ``vethub import``: a clinic leaves with its data, an old archive comes in.

The command line runs in-process (``hub.cli.main``) on the test's database, so
the tests stay fast; the files are real, the matching and storing are the
hub's own C-STORE path.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydicom import dcmread
from pydicom.fileset import FileSet
from sqlmodel import col, select

from hub import cli
from hub.context import Hub
from hub.models import Study
from hub.services import events, studies
from tests.harness import free_port, make_settings, start_listener
from tests.study_factory import CT, instance, place, save, store


def vethub(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    hub: Hub,
    *args: str,
) -> tuple[int, list[dict], str]:
    """Run the command on ``hub``'s data dir and database: (exit status, JSON lines, stderr)."""
    monkeypatch.setenv("VETHUB_DATA_DIR", str(hub.settings.data_dir))
    monkeypatch.setenv("VETHUB_DATABASE_URL", hub.settings.db_url)
    capsys.readouterr()
    rc = cli.main(list(args))
    out, err = capsys.readouterr()
    return rc, [json.loads(line) for line in out.splitlines()], err


@pytest.fixture
def second_hub(tmp_path: Path) -> Iterator[Hub]:
    """Another clinic's hub (SQLite) that takes an export in."""
    h = Hub.open(make_settings(tmp_path / "b", f"sqlite:///{tmp_path / 'b.db'}"), upgrade=True)
    yield h
    h.close()


def data_set(path: Path) -> bytes:
    """A Part 10 file's data set: what the modality sent, without the file meta."""
    raw = path.read_bytes()
    meta_end = 144 + int.from_bytes(raw[140:144], "little")
    return raw[meta_end:]


def test_export_resumes_verifies_and_imports_byte_for_byte(
    hub: Hub,
    client: TestClient,
    second_hub: Hub,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    place(client)
    study = "1.2.826.0.1.3680043.8.498.1001"
    matched = [
        instance(study_uid=study, series_uid=study + ".1", accession="A1001", InstanceNumber=str(n))
        for n in (1, 2)
    ]
    other = instance(patient_id="P 9/../x", sop_class=CT, modality="CT", accession="")
    for ds in [*matched, other]:
        store(hub, ds)
    out = tmp_path / "export"

    rc, lines, _ = vethub(monkeypatch, capsys, hub, "export", "--to", str(out))
    assert rc == 0
    assert lines[-1] | {"exported_to": None} == {
        "exported_to": None,
        "studies": 2,
        "instances": 3,
        "copied": 3,
        "skipped": 0,
        "unreadable": 0,
        "bytes": lines[-1]["bytes"],
    }
    listed = [json.loads(line) for line in (out / "studies.jsonl").read_text().splitlines()]
    by_uid = {s["study_instance_uid"]: s for s in listed}
    rex = by_uid[study]
    assert rex["patient"] == {"id": "P-555", "name": "Smith^Rex"}
    assert rex["owner"]["id"] == "C-77"
    assert rex["order"]["accession_number"] == "A1001"
    assert rex["match"]["method"] == "accession"
    first = rex["series"][0]["instances"][0]
    assert first["file"] == (f"P-555/{study}/{study}.1/{matched[0].SOPInstanceUID}.dcm")
    stored = hub.settings.data_dir / "studies" / study / f"{study}.1"
    assert (out / first["file"]).read_bytes() == (
        stored / f"{matched[0].SOPInstanceUID}.dcm"
    ).read_bytes()
    odd = by_uid[other.StudyInstanceUID]["series"][0]["instances"][0]["file"]
    assert odd.startswith("P_9_.._x/")  # the slash replaced: no folder outside the export
    assert (out / odd).is_file()
    assert any(json.loads(a)["action"] == "key.create" for a in (out / "audit.jsonl").open())
    with hub.db.read_session() as s:
        trail, _ = events.audit_trail(s, action="export")
    assert trail[0].detail and trail[0].detail["instances"] == 3

    # interrupted: one file gone, a temporary one left; the re-run copies only that one
    (out / first["file"]).unlink()
    (out / first["file"]).with_name(".x.dcm.part").write_bytes(b"half")
    # ... after a run that hit a full disk on that file (its temporary name on /dev/full)
    (out / first["file"]).with_name(f".{matched[0].SOPInstanceUID}.dcm.part").symlink_to(
        "/dev/full"
    )
    (out / "studies.jsonl").unlink()
    rc, lines, err = vethub(monkeypatch, capsys, hub, "export", "--to", str(out))
    assert rc == 2
    assert f"vethub: disk full writing {out / first['file']}" in err
    assert not (out / first["file"]).exists() and not (out / "studies.jsonl").exists()
    rc, lines, _ = vethub(monkeypatch, capsys, hub, "export", "--to", str(out))
    assert rc == 0
    assert (lines[-1]["copied"], lines[-1]["skipped"]) == (1, 2)

    rc, lines, _ = vethub(monkeypatch, capsys, hub, "export", "--verify", str(out))
    assert (rc, lines) == (0, [{"verified": 3, "differences": 0}])
    changed = out / odd
    raw = bytearray(changed.read_bytes())
    raw[-1] ^= 0xFF
    changed.write_bytes(bytes(raw))
    rc, lines, err = vethub(monkeypatch, capsys, hub, "export", "--verify", str(out))
    assert (rc, lines) == (1, [{"verified": 3, "differences": 1}])
    assert f"{odd}: checksum differs" in err
    raw[-1] ^= 0xFF
    changed.write_bytes(bytes(raw))

    # another clinic's hub takes the export in: every data set byte for byte
    rc, lines, _ = vethub(monkeypatch, capsys, second_hub, "import", str(out), "--apply")
    assert rc == 0
    assert lines[-1] == {"applied": True, "summary": {"stored": 3}}
    for s in listed:
        for series in s["series"]:
            for inst in series["instances"]:
                theirs = second_hub.settings.data_dir / "studies" / s["study_instance_uid"]
                theirs = theirs / series["series_instance_uid"] / f"{inst['sop_instance_uid']}.dcm"
                assert data_set(theirs) == data_set(out / inst["file"])
    rc, lines, _ = vethub(monkeypatch, capsys, second_hub, "import", str(out), "--apply")
    assert lines[-1]["summary"] == {"duplicate": 3}

    # one patient's studies; a stored file gone from the archive costs only itself
    gone = next((hub.settings.data_dir / "studies" / other.StudyInstanceUID).rglob("*.dcm"))
    gone.unlink()
    mine = tmp_path / "one-patient"
    args = ("export", "--to", str(mine), "--patient-id", "P 9/../x")
    rc, lines, err = vethub(monkeypatch, capsys, hub, *args)
    assert (rc, lines[-1]["studies"], lines[-1]["unreadable"]) == (1, 1, 1)
    assert f"not exported: {gone.relative_to(hub.settings.data_dir)}: cannot be read" in err
    rc, lines, err = vethub(monkeypatch, capsys, hub, "export", "--verify", str(mine))
    assert (rc, lines) == (1, [{"verified": 1, "differences": 1}])
    assert f"{odd}: not exported (stored file cannot be read" in err


def test_import_dry_run_reports_each_file_then_apply_stores_the_good_ones(
    hub: Hub,
    client: TestClient,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    place(client)
    old = tmp_path / "old-archive"
    rex = instance(accession="A1001")
    stray = instance(patient_id="P-999", patient_name="Doe^Tom", study_date="20240101")
    save(rex, old / "2026")
    save(stray, old / "2024")
    (old / "2024" / "broken.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"garbage")
    media = old / "cd"  # a CD copied in beside the archive, with its DICOMDIR
    fs = FileSet()
    on_cd = [instance(patient_id="P-321", study_date="20250505", StudyID="1") for _ in range(2)]
    for ds in on_cd:
        fs.add(ds)
    fs.write(media)
    gone = next(p for p in sorted(media.rglob("*")) if p.is_file() and p.name != "DICOMDIR")
    gone.unlink()

    rc, lines, _ = vethub(monkeypatch, capsys, hub, "import", str(old))
    assert rc == 1  # a file unreadable, one missing
    by_file = {line.get("file"): line for line in lines[:-1]}
    assert by_file[f"2026/{rex.SOPInstanceUID}.dcm"]["would"] == "match order A1001 (accession)"
    assert by_file[f"2024/{stray.SOPInstanceUID}.dcm"]["would"] == "wait for a person (no_match)"
    assert by_file["2024/broken.dcm"]["outcome"] == "unreadable"
    missing = f"cd/{gone.relative_to(media).as_posix()}"
    assert by_file[missing]["outcome"] == "missing"
    assert "cd/DICOMDIR" in by_file[missing]["reason"]
    assert lines[-1]["summary"] == {"missing": 1, "new": 3, "unreadable": 1}
    with hub.db.read_session() as s:
        assert not events.audit_trail(s, action="export")[0]
    r = client.get("/api/v1/studies")
    assert r.status_code == 200 and r.json()["items"] == []

    rc, lines, _ = vethub(monkeypatch, capsys, hub, "import", str(old), "--apply")
    assert rc == 1
    assert lines[-1] == {
        "applied": True,
        "summary": {"missing": 1, "stored": 3, "unreadable": 1},
    }
    assert by_file["2024/broken.dcm"]["reason"].startswith("file meta: lacks MediaStorage")
    with hub.db.read_session() as s:
        trail, _ = events.audit_trail(s, action="import")
    assert (trail[0].target_id, trail[0].detail) == (str(old), {"summary": lines[-1]["summary"]})
    with hub.db.read_session() as s:
        assert studies.get(s, rex.StudyInstanceUID).match_method == "accession"
        assert studies.get(s, stray.StudyInstanceUID).unmatched_reason == "no_match"
        from_cd = s.scalars(select(Study).where(col(Study.patient_id) == "P-321")).all()
        assert [st.calling_ae for st in from_cd] == ["IMPORT"]  # the one whose file is there


DCMQRSCP, DCMQRIDX = shutil.which("dcmqrscp"), shutil.which("dcmqridx")
OLD_STUDY = "1.2.826.0.1.3680043.8.498.4001"


@pytest.fixture(scope="module")
def old_pacs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, list[Path]]]:
    """DCMTK dcmqrscp as a clinic's old PACS (AE OLDPACS) with two studies, three images."""
    proc, port, sent = start_old_pacs(tmp_path_factory.mktemp("oldpacs"))
    yield port, sent
    proc.terminate()
    proc.wait(5)


def start_old_pacs(
    root: Path, *options: str, hosts: str = ""
) -> tuple[subprocess.Popen[bytes], int, list[Path]]:
    """dcmqrscp with OLD_STUDY (two images) and a study of 2020 (one); ``hosts``: its
    HostTable lines (where it sends C-MOVE sub-operations)."""
    assert DCMQRSCP and DCMQRIDX, "DCMTK dcmqrscp/dcmqridx are part of the test tools"
    sent = [
        save(
            instance(study_uid=OLD_STUDY, series_uid=OLD_STUDY + ".1", InstanceNumber=str(n)),
            root / "src",
        )
        for n in (1, 2)
    ]
    sent.append(save(instance(patient_id="P-2", study_date="20200101"), root / "src"))
    (root / "db").mkdir()
    subprocess.run([DCMQRIDX, str(root / "db"), *map(str, sent)], check=True)
    port = free_port()
    (root / "dcmqrscp.cfg").write_text(
        f"NetworkTCPPort = {port}\nMaxPDUSize = 16384\nMaxAssociations = 4\n"
        f"HostTable BEGIN\n{hosts}HostTable END\nVendorTable BEGIN\nVendorTable END\n"
        f"AETable BEGIN\nOLDPACS {root / 'db'} RW (10, 64mb) ANY\nAETable END\n"
    )
    proc = start_listener([DCMQRSCP, *options, "-c", str(root / "dcmqrscp.cfg")], port)
    return proc, port, sent


def test_migration_from_a_live_old_pacs_resumes_and_keeps_the_bytes(
    hub: Hub,
    old_pacs: tuple[int, list[Path]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    port, sent = old_pacs
    pull = ("import", "--from-ae", "OLDPACS", "--host", "127.0.0.1", "--port", str(port))

    rc, lines, _ = vethub(monkeypatch, capsys, hub, *pull, "--since", "2026-01-01")
    assert rc == 0
    assert lines[0] | {"status": 0} == {
        "study_instance_uid": OLD_STUDY,
        "outcome": "retrieved",
        "stored": 2,
        "failed": 0,
        "status": 0,
    }
    assert lines[-1]["summary"] == {"failed": 0, "stored": 2, "studies_retrieved": 1}

    # the whole archive: the study already here is skipped, not fetched again
    rc, lines, _ = vethub(monkeypatch, capsys, hub, *pull)
    assert rc == 0
    assert lines[-1]["summary"] == {
        "failed": 0,
        "stored": 1,
        "studies_complete": 1,
        "studies_retrieved": 1,
    }
    for original in sent:
        ds = dcmread(original, stop_before_pixels=True)
        mine = hub.settings.data_dir / "studies" / ds.StudyInstanceUID / ds.SeriesInstanceUID
        assert data_set(mine / original.name) == data_set(original)


def test_migration_by_c_move_from_an_old_pacs_without_c_get(
    hub: Hub,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """dcmqrscp with C-GET disabled knows the hub (AE VETHUB) as a move destination:
    the import falls back to C-MOVE and takes the sub-operations on --listen-port."""
    listen = free_port()
    hosts = f"hub = (VETHUB, 127.0.0.1, {listen})\n"
    proc, port, sent = start_old_pacs(tmp_path / "oldpacs", "--disable-get", hosts=hosts)
    pull = ("import", "--from-ae", "OLDPACS", "--host", "127.0.0.1", "--port", str(port))
    pull += ("--listen-port", str(listen))
    try:
        # Under an AE title the old PACS does not know: failed, and the fix named
        monkeypatch.setenv("VETHUB_DICOM_AE", "STRANGER")
        rc, lines, _ = vethub(monkeypatch, capsys, hub, *pull, "--since", "2026-01-01")
        assert rc == 1
        assert lines[0]["outcome"] == "failed" and lines[0]["status"] == 0xA801
        assert "does not know the move destination STRANGER" in lines[0]["error"]
        monkeypatch.delenv("VETHUB_DICOM_AE")

        rc, lines, _ = vethub(monkeypatch, capsys, hub, *pull, "--since", "2026-01-01")
        assert rc == 0
        assert lines[0] == {
            "study_instance_uid": OLD_STUDY,
            "outcome": "retrieved",
            "stored": 2,
            "failed": 0,
            "status": 0,
        }
        assert lines[-1]["retrieve"] == "move"  # C-GET refused: moved instead
        assert lines[-1]["summary"] == {"failed": 0, "stored": 2, "studies_retrieved": 1}

        # Asked for by name, over the whole archive: resumes, the study here is skipped
        rc, lines, _ = vethub(monkeypatch, capsys, hub, *pull, "--retrieve", "move")
        assert rc == 0
        assert lines[-1]["summary"] == {
            "failed": 0,
            "stored": 1,
            "studies_complete": 1,
            "studies_retrieved": 1,
        }
    finally:
        proc.terminate()
        proc.wait(5)
    for original in sent:
        ds = dcmread(original, stop_before_pixels=True)
        mine = hub.settings.data_dir / "studies" / ds.StudyInstanceUID / ds.SeriesInstanceUID
        assert data_set(mine / original.name) == data_set(original)
