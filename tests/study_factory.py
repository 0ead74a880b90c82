"""Small synthetic DICOM instances and a throw-away SCP for the studies tests."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, _config

from hub.context import Hub

CT = "1.2.840.10008.5.1.4.1.1.2"
DX = "1.2.840.10008.5.1.4.1.1.1.1"
US = "1.2.840.10008.5.1.4.1.1.6.1"
MPPS = "1.2.840.10008.3.1.2.3.3"


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
