"""Query/Retrieve faults, with pynetdicom as the workstation and as the move
destination (it can abort, stall and cancel on cue, which DCMTK cannot):

- a destination that drops the association mid-study: the C-MOVE ends at once
  in 0xB000 with the counts and the unsent UIDs as failed, the door keeps
  answering, and the same move succeeds once the destination is back;
- C-CANCEL of a C-FIND, a C-MOVE and a C-GET: 0xFE00, with the counts;
- a destination that takes only Implicit VR Little Endian: the stored Explicit
  and Big Endian instances go converted; one whose pixel data cannot be
  decompressed fails alone, named in FailedSOPInstanceUIDList.

One door and one destination per database; a few tiny instances.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    RLELossless,
)
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)
from sqlalchemy import insert

from hub.context import Hub
from hub.models import Study, utcnow
from hub.services import modalities
from tests.study_factory import CT, instance, paths, store
from tests.worklist_scu import running_door
from worklist import qr

FIND = StudyRootQueryRetrieveInformationModelFind
MOVE = StudyRootQueryRetrieveInformationModelMove
GET = StudyRootQueryRetrieveInformationModelGet
PENDING = (0xFF00, 0xFF01)
# Matches for the cancelled C-FIND: enough that answering them all takes the
# hub far longer than the cancel takes to arrive.
MANY = 2000
FIND_UID = "1.2.826.0.1.3680043.10.997.9"


@dataclass
class Destination:
    """A Storage SCP for CT in Implicit VR Little Endian only, misbehaving on cue."""

    port: int = 0
    received: list[Dataset] = field(default_factory=list)
    abort_after: int | None = None  # abort the association once this many arrived
    on_second: Any = None  # called as the second instance of a move arrives

    def on_store(self, event: evt.Event) -> int:
        if self.abort_after is not None and len(self.received) >= self.abort_after:
            self.abort_after = None  # once: it comes back for the next move
            event.assoc.abort()
            return 0xA700
        ds = event.dataset
        ds.file_meta = event.file_meta
        self.received.append(ds)
        if len(self.received) == 2 and self.on_second is not None:
            self.on_second()
            self.on_second = None
        return 0x0000


@contextmanager
def destination() -> Iterator[Destination]:
    dest = Destination()
    ae = AE(ae_title="PICKY")
    ae.add_supported_context(CT, ImplicitVRLittleEndian)
    server = ae.start_server(
        ("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, dest.on_store)]
    )
    dest.port = server.server_address[1]
    try:
        yield dest
    finally:
        server.shutdown()


def ct_study(hub: Hub, uid: str, n: int) -> list[str]:
    """A one-series CT study of ``n`` instances; their UIDs in instance order."""
    sops = [f"{uid}.1.{k}" for k in range(1, n + 1)]
    for k, sop in enumerate(sops, 1):
        ds = instance(
            study_uid=uid, series_uid=f"{uid}.1", sop_uid=sop, sop_class=CT, modality="CT",
            patient_id="P-Q", InstanceNumber=str(k),
        )  # fmt: skip
        store(hub, ds)
    return sops


def many_studies(hub: Hub) -> None:
    """MANY index rows of studies (no files: C-FIND reads only the index)."""
    now = utcnow()
    rows = [
        {"study_instance_uid": f"{FIND_UID}.{n}", "patient_id": "P-FIND", "study_date": "20261127",
         "created_at": now, "last_received_at": now}
        for n in range(MANY)
    ]  # fmt: skip
    with hub.db.session() as s:
        s.execute(insert(Study), rows)


def send_as(port: int, ds: Dataset) -> str:
    """C-STORE ``ds`` to the door in its file meta's transfer syntax."""
    scu = AE(ae_title="QRSCU")
    scu.add_requested_context(CT, ds.file_meta.TransferSyntaxUID)
    assoc = scu.associate("127.0.0.1", port, ae_title="VETHUB")
    assert assoc.send_c_store(ds).Status == 0
    assoc.release()
    return str(ds.SOPInstanceUID)


def undecodable_rle(port: int, study_uid: str) -> str:
    """Store, through the door, an RLE instance whose pixel data no decoder reads."""
    ds = instance(study_uid=study_uid, series_uid=f"{study_uid}.2", sop_class=CT, modality="CT")
    ds.PixelData = encapsulate([b"\x01\x00\x00\x00" + b"\x00" * 60 + b"not rle"])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = RLELossless
    return send_as(port, ds)


def big_endian(port: int, study_uid: str) -> tuple[str, bytes]:
    """Store, through the door, an instance in Explicit VR Big Endian; its UID and
    its pixel data as little endian words."""
    ds = instance(study_uid=study_uid, series_uid=f"{study_uid}.3", sop_class=CT, modality="CT")
    little = bytes(ds.PixelData)
    ds.PixelData = np.frombuffer(little, "<u2").astype(">u2").tobytes()  # written as given
    ds["PixelData"].VR = "OW"
    ds.file_meta.TransferSyntaxUID = ExplicitVRBigEndian
    return send_as(port, ds), little


def identifier(study_uid: str = "", **keys: str) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.StudyInstanceUID = study_uid
    for k, v in keys.items():
        setattr(ds, k, v)
    return ds


def final(responses: list[tuple[Dataset, Dataset | None]]) -> tuple[Dataset, Dataset | None]:
    statuses = [int(r[0].Status) for r in responses]
    assert all(s in PENDING for s in statuses[:-1]), [hex(s) for s in statuses]
    return responses[-1]


def test_retrieve_faults_are_answered_by_status(hub: Hub, monkeypatch: pytest.MonkeyPatch) -> None:
    study = "1.2.826.0.1.3680043.10.997.1"
    sops = ct_study(hub, study, 6)
    many_studies(hub)

    with destination() as dest, running_door(hub) as port:
        with hub.db.session() as s:
            modalities.put(s, "QRSCU", {}, actor="test")
            modalities.put(s, "PICKY", {"host": "127.0.0.1", "port": dest.port}, actor="test")
        odd = "1.2.826.0.1.3680043.10.997.2"
        (good,) = ct_study(hub, odd, 1)
        bad = undecodable_rle(port, odd)
        big, big_pixels = big_endian(port, odd)

        ae = AE(ae_title="QRSCU")
        for model in (FIND, MOVE, Verification):
            ae.add_requested_context(model)
        assoc = ae.associate("127.0.0.1", port, ae_title="VETHUB")
        assert assoc.is_established
        try:
            # Implicit VR only: converted (big endian too); the undecodable instance
            # fails alone, by UID
            rsp, ids = final(list(assoc.send_c_move(identifier(odd), "PICKY", MOVE)))
            assert rsp.Status == 0xB000
            assert (rsp.NumberOfCompletedSuboperations, rsp.NumberOfFailedSuboperations) == (2, 1)
            assert ids is not None and ids.FailedSOPInstanceUIDList == bad
            moved, swapped = sorted(dest.received, key=lambda d: d.SOPInstanceUID != good)
            assert moved.SOPInstanceUID == good and swapped.SOPInstanceUID == big
            assert swapped.file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
            assert swapped.PixelData == big_pixels and swapped.Rows == 8
            assert moved.file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
            (path,) = [p for p in paths(hub, odd) if good in p]
            stored = dcmread(path)
            assert stored.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
            assert moved.PixelData == stored.PixelData and moved.PatientID == stored.PatientID
            dest.received.clear()

            # The destination aborts after two instances: 0xB000 at once, four failed
            dest.abort_after = 2
            started = time.monotonic()
            rsp, ids = final(list(assoc.send_c_move(identifier(study), "PICKY", MOVE)))
            assert time.monotonic() - started < 5
            assert rsp.Status == 0xB000
            counts = (rsp.NumberOfCompletedSuboperations, rsp.NumberOfFailedSuboperations)
            assert counts == (2, 4)
            assert ids is not None and list(ids.FailedSOPInstanceUIDList) == sops[2:]
            assert [d.SOPInstanceUID for d in dest.received] == sops[:2]
            # The door is unharmed, and the destination, back, gets the whole study
            assert assoc.send_c_echo().Status == 0
            dest.received.clear()
            rsp, _ = final(list(assoc.send_c_move(identifier(study), "PICKY", MOVE)))
            assert rsp.Status == 0 and rsp.NumberOfCompletedSuboperations == 6
            assert [d.SOPInstanceUID for d in dest.received] == sops
            dest.received.clear()

            # C-CANCEL of a C-MOVE, sent as the second instance arrives: two went
            def cancel_move() -> None:
                assoc.send_c_cancel(41, None, MOVE)
                time.sleep(0.2)  # the cancel is read before this store's answer

            dest.on_second = cancel_move
            moves = assoc.send_c_move(identifier(study), "PICKY", MOVE, msg_id=41)
            rsp, ids = final(list(moves))
            assert rsp.Status == 0xFE00
            assert rsp.NumberOfCompletedSuboperations == 2
            assert rsp.NumberOfRemainingSuboperations == 4
            assert rsp.NumberOfFailedSuboperations == 0
            assert [d.SOPInstanceUID for d in dest.received] == sops[:2]

            # C-CANCEL of a C-FIND with many matches, sent on the first answer. The hub
            # writes its answers in batches (worklist.encoded.FindAnswers) and would
            # send all 2,000 before the cancel arrives: the search is slowed row by row.
            matches = qr.QueryRetrieveService._matches

            def trickle(self: qr.QueryRetrieveService, asked: Any) -> Iterator[Any]:
                for row in matches(self, asked):
                    yield row
                    time.sleep(0.001)

            monkeypatch.setattr(qr.QueryRetrieveService, "_matches", trickle)
            answers = 0
            for rsp, _ in assoc.send_c_find(identifier(PatientID="P-FIND"), FIND, msg_id=42):
                if rsp.Status in PENDING:
                    answers += 1
                    if answers == 1:
                        assoc.send_c_cancel(42, None, FIND)
            assert rsp.Status == 0xFE00
            assert answers < MANY, answers
            one = identifier(PatientID="P-FIND", StudyInstanceUID=f"{FIND_UID}.7")
            done = list(assoc.send_c_find(one, FIND))  # the association goes on
            assert len(done) == 2 and done[-1][0].Status == 0
        finally:
            assoc.release()

        # C-CANCEL of a C-GET, sent by the requestor as it takes the second instance
        got: list[str] = []
        getter = AE(ae_title="QRSCU")
        getter.add_requested_context(GET)
        getter.add_requested_context(CT, ExplicitVRLittleEndian)

        def take(event: evt.Event) -> int:
            got.append(str(event.request.AffectedSOPInstanceUID))
            if len(got) == 2:
                event.assoc.send_c_cancel(43, None, GET)
            return 0x0000

        assoc = getter.associate(
            "127.0.0.1", port, ae_title="VETHUB", ext_neg=[build_role(CT, scp_role=True)],
            evt_handlers=[(evt.EVT_C_STORE, take)],
        )  # fmt: skip
        try:
            rsp, _ = final(list(assoc.send_c_get(identifier(study), GET, msg_id=43)))
        finally:
            assoc.release()
        assert rsp.Status == 0xFE00
        assert rsp.NumberOfCompletedSuboperations == 2
        assert rsp.NumberOfRemainingSuboperations == 4
        assert got == sops[:2]
    assert threading.active_count() < 50  # no thread left per fault
