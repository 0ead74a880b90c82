"""Small synthetic DICOM instances and a throw-away SCP for the studies tests."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import (
    CTImageStorage,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    UltrasoundImageStorage,
    generate_uid,
)
from pynetdicom import AE, _config
from pynetdicom.sop_class import ModalityPerformedProcedureStep  # type: ignore[attr-defined]

from hub.archive import ingest
from hub.context import Hub
from hub.models import Instance, Series, Study
from hub.services import completion, events, studies
from tests.factories import REX

CT = CTImageStorage
DX = DigitalXRayImageStorageForPresentation
US = UltrasoundImageStorage
MPPS = ModalityPerformedProcedureStep


def instance(
    *,
    study_uid: str | None = None,
    series_uid: str | None = None,
    sop_uid: str | None = None,
    sop_class: str = DX,
    patient_id: str = "P-555",
    patient_name: str = "Smith^Rex",
    accession: str = "",
    modality: str = "DX",
    study_date: str = "20261127",
    rows: int = 8,
    **extra: Any,
) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid or generate_uid()
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.StudyDate = study_date
    ds.StudyTime = "101500"
    ds.AccessionNumber = accession
    ds.Modality = modality
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.SeriesNumber = "1"
    ds.InstanceNumber = "1"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = rows
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.PixelData = bytes(range(256)) * (rows * rows * 2 // 256) + bytes(rows * rows * 2 % 256)
    for k, v in extra.items():
        setattr(ds, k, v)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def save(ds: Dataset, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{ds.SOPInstanceUID}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


@dataclass
class Scp:
    port: int
    ae_title: str = "VETHUB"


@contextlib.contextmanager
def scp(hub: Hub) -> Iterator[Scp]:
    """The hub's storage and MPPS services on their own AE and a free port."""
    from worklist.mpps import MppsService
    from worklist.storage import StorageService

    _config.LOG_HANDLER_LEVEL = "none"
    ae = AE(ae_title="VETHUB")
    services = [StorageService(hub), MppsService(hub)]
    handlers: list[tuple] = []
    for svc in services:
        svc.add_contexts(ae)
        handlers += svc.handlers()
    server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=handlers)
    try:
        yield Scp(port=server.server_address[1])
    finally:
        server.shutdown()


def scu(ae_title: str = "DX_ROOM1", *, sop_classes: tuple[str, ...] = (CT, DX, US)) -> AE:
    ae = AE(ae_title=ae_title)
    for uid in sop_classes:
        ae.add_requested_context(uid, ExplicitVRLittleEndian)
    ae.add_requested_context(MPPS)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 20
    return ae


def send(port: int, datasets: list[Dataset], ae_title: str = "DX_ROOM1") -> list[int]:
    ae = scu(ae_title, sop_classes=tuple({d.SOPClassUID for d in datasets}))
    assoc = ae.associate("127.0.0.1", port, ae_title="VETHUB")
    assert assoc.is_established
    try:
        return [int(assoc.send_c_store(d).Status) for d in datasets]
    finally:
        assoc.release()


def place(client: TestClient, **changes: object) -> dict:
    """Place the REX order (with ``changes``) through the API; returns its JSON."""
    body = copy.deepcopy(REX)
    body.update(changes)
    r = client.post("/api/v1/orders", json=body)
    assert r.status_code == 201, r.text
    return r.json()


def encode(ds: Dataset) -> bytes:
    """The data set alone (no preamble or file meta), explicit VR little endian."""
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, False
    write_dataset(fp, ds)
    return fp.getvalue()


def store(hub: Hub, ds: Dataset, calling_ae: str = "DX_ROOM1") -> ingest.Stored:
    """Store one instance through the archive, as the Storage SCP would (no network)."""
    return ingest.store_instance(
        hub,
        ingest.Incoming(
            data=encode(ds),
            sop_class_uid=ds.SOPClassUID,
            sop_instance_uid=ds.SOPInstanceUID,
            transfer_syntax_uid=ExplicitVRLittleEndian,
            calling_ae=calling_ae,
        ),
    )


def paths(hub: Hub, study_uid: str) -> list[str]:
    """Absolute paths of a study's stored files."""
    with hub.db.read_session() as s:
        study = studies.get(s, study_uid)
        return [str(hub.settings.data_dir / p) for p in studies.instance_paths(s, study)]


def mpps_create(
    status: str = "IN PROGRESS", accession: str = "A1001", study_uid: str = ""
) -> Dataset:
    """An MPPS N-CREATE attribute list for the REX order's step."""
    ds = Dataset()
    item = Dataset()
    item.StudyInstanceUID = study_uid
    item.AccessionNumber = accession
    item.RequestedProcedureID = accession
    item.ScheduledProcedureStepID = accession
    ds.ScheduledStepAttributesSequence = [item]
    ds.PatientName = "Smith^Rex"
    ds.PatientID = "P-555"
    ds.PerformedProcedureStepID = "PPS1"
    ds.PerformedStationAETitle = "DX_ROOM1"
    ds.PerformedProcedureStepStartDate = "20261127"
    ds.PerformedProcedureStepStartTime = "143000"
    ds.PerformedProcedureStepStatus = status
    ds.Modality = "DX"
    ds.PerformedSeriesSequence = []
    return ds


def mpps_set(status: str) -> Dataset:
    """An MPPS N-SET modification list that finishes the step with ``status``."""
    ds = Dataset()
    ds.PerformedProcedureStepStatus = status
    ds.PerformedProcedureStepEndDate = "20261127"
    ds.PerformedProcedureStepEndTime = "144500"
    series = Dataset()
    series.SeriesInstanceUID = generate_uid()
    series.ReferencedImageSequence = []
    ds.PerformedSeriesSequence = [series]
    return ds


def complete_quiet(hub: Hub, now: datetime | None = None) -> list[int]:
    """Run the quiet-period completion as the timed job does (optionally at ``now``)."""
    with hub.db.session() as s:
        return completion.complete_quiet_orders(
            s, quiet_minutes=hub.settings.study_quiet_minutes, now=now
        )


def indexed_study(hub: Hub, order: dict, instances: int = 2) -> str:
    """Index rows of a study received for ``order`` (matched by accession) and its
    ``study.received`` outbox event: what a C-STORE leaves, without files or DICOM."""
    uid = order["study_instance_uid"]
    with hub.db.session() as s:
        study = Study(
            study_instance_uid=uid,
            patient_id="P-555",
            accession_number=order["accession_number"],
            study_date="20261127",
            modality="DX",
            order_id=order["id"],
            match_method="accession",
        )
        s.add(study)
        s.flush()
        assert study.id is not None
        series = Series(study_id=study.id, series_instance_uid=generate_uid(), modality="DX")
        s.add(series)
        s.flush()
        assert series.id is not None
        for n in range(instances):
            s.add(
                Instance(
                    study_id=study.id,
                    series_id=series.id,
                    sop_instance_uid=generate_uid(),
                    sop_class_uid=DX,
                    transfer_syntax_uid=ExplicitVRLittleEndian,
                    path=f"x/{n}.dcm",
                    size=1,
                    received_sha256="0" * 64,
                )
            )
        events.record(s, "study.received", order_id=order["id"], study_instance_uid=uid)
    return uid


def stored_series(hub: Hub, order: dict, n: int = 2) -> tuple[str, list[str]]:
    """``n`` small images of one series stored for ``order`` (through the real
    ingest, files and all); the study UID and the SOP instance UIDs."""
    sops: list[str] = []
    series = None
    for _ in range(n):
        ds = instance(
            accession=order["accession_number"],
            study_uid=order["study_instance_uid"],
            series_uid=series,
            rows=32,
        )
        series = ds.SeriesInstanceUID
        store(hub, ds)
        sops.append(ds.SOPInstanceUID)
    return order["study_instance_uid"], sops
