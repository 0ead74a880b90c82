"""Share links by mode (docs/interface.md "Share links (v1.1)"): the owner page, the
use counts, the streamed download and the 410 page of a closed link, on both databases."""

from __future__ import annotations

import html
import io
import re
import zipfile
from datetime import date
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import select

from hub.api.plain import describe
from hub.archive import bundle
from hub.context import Hub
from hub.models import AuditEvent, Order, Study
from tests import study_factory as sf
from tests.harness import key_for
from tests.study_factory import place

ANON = {"Authorization": ""}


def _share(client: TestClient, uid: str, vet: dict[str, str], **body: object) -> tuple[dict, str]:
    r = client.post(f"/api/v1/studies/{uid}/shares", json=body, headers=vet)
    assert r.status_code == 201, r.text
    return r.json(), "/shared/" + r.json()["url"].rsplit("/", 1)[-1]


def _audit(hub: Hub, action: str) -> list[AuditEvent]:
    with hub.db.read_session() as s:
        stmt = select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.id)
        return list(s.scalars(stmt))


def test_modes_are_checked_and_listed_with_their_use(hub: Hub, client: TestClient) -> None:
    uid, sops = sf.stored_series(hub, place(client), n=1)
    vet = {"Authorization": f"Bearer {key_for(hub, 'vet')}"}
    plain, _ = _share(client, uid, vet)
    assert (plain["mode"], plain["allow_download"]) == ("referral", False)
    bad = client.post(f"/api/v1/studies/{uid}/shares", json={"mode": "boss"}, headers=vet)
    assert bad.status_code == 422 and "mode" in bad.json()["detail"]
    bad = client.post(
        f"/api/v1/studies/{uid}/shares", json={"allow_download": "maybe"}, headers=vet
    )
    assert bad.status_code == 422 and "allow_download" in bad.json()["detail"]

    made, path = _share(client, uid, vet, mode="owner", allow_download=True, note="Mrs Smith")
    assert (made["mode"], made["allow_download"]) == ("owner", True)
    assert client.get(path, headers=ANON).status_code == 200
    src = html.unescape(re.findall(r'<img src="([^"]+)"', client.get(path, headers=ANON).text)[0])
    assert client.get(src, headers=ANON).status_code == 200  # an image is not an opening
    assert client.get(f"{path}/instances/{sops[0]}/preview.png", headers=ANON).status_code == 200

    listed = {x["id"]: x for x in client.get(f"/api/v1/studies/{uid}/shares", headers=vet).json()}
    assert listed[plain["id"]]["use_count"] == 0 and listed[plain["id"]]["last_used_at"] is None
    owner = listed[made["id"]]
    assert owner["use_count"] == 2 and owner["last_used_at"] is not None
    assert (owner["mode"], owner["allow_download"], owner["active"]) == ("owner", True, True)
    created = _audit(hub, "share")[-1]
    assert created.detail and created.detail["mode"] == "owner"
    views = [e.detail or {} for e in _audit(hub, "view") if e.actor == f"share:{made['id']}"]
    assert [v["via"] for v in views] == ["share", "share", "dicomweb"]  # pages, then images
    assert views[0]["mode"] == "owner"


def test_owner_page_is_plain_words_and_big_images(hub: Hub, client: TestClient) -> None:
    uid, _ = sf.stored_series(hub, place(client), n=3)
    vet = {"Authorization": f"Bearer {key_for(hub, 'vet')}"}
    _, path = _share(client, uid, vet, mode="owner")
    page = client.get(path, headers=ANON)
    assert page.status_code == 200
    text = page.text
    assert "Rex, a 7-year-old Labrador Retriever (dog)." in text
    assert "X-ray (Thorax, 2 views), 27 November 2026." in text
    assert "Requested by Jane Doe." in text
    assert "3 pictures: swipe" in text
    assert text.count('class="shot"') == 3
    srcs = re.findall(r'<img src="([^"]+)"', text)
    assert len(srcs) == 3 and all("/dicomweb/studies/" in x and "/rendered?" in x for x in srcs)
    picture = client.get(html.unescape(srcs[2]), headers=ANON)  # the share's own DICOMweb
    assert picture.status_code == 200 and picture.content[:3] == b"\xff\xd8\xff"
    assert "scroll-snap-type:x mandatory" in text
    for tool_word in ("Study UID", "Accession", "<script", "Download"):
        assert tool_word not in text  # no jargon, no tools, no download without allow_download
    csp = page.headers["content-security-policy"]
    assert "script-src 'none'" in csp and "frame-ancestors 'none'" in csp
    assert page.headers["cache-control"] == "no-store"
    assert client.get(f"{path}/study.zip", headers=ANON).status_code == 403

    _, rpath = _share(client, uid, vet)
    opened = client.get(rpath, headers=ANON)
    assert opened.status_code == 200 and "study.zip" not in opened.text


def test_download_is_the_dicom_files_jpegs_and_a_readme(hub: Hub, client: TestClient) -> None:
    uid, _ = sf.stored_series(hub, place(client), n=2)
    vet = {"Authorization": f"Bearer {key_for(hub, 'vet')}"}
    made, path = _share(client, uid, vet, mode="owner", allow_download=True)
    assert f"{path}/study.zip" in client.get(path, headers=ANON).text
    r = client.get(f"{path}/study.zip", headers=ANON)
    assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
    assert r.headers["content-disposition"] == 'attachment; filename="study-Rex.zip"'
    assert r.headers["cache-control"] == "no-store"
    zf = zipfile.ZipFile(io.BytesIO(r.content))
    assert zf.testzip() is None
    names = zf.namelist()
    assert names[0] == "README.txt"
    dicoms = [n for n in names if n.startswith("DICOM/")]
    jpegs = [n for n in names if n.startswith("JPEG/")]
    assert dicoms == ["DICOM/01 DX/IMG0001.dcm", "DICOM/01 DX/IMG0002.dcm"]
    assert jpegs == ["JPEG/01 DX/IMG0001.jpg", "JPEG/01 DX/IMG0002.jpg"]
    stored = sorted(Path(p).read_bytes() for p in sf.paths(hub, uid))
    assert sorted(zf.read(n) for n in dicoms) == stored  # the files as archived, unchanged
    assert all(zf.read(n)[:3] == b"\xff\xd8\xff" for n in jpegs)
    readme = zf.read("README.txt").decode()
    assert "Rex, a 7-year-old Labrador Retriever (dog)." in readme
    assert "DICOM viewer" in readme and "JPEG/" in readme and "2 files" in readme
    export = _audit(hub, "export")[-1]
    assert export.actor == f"share:{made['id']}" and export.detail
    assert export.detail["via"] == "share" and export.detail["files"] == 2

    _, referral = _share(client, uid, vet, allow_download=True)  # the viewer offers it too
    assert f"{referral}/study.zip" in client.get(referral, headers=ANON).text
    assert client.get(f"{referral}/study.zip", headers=ANON).status_code == 200

    staff = client.get(f"/viewer/studies/{uid}/dicom.zip", headers=vet)
    staff_zip = zipfile.ZipFile(io.BytesIO(staff.content))
    assert [n for n in staff_zip.namelist() if not n.startswith("DICOM/")] == ["README.txt"]
    assert sorted(staff_zip.read(n) for n in staff_zip.namelist()[1:]) == stored


def test_a_closed_link_is_410_and_an_unknown_one_404(hub: Hub, client: TestClient) -> None:
    uid, sops = sf.stored_series(hub, place(client), n=1)
    vet = {"Authorization": f"Bearer {key_for(hub, 'vet')}"}
    made, path = _share(client, uid, vet, mode="owner", allow_download=True)
    assert client.delete(f"/api/v1/studies/{uid}/shares/{made['id']}", headers=vet).status_code
    gone = client.get(path, headers=ANON)
    assert gone.status_code == 410
    assert "withdrawn by the clinic" in gone.text and "ask the clinic" in gone.text
    assert "Rex" not in gone.text
    assert client.get(f"{path}/study.zip", headers=ANON).status_code == 410
    img = client.get(f"{path}/instances/{sops[0]}/preview.png", headers=ANON)
    assert img.status_code == 410 and not img.content
    refused = _audit(hub, "share.refused")
    assert [e.detail["reason"] for e in refused if e.detail] == ["revoked", "revoked"]

    _, short = _share(client, uid, vet, expires_in_hours=0.0000001)
    expired = client.get(short, headers=ANON)
    assert expired.status_code == 410 and "This link has expired" in expired.text
    assert _audit(hub, "share.refused")[-1].detail == {
        "share_id": made["id"] + 1,
        "reason": "expired",
    }

    before = len(_audit(hub, "share.refused"))
    for unknown in (path + "x", "/shared/made-up", f"{path}x/study.zip"):
        r = client.get(unknown, headers=ANON)
        assert r.status_code == 404 and "Rex" not in r.text
    assert client.get(f"{path}x/instances/{sops[0]}/preview.png").status_code == 404
    assert len(_audit(hub, "share.refused")) == before  # made-up tokens are not written


def test_a_zip_is_sent_in_pieces_of_one_chunk(tmp_path: Path) -> None:
    """Memory stays flat: no piece is much bigger than a chunk, however big the files."""
    files = []
    for n in range(3):
        path = tmp_path / f"{n}.dcm"
        path.write_bytes(bytes([n]) * (bundle.CHUNK * 4 + 123))
        files.append(path)
    members = bundle.study_members(
        [bundle.SeriesFiles("01 CT", files), bundle.SeriesFiles("02 CT", [tmp_path / "gone"])],
        "read me",
        jpegs=False,
    )
    pieces = list(bundle.stream(members))
    assert max(len(p) for p in pieces) <= bundle.CHUNK + 1024
    assert len(pieces) > 12
    zf = zipfile.ZipFile(io.BytesIO(b"".join(pieces)))
    assert zf.testzip() is None
    assert zf.namelist() == ["README.txt"] + [f"DICOM/01 CT/IMG000{n}.dcm" for n in (1, 2, 3)]
    assert [zf.read(f"DICOM/01 CT/IMG000{n + 1}.dcm") for n in range(3)] == [
        f.read_bytes() for f in files
    ]


def test_the_plain_words_for_ages_species_and_unmatched_studies() -> None:
    study = Study(study_instance_uid="1.2", patient_name="Smith^Rex", study_date="20260303")
    assert describe(None, study) == ("Rex", ["Rex.", "Images, 3 March 2026."])
    study.modality, study.study_description = "US", "Abdomen"
    assert describe(None, study)[1][1] == "Ultrasound (Abdomen), 3 March 2026."

    def animal(born: date | None, species: str | None, breed: str | None = None) -> str:
        order = Order(
            patient_name="Mia",
            patient_birth_date=born,
            species_description=species,
            breed=breed,
            modality="DX",
        )
        return describe(order, study)[1][0]

    assert animal(date(2018, 3, 3), "Felis catus") == "Mia, an 8-year-old cat."
    assert animal(date(2015, 3, 4), "Felis catus", "Maine Coon") == (
        "Mia, a 10-year-old Maine Coon (cat)."
    )
    assert animal(date(2025, 1, 10), "Oryctolagus cuniculus") == "Mia, a 13-month-old rabbit."
    assert animal(date(2025, 3, 3), "Bearded dragon") == "Mia, a 1-year-old bearded dragon."
    assert animal(date(2025, 4, 1), None) == "Mia, an 11-month-old pet."
    assert animal(None, "Cavia porcellus") == "Mia, a guinea pig."
    assert animal(date(2026, 3, 1), "Canis lupus familiaris", "Akita") == (
        "Mia, a newborn Akita (dog)."
    )
