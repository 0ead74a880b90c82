"""Query/Retrieve on the hub's AE with DCMTK as the workstation: findscu -S/-P,
movescu to a storescp registered as a node, getscu; pynetdicom for the faults.

One door, one storescp and a few tiny instances per database.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import struct
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import trustme
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import RLELossless
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from hub.context import Hub
from hub.services import modalities
from tests.study_factory import CT, DX, instance, paths, store
from tests.worklist_scu import order, place, running_door

DCMTK = ("findscu", "movescu", "getscu", "storescp")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def _storescp(out: Path) -> Iterator[int]:
    """DCMTK storescp as the move destination: uncompressed syntaxes only (its default)."""
    out.mkdir()
    port = _free_port()
    proc = subprocess.Popen(
        ["storescp", "-aet", "DEST", "-od", str(out), str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@contextmanager
def _tls_scp(hub: Hub, tmp_path: Path) -> Iterator[tuple[int, list[str]]]:
    """A pynetdicom Storage SCP behind TLS with a certificate from a test CA,
    which the hub trusts through VETHUB_TLS_EXTRA_CA; yields its port and the
    SOP Instance UIDs it received."""
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    hub.settings.tls_extra_ca = ca_file
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    received: list[str] = []

    def on_store(event: evt.Event) -> int:
        received.append(str(event.request.AffectedSOPInstanceUID))
        return 0x0000

    scp = AE(ae_title="TLSDEST")
    scp.add_supported_context(DX)
    server = scp.start_server(
        ("127.0.0.1", 0), block=False, ssl_context=server_ctx,
        evt_handlers=[(evt.EVT_C_STORE, on_store)],
    )  # fmt: skip
    try:
        yield server.server_address[1], received
    finally:
        server.shutdown()


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=60)


def _answers(folder: Path) -> list[Dataset]:
    return [dcmread(p) for p in sorted(folder.glob("rsp*.dcm"))]


def _data_set(path: Path | str) -> bytes:
    """A Part 10 file's data set bytes (after preamble and meta group)."""
    raw = Path(path).read_bytes()
    (meta_length,) = struct.unpack("<I", raw[140:144])
    return raw[144 + meta_length :]


def paths_uid(hub: Hub, study_uid: str) -> str:
    """The SOP Instance UID of a one-instance study, from its stored file's name."""
    (only,) = paths(hub, study_uid)
    return Path(only).stem


def _find(port: int, root: str, keys: list[str], out: Path) -> list[Dataset]:
    out.mkdir()
    cmd = ["findscu", root, "-X", "-od", str(out), "-aet", "QRSCU", "-aec", "VETHUB"]
    for key in keys:
        cmd += ["-k", key]
    proc = _run(*cmd, "127.0.0.1", str(port))
    assert proc.returncode == 0, proc.stderr
    return _answers(out)


def _study(hub: Hub, patient: str, name: str, date: str, sop_class: str, n: int) -> str:
    first = instance(
        sop_class=sop_class, patient_id=patient, patient_name=name, study_date=date,
        modality="CT" if sop_class == CT else "DX",
    )  # fmt: skip
    store(hub, first)
    for k in range(1, n):
        more = instance(
            sop_class=sop_class, patient_id=patient, patient_name=name, study_date=date,
            study_uid=first.StudyInstanceUID, series_uid=first.SeriesInstanceUID,
            modality="CT" if sop_class == CT else "DX", InstanceNumber=str(k + 1),
        )  # fmt: skip
        store(hub, more)
    return str(first.StudyInstanceUID)


def test_query_retrieve_with_dcmtk(hub: Hub, tmp_path: Path) -> None:
    for exe in DCMTK:
        assert shutil.which(exe), f"DCMTK {exe} is required (apt-get install dcmtk)"
    ct = _study(hub, "P-1", "Müller^Rex", "20261101", CT, 3)
    dx = _study(hub, "P-1", "Müller^Rex", "20261120", DX, 1)
    other = _study(hub, "P-2", "Smith^Bella", "20250105", DX, 1)
    place(hub, [order(1)])  # accession A1, patient P-1, owner Müller
    as_sent = instance(patient_id="", patient_name="", accession="A1")  # filled from the order
    store(hub, as_sent)
    matched = str(as_sent.StudyInstanceUID)

    with (
        _storescp(tmp_path / "dest") as dest_port,
        _tls_scp(hub, tmp_path) as (tls_port, received),
        running_door(hub) as port,
    ):
        with hub.db.session() as s:
            modalities.put(s, "QRSCU", {}, actor="test")
            modalities.put(s, "DEST", {"host": "127.0.0.1", "port": dest_port}, actor="test")
            tls_node = {"host": "127.0.0.1", "port": tls_port, "tls": True}
            modalities.put(s, "TLSDEST", tls_node, actor="test")

        # Study Root, STUDY level: a wildcard name and a date range
        found = _find(
            port, "-S",
            ["SpecificCharacterSet=ISO_IR 192", "QueryRetrieveLevel=STUDY", "PatientName=mü*",
             "StudyDate=20261101-20261130",
             "StudyInstanceUID", "ModalitiesInStudy", "NumberOfStudyRelatedInstances",
             "PatientSpeciesDescription"],
            tmp_path / "s1",
        )  # fmt: skip
        # "matched" carries no name of its own: it has its order's
        assert {str(a.StudyInstanceUID) for a in found} == {ct, dx, matched}
        by_uid = {str(a.StudyInstanceUID): a for a in found}
        assert by_uid[ct].NumberOfStudyRelatedInstances == 3
        assert by_uid[ct].ModalitiesInStudy == "CT"
        assert str(by_uid[ct].PatientName) == "Müller^Rex"
        assert by_uid[ct].SpecificCharacterSet == "ISO_IR 192"
        assert "PatientSpeciesDescription" in by_uid[ct]  # asked for, empty when unknown

        # A Latin-1 query is answered in Latin-1 when the answer fits it
        latin = _find(
            port, "-S",
            ["SpecificCharacterSet=ISO_IR 100", "QueryRetrieveLevel=STUDY",
             f"StudyInstanceUID={ct}", "PatientName"],
            tmp_path / "latin1",
        )  # fmt: skip
        assert latin[0].SpecificCharacterSet == "ISO_IR 100"
        assert str(latin[0].PatientName) == "Müller^Rex"

        # Study Root, SERIES then IMAGE level under one study
        series = _find(
            port, "-S",
            ["QueryRetrieveLevel=SERIES", f"StudyInstanceUID={ct}", "SeriesInstanceUID",
             "Modality", "NumberOfSeriesRelatedInstances"],
            tmp_path / "s2",
        )  # fmt: skip
        assert len(series) == 1 and series[0].Modality == "CT"
        images = _find(
            port, "-S",
            ["QueryRetrieveLevel=IMAGE", f"StudyInstanceUID={ct}",
             f"SeriesInstanceUID={series[0].SeriesInstanceUID}", "SOPInstanceUID",
             "SOPClassUID", "InstanceNumber"],
            tmp_path / "s3",
        )  # fmt: skip
        assert len(images) == 3 and {str(i.SOPClassUID) for i in images} == {CT}

        # A study matched to its order answers with the order's identity and species
        answered = _find(
            port, "-S",
            ["QueryRetrieveLevel=STUDY", "AccessionNumber=A1", "PatientName", "PatientID",
             "PatientSpeciesDescription", "StudyInstanceUID"],
            tmp_path / "s4",
        )  # fmt: skip
        assert [str(a.StudyInstanceUID) for a in answered] == [matched]
        assert str(answered[0].PatientName) == "Müller^Rex"
        assert answered[0].PatientID == "P-1"
        assert answered[0].PatientSpeciesDescription

        # Patient Root: PATIENT level, then STUDY level under the patient's ID
        pats = _find(
            port, "-P",
            ["QueryRetrieveLevel=PATIENT", "PatientID", "PatientName",
             "NumberOfPatientRelatedStudies"],
            tmp_path / "p1",
        )  # fmt: skip
        counts = {str(p.PatientID): int(p.NumberOfPatientRelatedStudies) for p in pats}
        assert counts == {"P-1": 3, "P-2": 1}
        studies = _find(
            port, "-P",
            ["QueryRetrieveLevel=STUDY", "PatientID=P-2", "StudyInstanceUID"],
            tmp_path / "p2",
        )  # fmt: skip
        assert [str(a.StudyInstanceUID) for a in studies] == [other]

        # C-MOVE to the registered storescp: the files arrive as stored, byte for byte
        move = _run(
            "movescu", "-S", "-aet", "QRSCU", "-aec", "VETHUB", "-aem", "DEST",
            "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={ct}",
            "127.0.0.1", str(port),
        )  # fmt: skip
        # released, not aborted, once the move is done (a long one was aborted: issue #13)
        assert move.returncode == 0, move.stderr
        assert "Release Failed" not in move.stderr + move.stdout
        arrived = sorted((tmp_path / "dest").iterdir())
        assert len(arrived) == 3
        stored = {Path(p).stem: _data_set(p) for p in paths(hub, ct)}
        for f in arrived:
            sop = str(dcmread(f, stop_before_pixels=True).SOPInstanceUID)
            assert _data_set(f) == stored[sop]

        # An RLE instance to a destination that takes only uncompressed: decompressed
        rle = instance(sop_class=CT, modality="CT", patient_id="P-3")
        pixels = bytes(rle.PixelData)
        rle.compress(RLELossless, generate_instance_uid=False)
        scu = AE(ae_title="QRSCU")
        scu.add_requested_context(CT, RLELossless)
        assoc = scu.associate("127.0.0.1", port, ae_title="VETHUB")
        assert assoc.send_c_store(rle).Status == 0
        assoc.release()
        move = _run(
            "movescu", "-S", "-aet", "QRSCU", "-aec", "VETHUB", "-aem", "DEST",
            "-k", "QueryRetrieveLevel=IMAGE", "-k", f"StudyInstanceUID={rle.StudyInstanceUID}",
            "-k", f"SeriesInstanceUID={rle.SeriesInstanceUID}",
            "-k", f"SOPInstanceUID={rle.SOPInstanceUID}", "127.0.0.1", str(port),
        )  # fmt: skip
        assert move.returncode == 0, move.stderr
        new = [f for f in (tmp_path / "dest").iterdir() if f not in arrived]
        (decompressed,) = [dcmread(f) for f in new]
        assert decompressed.SOPInstanceUID == rle.SOPInstanceUID
        assert decompressed.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
        assert decompressed.PixelData == pixels

        # C-GET on the requestor's own association
        got = tmp_path / "got"
        got.mkdir()
        get = _run(
            "getscu", "-S", "-aet", "QRSCU", "-aec", "VETHUB", "-od", str(got),
            "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={dx}",
            "127.0.0.1", str(port),
        )  # fmt: skip
        assert get.returncode == 0, get.stderr
        assert len(list(got.iterdir())) == 1

        # Faults, answered by status, never a crash: unknown destination, bad level
        ae = AE(ae_title="QRSCU")
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
        ae.add_requested_context(PatientRootQueryRetrieveInformationModelFind)
        assoc = ae.associate("127.0.0.1", port, ae_title="VETHUB")
        assert assoc.is_established
        move_model = StudyRootQueryRetrieveInformationModelMove
        try:
            ident = Dataset()
            ident.QueryRetrieveLevel = "STUDY"
            ident.StudyInstanceUID = ct
            move_rsp = list(
                assoc.send_c_move(ident, "NOWHERE", StudyRootQueryRetrieveInformationModelMove)
            )
            assert move_rsp[-1][0].Status == 0xA801
            with hub.db.session() as s:  # registered, but nothing listens there
                modalities.put(s, "DOWN", {"host": "127.0.0.1", "port": _free_port()}, actor="t")
            down = list(assoc.send_c_move(ident, "DOWN", move_model))
            assert down[-1][0].Status == 0xA801
            bad = Dataset()
            bad.QueryRetrieveLevel = "PATIENT"  # not a Study Root level
            rsp = list(assoc.send_c_find(bad, StudyRootQueryRetrieveInformationModelFind))
            assert rsp[-1][0].Status == 0xA900
            assert "QueryRetrieveLevel" in rsp[-1][0].ErrorComment
            nokey = Dataset()
            nokey.QueryRetrieveLevel = "SERIES"  # Patient Root: PatientID and study UID needed
            nokey.SeriesInstanceUID = ""
            rsp = list(assoc.send_c_find(nokey, PatientRootQueryRetrieveInformationModelFind))
            assert rsp[-1][0].Status == 0xA900
            assert "PatientID" in rsp[-1][0].ErrorComment
        finally:
            assoc.release()

        # C-GET of a DX study by a requestor that takes only CT: a failed
        # sub-operation under the instance's UID: all failed, 0xA702 (PS3.4 C.4.3.1.4)
        getter = AE(ae_title="QRSCU")
        getter.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
        getter.add_requested_context(CT)
        assoc = getter.associate(
            "127.0.0.1", port, ae_title="VETHUB", ext_neg=[build_role(CT, scp_role=True)],
            evt_handlers=[(evt.EVT_C_STORE, lambda event: 0x0000)],
        )  # fmt: skip
        assert assoc.is_established
        try:
            ident = Dataset()
            ident.QueryRetrieveLevel = "STUDY"
            ident.StudyInstanceUID = other
            last = list(assoc.send_c_get(ident, StudyRootQueryRetrieveInformationModelGet))[-1]
            assert last[0].Status == 0xA702
            assert last[0].NumberOfFailedSuboperations == 1
            assert last[1].FailedSOPInstanceUIDList == paths_uid(hub, other)
        finally:
            assoc.release()

        # C-MOVE to a node registered with tls: over TLS, its certificate checked
        assoc = ae.associate("127.0.0.1", port, ae_title="VETHUB")
        ident = Dataset()
        ident.QueryRetrieveLevel = "STUDY"
        ident.StudyInstanceUID = other
        last = list(assoc.send_c_move(ident, "TLSDEST", move_model))[-1]
        assoc.release()
        assert last[0].Status == 0x0000
        assert received == [paths_uid(hub, other)]

    with hub.db.read_session() as s:
        from hub.services import events

        trail, _ = events.audit_trail(s, action="move")
        assert {(t.target_id, t.detail["instances"]) for t in trail if t.detail} == {
            (ct, 3),
            (str(rle.StudyInstanceUID), 1),
            (other, 1),  # to TLSDEST
        }
        assert {t.actor for t in trail} == {"dicom:QRSCU"}


def test_rle_instance_moved_as_stored(tmp_path: Path) -> None:
    """A compressed instance keeps its syntax when the destination accepts it (contexts)."""
    from worklist import send

    ds = instance(sop_class=CT)
    ds.compress(RLELossless)
    item = send.Outgoing(tmp_path / "x.dcm", CT, ds.SOPInstanceUID, str(RLELossless))
    proposed = {
        (str(cx.abstract_syntax), tuple(str(t) for t in cx.transfer_syntax))
        for cx in send.contexts_for([item])
    }
    assert (CT, (str(RLELossless),)) in proposed
    assert any(a == CT and "1.2.840.10008.1.2.1" in t for a, t in proposed)
