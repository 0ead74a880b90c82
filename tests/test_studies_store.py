"""C-STORE into the hub: durable files, index rows, matching and coercion on arrival."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pydicom
from fastapi.testclient import TestClient
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import _config
from sqlalchemy import func, select

from hub.archive import dicomfile, ingest
from hub.context import Hub
from hub.models import AuditEvent, Instance, Modality, OutboxEvent, Study
from tests import study_factory as sf
from tests.study_factory import place


def test_store_matches_by_accession_and_coerces_header(hub: Hub, client: TestClient) -> None:
    order = place(client)
    with hub.db.session() as s:
        s.add(Modality(ae_title="DX_ROOM1", modality="DX"))
    # The device truncated/transliterated the name and dropped species and breed.
    ds = sf.instance(accession="A1001", patient_name="SMITH^REX", patient_id="P-555")
    with sf.scp(hub) as scp:
        assert sf.send(scp.port, [ds]) == [0x0000]
        assert sf.send(scp.port, [ds]) == [0x0000]  # resend: success, stored once

    with hub.db.read_session() as s:
        study = s.scalars(select(Study)).one()
        inst = s.scalars(select(Instance)).one()
        assert study.order_id == order["id"]
        assert study.match_method == "accession"
        assert study.received["PatientName"] == "SMITH^REX"
        assert inst.coerced
        kinds = [e.kind for e in s.scalars(select(OutboxEvent).order_by(OutboxEvent.id))]
        assert kinds.count("study.received") == 1
        assert "order.in_progress" in kinds
        audit = s.scalars(select(AuditEvent).where(AuditEvent.action == "coerce")).one()
        assert audit.detail["changes"]["PatientName"]["from"] == "SMITH^REX"
        assert s.get(Modality, "DX_ROOM1").last_store_at is not None

    path = hub.settings.data_dir / inst.path
    assert inst.path == (
        f"studies/{ds.StudyInstanceUID}/{ds.SeriesInstanceUID}/{ds.SOPInstanceUID}.dcm"
    )
    stored = pydicom.dcmread(path)
    assert str(stored.PatientName) == "Smith^Rex"
    assert stored.PatientSpeciesDescription  # filled from the order
    assert stored.PatientBreedDescription == "Labrador Retriever"
    assert stored.PixelData == ds.PixelData
    assert stored.file_meta.TransferSyntaxUID == ds.file_meta.TransferSyntaxUID
    assert not list(path.parent.glob(".in-*"))
    assert client.get(f"/api/v1/orders/{order['id']}").json()["status"] == "in_progress"


def test_unmatched_study_is_stored_as_received(hub: Hub, client: TestClient) -> None:
    place(client)
    ds = sf.instance(patient_id="P-999", patient_name="Jones^Bella")
    with sf.scp(hub) as scp:
        assert sf.send(scp.port, [ds]) == [0]
    with hub.db.read_session() as s:
        study = s.scalars(select(Study)).one()
        inst = s.scalars(select(Instance)).one()
    assert study.order_id is None and study.unmatched_reason == "no_match"
    assert not inst.coerced
    stored = pydicom.dcmread(hub.settings.data_dir / inst.path)
    assert str(stored.PatientName) == "Jones^Bella"
    assert stored.file_meta.SourceApplicationEntityTitle.strip() == "DX_ROOM1"


def test_bad_instances_get_failure_status_and_no_index_row(hub: Hub, tmp_path: Path) -> None:
    good = sf.instance()
    no_series = sf.instance()
    del no_series.SeriesInstanceUID
    wrong_class = sf.instance(sop_class=sf.CT)
    raw_files = [
        # the data set says CT while the request (and context) say DX
        _raw_file(tmp_path / "a.dcm", sf.encode(wrong_class), sf.DX, wrong_class.SOPInstanceUID),
        # truncated in the pixel data
        _raw_file(tmp_path / "b.dcm", sf.encode(sf.instance())[:-10], sf.DX, generate_uid()),
        # not DICOM at all
        _raw_file(tmp_path / "c.dcm", b"garbage" * 9, sf.DX, generate_uid()),
    ]
    with sf.scp(hub) as scp:
        assert sf.send(scp.port, [no_series]) == [0xA900]
        ae = sf.scu(sop_classes=(sf.DX,))
        assoc = ae.associate("127.0.0.1", scp.port, ae_title="VETHUB")
        _config.STORE_SEND_CHUNKED_DATASET = True
        try:
            statuses = [int(assoc.send_c_store(p).Status) for p in raw_files]
        finally:
            _config.STORE_SEND_CHUNKED_DATASET = False
            assoc.release()
        assert statuses == [0xA900, 0xC000, 0xC000]
        assert sf.send(scp.port, [good]) == [0]  # the door still works
    with hub.db.read_session() as s:
        assert s.scalar(select(func.count(Instance.id))) == 1
    files = [p for p in (hub.settings.data_dir / "studies").rglob("*") if p.is_file()]
    assert len(files) == 1


def _raw_file(path: Path, payload: bytes, sop_class: str, sop_uid: str) -> Path:
    """A Part 10 file whose data set bytes are exactly ``payload`` (sent undecoded)."""
    meta = dicomfile.file_meta(sop_class, sop_uid, ExplicitVRLittleEndian)
    path.write_bytes(meta + payload)
    return path


def test_dcmtk_storescu_sends_a_folder(hub: Hub, client: TestClient, tmp_path: Path) -> None:
    order = place(client)
    study = order["study_instance_uid"]
    series = generate_uid()
    folder = tmp_path / "send"
    for _ in range(5):
        sf.save(
            sf.instance(study_uid=study, series_uid=series, sop_class=sf.CT, modality="CT"),
            folder,
        )
    with sf.scp(hub) as scp:
        out = subprocess.run(
            ["storescu", "-aet", "CT_MAIN", "-aec", "VETHUB", "+sd", "127.0.0.1",
             str(scp.port), str(folder)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
    with hub.db.read_session() as s:
        row = s.scalars(select(Study)).one()
        assert row.match_method == "study_uid" and row.order_id == order["id"]
        assert s.scalar(select(func.count(Instance.id))) == 5


def test_the_storage_scp_receives_into_a_file(hub: Hub, monkeypatch) -> None:
    """pynetdicom writes the data set to a temp file as it arrives (chunked
    receiving): the archive gets a path, never the whole instance in memory."""
    seen: list[object] = []
    real = ingest.store_instance

    def spy(h: Hub, inc: ingest.Incoming) -> ingest.Stored:
        seen.append(inc.data)
        return real(h, inc)

    monkeypatch.setattr(ingest, "store_instance", spy)
    ds = sf.instance(rows=64)
    with sf.scp(hub) as scp:
        assert sf.send(scp.port, [ds]) == [0]
    assert len(seen) == 1 and isinstance(seen[0], Path)
    with hub.db.read_session() as s:
        inst = s.scalars(select(Instance)).one()
    stored = pydicom.dcmread(hub.settings.data_dir / inst.path)
    assert stored.PixelData == ds.PixelData
    assert stored.file_meta.ImplementationVersionName.startswith("VETHUB")  # the hub's meta
