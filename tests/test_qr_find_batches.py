"""Study-level C-FIND answers written in batches (worklist.encoded.FindAnswers): the
same bytes pynetdicom would send, every answer intact through DCMTK findscu with a
small PDU and through a pynetdicom SCU, and C-CANCEL honoured mid-stream; and the
per-query answer encoder writing what ``encoded_answer`` writes."""

from __future__ import annotations

import shutil
import subprocess
import time
from io import BytesIO
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.dimse_messages import C_FIND_RSP
from pynetdicom.dimse_primitives import C_FIND
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelFind,
)

from hub.context import Hub
from tests.study_factory import instance, store
from tests.worklist_scu import running_door
from worklist import charset, encoded, qr
from worklist.encoded import pdus, pending_command
from worklist.qr_query import AnswerEncoder, encoded_answer, plan

FIND = StudyRootQueryRetrieveInformationModelFind
STUDIES = 30


def _pynetdicom_wire(context_id: int, data: bytes, max_pdu: int, message_id: int) -> bytes:
    """What pynetdicom's C-FIND SCP writes for one pending answer: its own primitive,
    message, fragmentation and PDU encoding."""
    rsp = C_FIND()
    rsp.MessageID = rsp.MessageIDBeingRespondedTo = message_id
    rsp.AffectedSOPClassUID = FIND
    rsp.Status = 0xFF00
    rsp.Identifier = BytesIO(data)
    message = C_FIND_RSP()
    message.primitive_to_message(rsp)
    return b"".join(P_DATA_TF(p).encode() for p in message.encode_msg(context_id, max_pdu))


@pytest.mark.parametrize("max_pdu", [0, 16384, 4096, 100])
@pytest.mark.parametrize("size", [1, 300, 4090, 9000])
def test_frames_are_pynetdicoms(max_pdu: int, size: int) -> None:
    data = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    for message_id in (7, 1, 0x1234, 65535):  # the command set cached, the ID written in
        request = C_FIND()
        request.MessageID = message_id
        request.AffectedSOPClassUID = FIND
        wire = _pynetdicom_wire(3, data, max_pdu, message_id)
        assert pdus(3, pending_command(request), data, max_pdu) == wire


ROWS = [
    {"StudyInstanceUID": "1.2.3", "StudyDate": "20260301", "PatientName": "Schmidt^Rex"},
    {"StudyInstanceUID": "1.2.34", "PatientName": "Jäger^Bello", "ModalitiesInStudy": ["CT", "MR"]},
    {"PatientName": "Ωmega^Rex", "StudyDescription": "Thorax ä", "ModalitiesInStudy": ["DX"]},
    {"PatientName": "a\\b", "PatientID": "P1"},  # a backslash: pydicom writes it
    {"PatientID": "", "AccessionNumber": None, "ModalitiesInStudy": [], "SeriesNumber": 3},
    {"NumberOfStudyRelatedInstances": 12, "InstanceNumber": 4, "StudyTime": "101500.5"},
    {"PatientID": "Ü1", "StudyDate": "2026030é", "ModalitiesInStudy": ["", "US"]},
    {"PatientSex": True, "SeriesNumber": True, "PatientBirthDate": 20200101},
]
KEYS = (
    "StudyInstanceUID", "StudyDate", "StudyTime", "AccessionNumber", "PatientName", "PatientID",
    "StudyDescription", "ModalitiesInStudy", "PatientSex", "PatientBirthDate", "SeriesNumber",
    "InstanceNumber", "RetrieveAETitle", "InstanceAvailability",
)  # fmt: skip


@pytest.mark.parametrize("implicit", [True, False])
@pytest.mark.parametrize("asked", [None, charset.UTF8, charset.LATIN1, charset.ASCII])
def test_answer_encoder_writes_what_encoded_answer_writes(
    implicit: bool, asked: str | None
) -> None:
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    for key in KEYS:
        setattr(identifier, key, "")
    identifier.NumberOfStudyRelatedInstances = None  # IS, asked empty
    keys = plan(identifier)
    encoder = AnswerEncoder(keys, "STUDY", "VETHUB", implicit)
    for row in ROWS:
        assert encoder(row, asked) == encoded_answer(keys, row, "STUDY", asked, "VETHUB", implicit)
    assert any(encoder(row, asked) for row in ROWS)  # not all fall back to pydicom


def _studies(hub: Hub, n: int) -> set[str]:
    uids = set()
    for i in range(n):
        name = "Schmidt^Rex" if i % 3 else "Schmitz^Müller"  # some answers in UTF-8
        ds = instance(
            patient_id=f"P{i:03d}", patient_name=name, study_date=f"202603{i % 28 + 1:02d}"
        )
        store(hub, ds)
        uids.add(str(ds.StudyInstanceUID))
    return uids


def _findscu(port: int, out: Path, *extra: str) -> tuple[subprocess.CompletedProcess[str], list]:
    out.mkdir()
    cmd = ["findscu", "-S", "-v", "-X", "-od", str(out), "-aet", "QRSCU", "-aec", "VETHUB"]
    cmd += [*extra, "-k", "QueryRetrieveLevel=STUDY", "-k", "PatientName=Schm*"]
    for key in ("StudyInstanceUID", "PatientID", "StudyDate", "ModalitiesInStudy"):
        cmd += ["-k", key]
    proc = subprocess.run(
        [*cmd, "127.0.0.1", str(port)], capture_output=True, text=True, timeout=60
    )
    return proc, [dcmread(p) for p in sorted(out.glob("rsp*.dcm"))]


# The framing is the same whatever the database (test_qr_dcmtk.py queries both).
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_many_answers_small_pdu_and_cancel(
    hub: Hub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert shutil.which("findscu"), "DCMTK findscu is required (apt-get install dcmtk)"
    uids = _studies(hub, STUDIES)
    # Batches of a few answers, so one query takes several writes.
    monkeypatch.setattr(encoded, "FLUSH_BYTES", 1500)
    opened: list[object] = []
    real_open = encoded.FindAnswers.open

    def spy(event: object) -> object:
        opened.append(got := real_open(event))
        return got

    monkeypatch.setattr(qr.FindAnswers, "open", spy)
    with running_door(hub) as port:
        # DCMTK at its smallest PDU: every answer whole, each study once
        proc, answers = _findscu(port, tmp_path / "all", "-pdu", "4096")
        assert proc.returncode == 0, proc.stderr
        assert opened and opened[-1] is not None  # the batched path answered
        assert sorted(str(a.StudyInstanceUID) for a in answers) == sorted(uids)
        for a in answers:
            assert a.PatientID == f"P{int(a.PatientID[1:]):03d}"
            assert str(a.PatientName) in ("Schmidt^Rex", "Schmitz^Müller")
            assert a.ModalitiesInStudy == "DX" and a.QueryRetrieveLevel == "STUDY"
        assert "Received Final Find Response (Success)" in proc.stdout + proc.stderr

        # pynetdicom decodes the same answers
        scu = AE(ae_title="QRSCU")
        scu.add_requested_context(FIND)
        assoc = scu.associate("127.0.0.1", port, ae_title="VETHUB")
        assert assoc.is_established
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.PatientName = "Schm*"
        query.StudyInstanceUID = query.PatientID = ""
        got = [(s.Status, ds) for s, ds in assoc.send_c_find(query, FIND)]
        assoc.release()
        assert [s for s, _ in got] == [0xFF00] * STUDIES + [0x0000]
        assert {str(ds.StudyInstanceUID) for _, ds in got[:-1]} == uids

        # C-CANCEL after 5 answers while the search is still going: Cancel, fewer answers
        slow = qr.QueryRetrieveService._matches

        def trickle(self: qr.QueryRetrieveService, asked: object) -> object:
            for row in slow(self, asked):
                yield row
                time.sleep(0.01)  # a slow search, row by row

        monkeypatch.setattr(qr.QueryRetrieveService, "_matches", trickle)
        proc, answers = _findscu(port, tmp_path / "cancel", "--cancel", "5")
        assert proc.returncode == 0, proc.stderr
        out = proc.stdout + proc.stderr
        assert "Received Final Find Response (Cancel" in out, out[-2000:]
        assert 5 <= len(answers) < STUDIES
        assert {str(a.StudyInstanceUID) for a in answers} <= uids
