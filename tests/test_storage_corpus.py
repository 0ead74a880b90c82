"""Issue #12: third-party sample files through the DICOM door, each in its own syntax.

The corpus is pydicom's and pynetdicom's own test files (the ones with SOP
Class and Instance UIDs), sent by DCMTK ``storescu`` with one presentation
context per SOP class proposing only the file's transfer syntax (a profile
file, ``-xf``), so nothing is converted: a class or syntax the hub does
not take is refused, not quietly converted. Then, per file: stored at all,
the stored data set byte-for-byte the one sent, and the study page's preview
a real picture or a placeholder with its reason (never a 204 or a 500).
The per-syntax figures go to ``tests/artifacts/storage_corpus.txt``.
"""

from __future__ import annotations

import collections
import contextlib
import io
import os
import re
import shutil
import socket
import struct
import subprocess
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pynetdicom
import pytest
from fastapi.testclient import TestClient
from pydicom import uid
from pydicom.data import get_testdata_files
from pydicom.encaps import encapsulate
from pydicom.uid import (
    JPEG2000,
    UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGLSLossless,
)
from pynetdicom import AE, AllStoragePresentationContexts
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    EncapsulatedPDFStorage,
    ModalityWorklistInformationFind,
    MRImageStorage,
    Verification,
    VideoEndoscopicImageStorage,
    VideoPhotographicImageStorage,
)
from sqlalchemy import select

from hub.archive import render
from hub.config import Settings
from hub.context import Hub
from hub.models import Instance, Study
from tests import study_factory as sf
from tests.harness import REPO
from tests.study_factory import MPPS
from tests.test_dicomweb_wado import _parts as wado_parts
from tests.test_dicomweb_wado import _url as wado_url
from tests.worklist_scu import running_door
from worklist import storage

# DCMTK leaves Nagle on unless told: each C-STORE would wait for a delayed ACK.
_NODELAY = {**os.environ, "TCP_NODELAY": "1"}
ARTIFACT = REPO / "tests" / "artifacts" / "storage_corpus.txt"
# Samples the hub must refuse, and why: without the study and series UIDs an
# archive files an instance under (DCMTK storescp keeps them).
REFUSED = {
    "JPEGLSNearLossless_08.dcm": "no Study/Series Instance UID",
    "JPEGLSNearLossless_16.dcm": "no Study/Series Instance UID",
    "SC_rgb_jls_lossy_line.dcm": "no Study/Series Instance UID",
    "SC_rgb_jls_lossy_sample.dcm": "no Study/Series Instance UID",
}


@dataclass(frozen=True)
class Sample:
    path: Path  # the file as sent (a copy, its SOP Instance UID made unique)
    origin: str  # where it came from, for the failure messages
    sop_class: str
    sop_instance: str
    syntax: str


def _corpus_files() -> list[Path]:
    own = Path(pynetdicom.__file__).parent / "tests" / "dicom_files"
    return sorted({Path(p) for p in get_testdata_files()}) + sorted(own.glob("*.dcm"))


def _data_set_start(raw: bytes) -> int:
    """Where a Part 10 file's data set begins (after preamble, DICM and the meta group)."""
    (group_length,) = struct.unpack_from("<I", raw, 140)
    return 144 + group_length


def _first_difference(sent: bytes, kept: bytes) -> str | None:
    if sent == kept:
        return None
    at = next((i for i, (a, b) in enumerate(zip(sent, kept, strict=False)) if a != b), None)
    at = min(len(sent), len(kept)) if at is None else at
    return (
        f"(sizes {len(sent)}/{len(kept)}, first at byte {at}: "
        f"{sent[at - 8 : at + 8].hex()} / {kept[at - 8 : at + 8].hex()})"
    )


def _unique_uid(old: str, n: int) -> str:
    """A UID as long as ``old`` (so every length in the file still holds), its last part ``n``."""
    head, _, last = old.rpartition(".")
    return f"{head}.9{n:0{len(last) - 1}d}" if len(last) >= 3 else ""


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> list[Sample]:
    """Every sample with the UIDs a C-STORE needs; pydicom ships one image in many
    syntaxes under one SOP Instance UID, so repeats get a UID of their own (the
    same length, replaced in place: the bytes are otherwise the file's own)."""
    out = tmp_path_factory.mktemp("corpus")
    samples: list[Sample] = []
    seen: set[str] = set()
    for n, src in enumerate(_corpus_files()):
        try:
            with warnings.catch_warnings():  # pydicom's odd samples are odd on purpose
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(src, stop_before_pixels=True)
        except Exception:
            continue
        meta = ds.get("file_meta")
        syntax = str(meta.get("TransferSyntaxUID", "")) if meta else ""
        klass, inst = str(ds.get("SOPClassUID", "")), str(ds.get("SOPInstanceUID", ""))
        raw = src.read_bytes()
        if not (syntax and klass and inst) or raw[128:132] != b"DICM":
            continue
        if str(meta.get("MediaStorageSOPInstanceUID", "")) != inst:
            continue
        if inst in seen:
            new = _unique_uid(inst, n)
            if not new or UID(syntax).is_deflated:
                continue  # inside the deflate stream: not replaceable in place
            raw = raw.replace(inst.encode(), new.encode())
            inst = new
        seen.add(inst)
        path = out / f"{n:03d}-{src.name}"
        path.write_bytes(raw)
        samples.append(Sample(path, src.name, klass, inst, syntax))
    return samples


def _profile(samples: list[Sample], where: Path) -> Path:
    """A storescu association profile: per SOP class one context, the syntax alone."""
    classes = sorted({s.sop_class for s in samples})
    syntax = samples[0].syntax
    lines = ["[[TransferSyntaxes]]", "[Only]", f"TransferSyntax1 = {syntax}", ""]
    lines += ["[[PresentationContexts]]", "[Each]"]
    lines += [f"PresentationContext{i} = {c}\\Only" for i, c in enumerate(classes, 1)]
    lines += ["", "[[Profiles]]", "[Corpus]", "PresentationContexts = Each", ""]
    where.write_text("\n".join(lines))
    return where


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def on_the_wire(corpus: list[Sample], tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """The data set bytes storescu puts on the wire, per SOP Instance UID, as
    DCMTK ``storescp`` writes them in bit-preserving mode: storescu re-encodes
    what it read (group lengths, defined lengths, trailing padding), so the
    file on disk is not what a receiver gets."""
    exe = shutil.which("storescp")
    assert exe, "DCMTK storescp is required (apt-get install dcmtk)"
    out = tmp_path_factory.mktemp("wire")
    classes = sorted({s.sop_class for s in corpus})
    syntaxes = sorted({s.syntax for s in corpus})
    lines = ["[[TransferSyntaxes]]", "[All]"]
    lines += [f"TransferSyntax{i} = {t}" for i, t in enumerate(syntaxes, 1)]
    lines += ["", "[[PresentationContexts]]", "[Each]"]
    lines += [f"PresentationContext{i} = {c}\\All" for i, c in enumerate(classes, 1)]
    lines += ["", "[[Profiles]]", "[Corpus]", "PresentationContexts = Each", ""]
    cfg = out / "scp.cfg"
    cfg.write_text("\n".join(lines))
    port = _free_port()
    received = out / "in"
    received.mkdir()
    cmd = [exe, "-aet", "VETHUB", "-xf", str(cfg), "Corpus", "+B", "-od", str(received)]
    # Its output is not read: a pipe nobody drains would stall it once full.
    scp = subprocess.Popen(
        [*cmd, str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_NODELAY
    )
    try:
        for n, group in enumerate(_by_syntax(corpus).values()):
            _send(port, group, _profile(group, out / f"{n}.cfg"), wait_for_port=n == 0)
    finally:
        scp.terminate()
        scp.wait(timeout=10)
    wire: dict[str, bytes] = {}
    for path in received.iterdir():
        raw = path.read_bytes()
        uid = pydicom.dcmread(path, stop_before_pixels=True).file_meta.MediaStorageSOPInstanceUID
        wire[str(uid)] = raw[_data_set_start(raw) :]
    return wire


def _by_syntax(samples: list[Sample]) -> dict[str, list[Sample]]:
    groups: dict[str, list[Sample]] = collections.defaultdict(list)
    for s in samples:
        groups[s.syntax].append(s)
    return dict(sorted(groups.items()))


def _send(port: int, samples: list[Sample], cfg: Path, *, wait_for_port: bool = False) -> str:
    if wait_for_port:  # a storescp just started
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            time.sleep(0.02)
    exe = shutil.which("storescu")
    assert exe, "DCMTK storescu is required (apt-get install dcmtk)"
    cmd = [exe, "-aet", "CORPUS", "-aec", "VETHUB", "-xf", str(cfg), "Corpus", "-nh"]
    cmd += ["-to", "20", "-ta", "20", "-pdu", "131072", "127.0.0.1", str(port)]
    cmd += [str(s.path) for s in samples]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=_NODELAY)
    return proc.stdout + proc.stderr


def _preview(client: TestClient, hub: Hub, study: str, inst: str) -> str:
    """'image', 'placeholder: <reason>', or what the page would get instead."""
    r = client.get(f"/viewer/studies/{study}/instances/{inst}/preview.png")
    if r.status_code != 200 or not r.content.startswith(b"\x89PNG"):
        return f"broken ({r.status_code})"
    reason = render.known_failure(hub.settings.data_dir, inst)
    return "image" if reason is None else f"placeholder: {reason}"


_COLUMNS = ("files", "sent", "refused", "stored", "exact", "image", "placeholder")


def _table(rows: dict[str, collections.Counter[str]]) -> str:
    """Per transfer syntax: sample files, sent by storescu, refused as expected,
    stored, stored byte-for-byte, previewed as a picture, as a placeholder."""
    head = f"{'transfer syntax':<46}" + "".join(f"{c[:7]:>8}" for c in _COLUMNS)
    lines = [head, "-" * len(head)]
    total: collections.Counter[str] = collections.Counter()
    for syntax, c in sorted(rows.items()):
        total.update(c)
        lines.append(f"{UID(syntax).name[:46]:<46}" + "".join(f"{c[k]:>8}" for k in _COLUMNS))
    lines.append(f"{'all':<46}" + "".join(f"{total[k]:>8}" for k in _COLUMNS))
    return "\n".join(lines)


def test_every_sample_is_stored_as_sent_and_previewed(
    hub: Hub,
    client: TestClient,
    corpus: list[Sample],
    on_the_wire: dict[str, bytes],
    tmp_path: Path,
) -> None:
    logs = []
    with running_door(hub) as port:
        for n, samples in enumerate(_by_syntax(corpus).values()):
            logs.append(_send(port, samples, _profile(samples, tmp_path / f"{n}.cfg")))
    with hub.db.read_session() as s:
        rows_ = s.execute(select(Instance, Study.study_instance_uid).join(Study)).all()
    stored = {i.sop_instance_uid: i for i, _ in rows_}
    studies = {i.sop_instance_uid: uid for i, uid in rows_}
    rows: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    faults: list[str] = []
    placeholders: list[str] = []
    for smp in corpus:
        row = rows[smp.syntax]
        row["files"] += 1
        sent = on_the_wire.get(smp.sop_instance)
        if sent is None:  # storescu cannot read the file: nothing reaches any receiver
            placeholders.append(f"{smp.origin}: not sent, DCMTK storescu cannot read it")
            continue
        row["sent"] += 1
        inst = stored.get(smp.sop_instance)
        if smp.origin in REFUSED:
            row["refused"] += 1
            if inst is not None:
                faults.append(f"{smp.origin}: stored, though {REFUSED[smp.origin]}")
            continue
        if inst is None:
            faults.append(f"{smp.origin} ({UID(smp.syntax).name}): not stored")
            continue
        row["stored"] += 1
        kept = (hub.settings.data_dir / inst.path).read_bytes()
        differs = _first_difference(sent, kept[_data_set_start(kept) :])
        if differs is None:
            row["exact"] += 1
        else:
            faults.append(f"{smp.origin}: stored data set differs from the one sent {differs}")
        seen = _preview(client, hub, studies[smp.sop_instance], smp.sop_instance)
        if seen == "image":
            row["image"] += 1
        elif seen.startswith("placeholder"):
            row["placeholder"] += 1
            placeholders.append(f"{smp.origin}: {seen}")
        else:
            faults.append(f"{smp.origin} ({UID(smp.syntax).name}): preview {seen}")
    table = _table(rows)
    ARTIFACT.parent.mkdir(parents=True, exist_ok=True)
    ARTIFACT.write_text("\n\n".join((table, "\n".join(faults), "\n".join(placeholders))) + "\n")
    print("\n" + table)
    refusals = [ln for log in logs for ln in log.splitlines() if re.search(r"E:|W:", ln)]
    assert not faults, "\n".join(faults + refusals[:40])


# -- what the door negotiates ----------------------------------------------------

# All pydicom knows but real-time video and JPIP HTJ2K Referenced Deflate.
KNOWN_SYNTAXES = [str(t) for t in uid.AllTransferSyntaxes if t not in storage.NOT_STORED]
JPIP_DEFLATE = "1.2.840.10008.1.2.4.205"
# Classes clinics send that the door once refused (issue #12).
ONCE_REFUSED = [
    "1.2.840.10008.5.1.4.1.1.481.2",  # RT Dose
    "1.2.840.10008.5.1.4.1.1.481.5",  # RT Plan
    "1.2.840.10008.5.1.4.1.1.481.3",  # RT Structure Set
    "1.2.840.10008.5.1.4.1.1.481.1",  # RT Image
    "1.2.840.10008.5.1.4.1.1.9.1.1",  # 12-lead ECG
    "1.2.840.10008.5.1.4.1.1.66.4",  # Segmentation
    "1.2.840.10008.5.1.4.1.1.88.67",  # X-Ray Radiation Dose SR
    "1.2.840.10008.5.1.4.1.1.77.1.5.1",  # Ophthalmic Photography 8 Bit
]


def _negotiated(port: int, contexts: list[tuple[str, list[str]]]) -> list[tuple[str, str, int]]:
    """(abstract syntax, transfer syntax, result) per context proposed by pynetdicom."""
    ae = AE(ae_title="NEGOTIATE")
    ae.acse_timeout = ae.network_timeout = 10
    for abstract, syntaxes in contexts:
        ae.add_requested_context(abstract, syntaxes)
    assoc = ae.associate("127.0.0.1", port, ae_title="VETHUB")
    assert assoc.is_established
    try:
        return [
            (str(c.abstract_syntax), str(c.transfer_syntax[0]), c.result)
            for c in assoc.accepted_contexts + assoc.rejected_contexts
        ]
    finally:
        assoc.release()


def test_every_storage_class_and_syntax_is_negotiated(hub: Hub) -> None:
    classes = [str(c.abstract_syntax) for c in AllStoragePresentationContexts]
    assert set(ONCE_REFUSED) <= set(classes) and len(classes) > 128
    with running_door(hub) as port:
        # Every class (a requestor proposes at most 128 contexts at once) ...
        answers = []
        for at in range(0, len(classes), 120):
            answers += _negotiated(
                port, [(c, [ExplicitVRLittleEndian]) for c in classes[at : at + 120]]
            )
        assert len(answers) == len(classes) and all(r == 0 for *_, r in answers)
        # ... every syntax, one context each, beside Verification, MWL and MPPS.
        others = [Verification, ModalityWorklistInformationFind, MPPS]
        answers = _negotiated(
            port,
            [(CTImageStorage, [t]) for t in KNOWN_SYNTAXES]
            + [(c, [ImplicitVRLittleEndian]) for c in others],
        )
    accepted = {(a, t) for a, t, r in answers if r == 0}
    assert accepted == {(CTImageStorage, t) for t in KNOWN_SYNTAXES} | {
        (c, ImplicitVRLittleEndian) for c in others
    }


def test_refusing_a_class_or_a_syntax_is_a_setting(hub: Hub) -> None:
    hub.settings.dicom_refused_sop_classes = [CTImageStorage]
    hub.settings.dicom_refused_transfer_syntaxes = [ExplicitVRBigEndian, JPEG2000]
    with running_door(hub) as port:
        answers = _negotiated(
            port,
            [(CTImageStorage, [ExplicitVRLittleEndian]), (MRImageStorage, [JPIP_DEFLATE])]
            + [(MRImageStorage, [t]) for t in (ExplicitVRBigEndian, JPEG2000, JPEGLSLossless)]
            + [(Verification, [ImplicitVRLittleEndian])],
        )
    assert {(a, t): r == 0 for a, t, r in answers} == {
        (CTImageStorage, ExplicitVRLittleEndian): False,
        (MRImageStorage, JPIP_DEFLATE): False,  # never taken (see worklist/storage.py)
        (MRImageStorage, ExplicitVRBigEndian): False,
        (MRImageStorage, JPEG2000): False,
        (MRImageStorage, JPEGLSLossless): True,
        (Verification, ImplicitVRLittleEndian): True,
    }
    with pytest.raises(ValueError, match="dicom_refused_transfer_syntaxes"):
        Settings(dicom_refused_transfer_syntaxes=["big endian"])


def test_a_big_endian_instance_is_matched_and_corrected_in_its_syntax(
    hub: Hub, client: TestClient, tmp_path: Path
) -> None:
    """Coercion rewrites the header of an Explicit VR Big Endian instance and
    keeps it big endian (the pixels as sent)."""
    order = sf.place(client)
    ds = sf.instance(accession=order["accession_number"], patient_name="SMITH^REX")
    ds.file_meta.TransferSyntaxUID = ExplicitVRBigEndian
    sent = tmp_path / "be.dcm"
    ds.save_as(sent, implicit_vr=False, little_endian=False, enforce_file_format=True)
    with running_door(hub) as port:
        out = subprocess.run(
            [shutil.which("storescu") or "storescu", "-aet", "DX_ROOM1", "-aec", "VETHUB",
             "-xb", "127.0.0.1", str(port), str(sent)],
            capture_output=True, text=True, timeout=60, env=_NODELAY,
        )  # fmt: skip
    assert out.returncode == 0, out.stderr
    with hub.db.read_session() as s:
        inst = s.scalars(select(Instance)).one()
        study = s.scalars(select(Study)).one()
    assert study.order_id == order["id"] and inst.coerced
    assert inst.transfer_syntax_uid == ExplicitVRBigEndian
    kept = pydicom.dcmread(hub.settings.data_dir / inst.path)
    assert kept.file_meta.TransferSyntaxUID == ExplicitVRBigEndian
    assert str(kept.PatientName) == "Smith^Rex"
    assert (kept.pixel_array == pydicom.dcmread(sent).pixel_array).all()
    # WADO-RS's default, Explicit VR Little Endian: the words turned, the same pixels.
    ids = (study.study_instance_uid, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    r = client.get(wado_url(ids), headers={"Accept": 'multipart/related; type="application/dicom"'})
    assert r.status_code == 200, r.text
    little = pydicom.dcmread(io.BytesIO(wado_parts(r)[0]))
    assert little.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert (little.pixel_array == kept.pixel_array).all()


# Syntaxes and classes the corpus has no sample of: clips, HTJ2K, JPEG 2000
# Part 2, an encapsulated PDF. The hub stores without decoding, so a stand-in
# stream is enough to show the door takes them and keeps the bytes as sent.
NOT_IN_CORPUS = [
    (VideoEndoscopicImageStorage, uid.MPEG2MPML),
    (VideoPhotographicImageStorage, uid.MPEG4HP41),
    (VideoEndoscopicImageStorage, uid.HEVCMP51),
    (CTImageStorage, uid.HTJ2KLossless),
    (CTImageStorage, uid.JPEG2000MCLossless),
    (EncapsulatedPDFStorage, uid.DeflatedExplicitVRLittleEndian),
]


def test_clips_htj2k_part2_and_pdf_are_stored_as_sent(hub: Hub, client: TestClient) -> None:
    sent = []
    for sop_class, syntax in NOT_IN_CORPUS:
        ds = sf.instance(sop_class=sop_class, modality="ES")
        ds.file_meta.TransferSyntaxUID = syntax
        if sop_class == EncapsulatedPDFStorage:
            del ds.PixelData
            ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
            ds.EncapsulatedDocument = b"%PDF-1.4 stand-in\n%%EOF\n"
        else:
            ds.NumberOfFrames = 1
            ds.PixelData = encapsulate([b"\x00\x00\x01\xb3stand-in stream" + bytes(16)])
        sent.append(ds)
    ae = AE(ae_title="ENDO_1")
    ae.acse_timeout = ae.network_timeout = 10
    for sop_class, syntax in NOT_IN_CORPUS:
        ae.add_requested_context(sop_class, syntax)
    with running_door(hub) as port:
        assoc = ae.associate("127.0.0.1", port, ae_title="VETHUB")
        assert assoc.is_established
        try:
            statuses = [int(assoc.send_c_store(ds).Status) for ds in sent]
        finally:
            assoc.release()
    assert statuses == [0] * len(sent)
    with hub.db.read_session() as s:
        rows = {i.sop_instance_uid: i for i in s.scalars(select(Instance))}
    for ds in sent:
        inst = rows[ds.SOPInstanceUID]
        assert inst.transfer_syntax_uid == ds.file_meta.TransferSyntaxUID
        kept = pydicom.dcmread(hub.settings.data_dir / inst.path)
        assert kept.file_meta.TransferSyntaxUID == ds.file_meta.TransferSyntaxUID
        key = "EncapsulatedDocument" if "EncapsulatedDocument" in ds else "PixelData"
        assert kept[key].value == ds[key].value
        seen = _preview(client, hub, ds.StudyInstanceUID, ds.SOPInstanceUID)
        assert seen.startswith("placeholder: "), seen


PRIVATE = "1.2.826.0.1.3680043.9.7433.1.1"  # a vendor's own storage class, made up


def test_retired_ultrasound_and_listed_private_classes_are_stored(hub: Hub) -> None:
    """The retired ultrasound classes and a private class named in
    ``VETHUB_DICOM_EXTRA_SOP_CLASSES`` are stored (pynetdicom knows no service
    for them: the door registers them as storage); an unlisted private class,
    or MWL's listed as one, is not taken for storage."""
    hub.settings.dicom_extra_sop_classes = [PRIVATE, ModalityWorklistInformationFind]
    sent = [
        sf.instance(sop_class=klass, modality="US")
        for klass in (*storage.RETIRED_US, PRIVATE, "1.2.826.0.1.3680043.9.7433.1.2")
    ]
    ae = AE(ae_title="US_OLD")
    ae.acse_timeout = ae.network_timeout = ae.dimse_timeout = 10
    for ds in sent:
        ae.add_requested_context(ds.SOPClassUID, ExplicitVRLittleEndian)
    with running_door(hub) as port:
        assoc = ae.associate("127.0.0.1", port, ae_title="VETHUB")
        assert assoc.is_established
        try:
            taken = {str(c.abstract_syntax) for c in assoc.accepted_contexts}
            statuses = [int(assoc.send_c_store(ds).Status) for ds in sent[:3]]
        finally:
            assoc.release()
        assert taken == {*storage.RETIRED_US, PRIVATE} and statuses == [0, 0, 0]
        # MWL still answers C-FIND on its context (not turned into storage).
        mwl = AE(ae_title="US_OLD")
        mwl.add_requested_context(ModalityWorklistInformationFind, ExplicitVRLittleEndian)
        assoc = mwl.associate("127.0.0.1", port, ae_title="VETHUB")
        assert assoc.is_established
        try:
            query = pydicom.Dataset()
            query.PatientID = ""
            answers = [
                int(st.Status)
                for st, _ in assoc.send_c_find(query, ModalityWorklistInformationFind)
            ]
        finally:
            assoc.release()
        assert answers == [0]
    with hub.db.read_session() as s:
        stored = set(s.scalars(select(Instance.sop_class_uid)))
    assert stored == {*storage.RETIRED_US, PRIVATE}
