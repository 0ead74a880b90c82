"""Storage edge cases: compressed syntaxes kept byte for byte, disk trouble, aborted
associations, and several associations writing the same study at once."""

from __future__ import annotations

import errno
import io
import os
import socket
import threading
import time
from pathlib import Path

import pydicom
import pytest
from pydicom.encaps import encapsulate
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)
from pynetdicom import AE
from sqlalchemy import func, select

from hub.archive import coercion, dicomfile, files
from hub.context import Hub
from hub.jobs import Jobs
from hub.models import Instance, Series, Study
from hub.services import ingest
from hub.services.coercion import KEYWORDS
from tests import study_factory as sf


def _compressed(ts: str) -> pydicom.Dataset:
    ds = sf.instance(sop_class=sf.US, modality="US")
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    # Opaque fragments: the hub must never decode (or recompress) pixel data.
    ds.PixelData = encapsulate([b"\xff\xd8fake-frame-" + bytes(range(50)) + b"\xff\xd9"])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = ts
    return ds


@pytest.mark.parametrize("ts", [JPEGBaseline8Bit, RLELossless, JPEG2000Lossless, JPEGLSLossless])
def test_compressed_instances_are_stored_as_received(hub: Hub, ts: str) -> None:
    ds = _compressed(ts)
    ae = AE(ae_title="US_ROOM")
    ae.add_requested_context(sf.US, ts)
    with sf.scp(hub) as scp:
        assoc = ae.associate("127.0.0.1", scp.port, ae_title="VETHUB")
        assert assoc.is_established
        assert assoc.send_c_store(ds).Status == 0
        assoc.release()
    with hub.db.read_session() as s:
        row = s.scalars(select(Instance)).one()
    assert row.transfer_syntax_uid == ts
    stored = pydicom.dcmread(hub.settings.data_dir / row.path)
    assert stored.file_meta.TransferSyntaxUID == ts
    assert stored.PixelData == ds.PixelData


@pytest.mark.parametrize("ts", [DeflatedExplicitVRLittleEndian, ImplicitVRLittleEndian])
def test_deflate_and_implicit(hub: Hub, ts: str) -> None:
    ds = sf.instance()
    ae = AE(ae_title="DX_ROOM1")
    ae.add_requested_context(sf.DX, ts)
    with sf.scp(hub) as scp:
        assoc = ae.associate("127.0.0.1", scp.port, ae_title="VETHUB")
        ds.file_meta.TransferSyntaxUID = ts
        assert assoc.send_c_store(ds).Status == 0
        assoc.release()
    with hub.db.read_session() as s:
        row = s.scalars(select(Instance)).one()
    stored = pydicom.dcmread(hub.settings.data_dir / row.path)
    assert stored.file_meta.TransferSyntaxUID == ts
    assert stored.PixelData == ds.PixelData and str(stored.PatientName) == "Smith^Rex"


def test_unwritable_storage_is_out_of_resources(hub: Hub, monkeypatch) -> None:
    blocked = sf.instance()
    # A file where the study's directory must go: the write fails for real.
    studies_dir = hub.settings.data_dir / "studies"
    studies_dir.mkdir(parents=True, exist_ok=True)
    (studies_dir / blocked.StudyInstanceUID).write_bytes(b"in the way")
    full = sf.instance()
    real = files.write_atomic

    def disk_full(path: Path, chunks: object) -> int:
        if full.SOPInstanceUID in str(path):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, chunks)  # type: ignore[arg-type]

    monkeypatch.setattr(files, "write_atomic", disk_full)
    with sf.scp(hub) as scp:
        assert sf.send(scp.port, [blocked, full, sf.instance()]) == [0xA700, 0xA700, 0]
    with hub.db.read_session() as s:
        assert s.scalar(select(func.count(Instance.id))) == 1
        # Nothing half-made: the refused instances left no study or series rows.
        assert s.scalar(select(func.count(Study.id))) == 1
        assert s.scalar(select(func.count(Series.id))) == 1


def test_aborted_association_leaves_nothing_and_disturbs_no_one(hub: Hub) -> None:
    big = sf.instance(rows=2048)  # 8 MB, so the abort lands mid-transfer
    with sf.scp(hub) as scp:
        ae = sf.scu()
        ae.dimse_timeout = ae.network_timeout = 2  # the aborted sender gives up quickly
        assoc = ae.associate("127.0.0.1", scp.port, ae_title="VETHUB")
        other = sf.scu("OTHER").associate("127.0.0.1", scp.port, ae_title="VETHUB")

        t = threading.Thread(target=lambda: assoc.send_c_store(big))
        t.start()
        time.sleep(0.05)
        assoc.abort()
        # The other association carries on undisturbed.
        assert [int(other.send_c_store(sf.instance()).Status) for _ in range(3)] == [0, 0, 0]
        other.release()
        t.join(60)
    with hub.db.read_session() as s:
        uids = set(s.scalars(select(Instance.sop_instance_uid)))
    assert len(uids - {big.SOPInstanceUID}) == 3
    assert not list((hub.settings.data_dir / "studies").rglob(".in-*"))
    if big.SOPInstanceUID in uids:  # the whole message may have arrived before the abort
        path = next((hub.settings.data_dir / "studies").rglob(f"{big.SOPInstanceUID}.dcm"))
        assert pydicom.dcmread(path).PixelData == big.PixelData


def test_parallel_associations_into_one_study(hub: Hub) -> None:
    study, series = generate_uid(), generate_uid()
    batches = [
        [sf.instance(study_uid=study, series_uid=series) for _ in range(6)] for _ in range(4)
    ]
    results: list[list[int]] = []
    with sf.scp(hub) as scp:
        threads = [
            threading.Thread(target=lambda b=b: results.append(sf.send(scp.port, b)))
            for b in batches
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    assert results == [[0] * 6] * 4
    with hub.db.read_session() as s:
        assert s.scalar(select(func.count(Study.id))) == 1
        assert s.scalar(select(func.count(Series.id))) == 1
        assert s.scalar(select(func.count(Instance.id))) == 24


def test_structure_check() -> None:
    ds = sf.instance()
    ds.ReferencedImageSequence = [pydicom.Dataset()]
    ds.ReferencedImageSequence[0].ReferencedSOPInstanceUID = generate_uid()

    raw = sf.encode(ds)
    dicomfile.check_complete(raw, dicomfile.EXPLICIT_LE)
    for bad in (raw[:-1], raw + b"\x00", raw[:7], b""):
        with pytest.raises(dicomfile.Incomplete):
            dicomfile.check_complete(bad, dicomfile.EXPLICIT_LE)


def test_header_scan_reads_every_attribute_coercion_keeps() -> None:
    """The originals kept for the audit come from the one-pass header scan."""
    assert set(KEYWORDS) <= set(dicomfile.HEADER_KEYWORDS)
    assert set(ingest.HEADER_TEXT) <= set(dicomfile.HEADER_KEYWORDS)


def test_coercion_switches_to_utf8_only_when_needed() -> None:
    ds = sf.instance(patient_name="Muller^Rex")
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.StudyDescription = "Röntgen Thorax"
    encoded = dicomfile.encode(ds)

    latin = dicomfile.read_full(encoded)
    coercion.apply(latin, {"PatientName": "Müller^Rex"})
    back = pydicom.dcmread(io.BytesIO(dicomfile.encode(latin)))
    assert back.SpecificCharacterSet == "ISO_IR 100"
    assert str(back.PatientName) == "Müller^Rex" and back.StudyDescription == "Röntgen Thorax"

    wide = dicomfile.read_full(encoded)
    coercion.apply(wide, {"PatientName": "Łukasiewicz^Rex", "PatientBreedDescription": None})
    back = pydicom.dcmread(io.BytesIO(dicomfile.encode(wide)))
    assert back.SpecificCharacterSet == "ISO_IR 192"
    assert str(back.PatientName) == "Łukasiewicz^Rex"
    assert back.StudyDescription == "Röntgen Thorax"  # re-encoded, not garbled


def test_jobs_start_and_stop(hub: Hub) -> None:
    jobs = Jobs(hub)
    ran = threading.Event()
    jobs.add("probe", ran.set, seconds=0.05)
    jobs.start()
    try:
        assert ran.wait(10)
        assert jobs.complete_quiet_orders() == []
    finally:
        jobs.stop()
    assert not jobs.scheduler.running


def test_full_disk_is_refused_before_writing(hub: Hub, monkeypatch) -> None:
    ds = sf.instance()
    monkeypatch.setattr(files, "MIN_FREE_BYTES", 10**18)  # "the disk is full"
    with sf.scp(hub) as scp:
        assert sf.send(scp.port, [ds]) == [0xA700]
        monkeypatch.setattr(files, "MIN_FREE_BYTES", 0)
        assert sf.send(scp.port, [ds]) == [0]  # space again: the resend is taken
    with hub.db.read_session() as s:
        assert s.scalar(select(func.count(Instance.id))) == 1


def test_sweep_spares_temp_files_of_live_writers(tmp_path: Path) -> None:
    """Several hubs may share a data directory: only dead writers' leftovers go."""
    series = tmp_path / "studies" / "1.2" / "3.4"
    series.mkdir(parents=True)
    host = socket.gethostname()
    mine = series / f".in-{host}~{os.getpid()}~abc.tmp"
    dead = series / f".in-{host}~999999999~abc.tmp"
    other_new = series / ".in-otherhost~12~abc.tmp"
    other_old = series / ".in-otherhost~13~abc.tmp"
    for f in (mine, dead, other_new, other_old):
        f.write_bytes(b"x")
    old = time.time() - 2 * files.SWEEP_MIN_AGE_S
    os.utime(other_old, (old, old))
    assert files.sweep_temporaries(tmp_path) == 2
    assert mine.exists() and other_new.exists()
    assert not dead.exists() and not other_old.exists()
