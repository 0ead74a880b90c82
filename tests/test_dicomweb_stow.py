"""STOW-RS: instances POSTed over HTTP are stored like a C-STORE (matched,
deduplicated, retrievable), and bad bodies are refused before anything is."""

from __future__ import annotations

import hashlib
import io

from dicomweb_client.api import DICOMwebClient
from fastapi.testclient import TestClient
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from hub.context import Hub
from hub.services import links
from tests import study_factory as sf
from tests.factories import REX
from tests.harness import ServedHub

BOUNDARY = "vethub-test-boundary"
RELATED = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'


def _part10(ds: Dataset) -> bytes:
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def _body(*parts: bytes, boundary: str = BOUNDARY) -> bytes:
    chunks = [
        f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + p + b"\r\n"
        for p in parts
    ]
    return b"".join(chunks) + f"--{boundary}--\r\n".encode()


def test_dicomweb_client_stores_into_a_served_hub(served_hub: ServedHub) -> None:
    with served_hub.api() as api:
        order = api.post("/api/v1/orders", json=REX).json()
        study, series = order["study_instance_uid"], generate_uid()
        sent = [
            sf.instance(
                study_uid=study,
                series_uid=series,
                accession=order["accession_number"],
                patient_name="SMITH^REX",
            )
            for _ in range(2)
        ]
        client = DICOMwebClient(
            f"{served_hub.url}/dicomweb", headers={"Authorization": f"Bearer {served_hub.key}"}
        )
        answer = client.store_instances(sent)
        refs = answer.ReferencedSOPSequence
        assert {r.ReferencedSOPInstanceUID for r in refs} == {d.SOPInstanceUID for d in sent}
        assert "FailedSOPSequence" not in answer
        assert answer.RetrieveURL.endswith(f"/dicomweb/studies/{study}")

        body = api.get(f"/api/v1/studies/{study}").json()
        assert body["order_id"] == order["id"] and body["match_method"] == "accession"
        assert body["instance_count"] == 2
        assert api.get(f"/api/v1/orders/{order['id']}").json()["status"] == "in_progress"
        # A resend of the same bytes is a duplicate, not a second copy.
        again = client.store_instances(sent[:1])
        assert len(again.ReferencedSOPSequence) == 1
        assert api.get(f"/api/v1/studies/{study}").json()["instance_count"] == 2

    got = client.retrieve_instance(study, series, sent[0].SOPInstanceUID)
    assert hashlib.sha256(got.PixelData).digest() == hashlib.sha256(sent[0].PixelData).digest()
    assert str(got.PatientName) == "Smith^Rex"  # coerced from the order like a C-STORE
    assert got.PatientBreedDescription == "Labrador Retriever"
    assert answer.ReferencedSOPSequence[0].WarningReason == 0xB000


def test_stow_answers_per_part_and_refuses_bad_bodies(client: TestClient, hub: Hub) -> None:
    study = generate_uid()
    good = sf.instance(study_uid=study)
    other = sf.instance()

    # One stored, one not DICOM: 202 with both in the answer.
    r = client.post(
        "/dicomweb/studies",
        content=_body(_part10(good), b"this is not a DICOM file"),
        headers={"Content-Type": RELATED},
    )
    assert r.status_code == 202, r.text
    assert r.headers["content-type"] == "application/dicom+json"
    doc = r.json()
    (stored,) = doc["00081199"]["Value"]
    assert stored["00081155"]["Value"] == [good.SOPInstanceUID]
    assert stored["00081190"]["Value"][0].endswith(
        f"/dicomweb/studies/{study}/series/{good.SeriesInstanceUID}/instances/{good.SOPInstanceUID}"
    )
    (failed,) = doc["00081198"]["Value"]
    assert failed["00081197"]["Value"] == [0xC000]
    assert "not a DICOM file" in failed["00000902"]["Value"][0]
    assert client.get(f"/api/v1/studies/{study}").json()["instance_count"] == 1

    # Into a named study: an instance of another study is refused (none stored: 409).
    # The type without quotes and a quoted boundary are accepted.
    r = client.post(
        f"/dicomweb/studies/{study}",
        content=_body(_part10(other), boundary="x y"),
        headers={"Content-Type": 'multipart/related; type=application/dicom; boundary="x y"'},
    )
    assert r.status_code == 409, r.text
    (failed,) = r.json()["00081198"]["Value"]
    assert failed["00081197"]["Value"] == [0xA900]
    assert other.StudyInstanceUID in failed["00000902"]["Value"][0]
    assert client.get(f"/api/v1/studies/{other.StudyInstanceUID}").status_code == 404

    # A data set whose UIDs disagree with its file meta.
    liar = sf.instance()
    raw = bytearray(_part10(liar))
    at = raw.index(liar.SOPInstanceUID.encode(), raw.index(b"DICM") + 100)
    raw[at : at + 3] = b"9.9"
    r = client.post(
        "/dicomweb/studies", content=_body(bytes(raw)), headers={"Content-Type": RELATED}
    )
    assert r.status_code == 409 and r.json()["00081198"]["Value"][0]["00081197"]["Value"] == [
        0xA900
    ]

    refusals = [
        ({"Content-Type": "application/json"}, b"{}", 415, "multipart/related"),
        ({"Content-Type": "multipart/related; type=application/dicom+json; boundary=b"}, b"", 415,
         "application/dicom"),
        ({"Content-Type": "multipart/related; type=application/dicom"}, _body(b"x"), 400,
         "boundary"),
        ({"Content-Type": RELATED}, b"garbage without any boundary", 400, "boundary"),
        ({"Content-Type": RELATED}, _body(_part10(other))[:-20], 400, "closing boundary"),
        ({"Content-Type": RELATED}, f"--{BOUNDARY}\r\nno blank line".encode() + b"\r\n--"
         + BOUNDARY.encode() + b"--", 400, "blank line"),
        ({"Content-Type": RELATED}, f"--{BOUNDARY}--\r\n".encode(), 400, "no parts"),
    ]  # fmt: skip
    for headers, content, status, words in refusals:
        r = client.post("/dicomweb/studies", content=content, headers=headers)
        assert r.status_code == status, (headers, content[:40], r.text)
        assert words in r.json()["detail"], r.json()
    assert client.get(f"/api/v1/studies/{other.StudyInstanceUID}").status_code == 404
    r = client.post("/dicomweb/studies/1.2.abc", content=b"", headers={"Content-Type": RELATED})
    assert r.status_code == 400

    # A share link is read-only.
    with hub.db.session() as s:
        _, token = links.create_share(s, study, 1, "test")
    r = TestClient(client.app).post(
        f"/shared/{token}/dicomweb/studies", content=_body(_part10(other)),
        headers={"Content-Type": RELATED},
    )  # fmt: skip
    assert r.status_code == 403
