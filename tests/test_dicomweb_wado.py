"""WADO-RS: instances, metadata, frames, bulk data and rendered pictures.

dicomweb-client against a served hub (instances sent by C-STORE), then the
bad inputs and the decoders' coverage through the app on both databases.
"""

from __future__ import annotations

import hashlib
import io
import logging
import struct
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import HTTP
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest
from dicomweb_client.api import DICOMwebClient
from fastapi.testclient import TestClient
from PIL import Image
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.uid import MPEG4HP41, ExplicitVRLittleEndian, RLELossless, generate_uid
from pynetdicom import AE

from hub.archive import ingest, render, thumbnails
from hub.context import Hub
from hub.services import links
from tests import study_factory as sf
from tests.harness import ServedHub

ELE = str(ExplicitVRLittleEndian)


def _stored_file(data_dir: Path, study: str, series: str, sop: str) -> Path:
    return data_dir / "studies" / study / series / f"{sop}.dcm"


def test_dicomweb_client_retrieves_from_a_served_hub(served_hub: ServedHub) -> None:
    study, series = generate_uid(), generate_uid()
    native = sf.instance(study_uid=study, series_uid=series, rows=16)
    rle = sf.instance(study_uid=study, series_uid=series, rows=16, InstanceNumber="2")
    rle.compress(RLELossless)
    ae = AE(ae_title="DX_ROOM1")
    ae.add_requested_context(sf.DX, ExplicitVRLittleEndian)
    ae.add_requested_context(sf.DX, RLELossless)
    assoc = ae.associate("127.0.0.1", served_hub.dicom, ae_title=served_hub.ae_title)
    assert assoc.is_established
    try:
        assert [int(assoc.send_c_store(d).Status) for d in (native, rle)] == [0, 0]
    finally:
        assoc.release()

    client = DICOMwebClient(
        f"{served_hub.url}/dicomweb", headers={"Authorization": f"Bearer {served_hub.key}"}
    )
    data = served_hub.data_dir
    # Byte-identical to what the hub stored, in the stored transfer syntax.
    for ds in (native, rle):
        got = client.retrieve_instance(study, series, ds.SOPInstanceUID)
        assert got.file_meta.TransferSyntaxUID == ds.file_meta.TransferSyntaxUID
        assert hashlib.sha256(got.PixelData).digest() == hashlib.sha256(ds.PixelData).digest()
    raw = client._http_get(  # the wire bytes: the stored file itself
        f"{served_hub.url}/dicomweb/studies/{study}/series/{series}/instances/{rle.SOPInstanceUID}",
        headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'},
    )
    stored = _stored_file(data, study, series, rle.SOPInstanceUID).read_bytes()
    assert hashlib.sha256(stored).hexdigest() in {
        hashlib.sha256(p).hexdigest() for p in client._decode_multipart_message(raw, False)
    }

    metadata = client.retrieve_series_metadata(study, series)
    assert {m["00080018"]["Value"][0] for m in metadata} == {
        native.SOPInstanceUID,
        rle.SOPInstanceUID,
    }
    pixel = metadata[0]["7FE00010"]
    # dicomweb-client sends Host without the port; the URI follows the request's Host.
    assert urlsplit(pixel["BulkDataURI"]).path.startswith(f"/dicomweb/studies/{study}/series/")

    native_frames = client.retrieve_instance_frames(
        study, series, native.SOPInstanceUID, [1], media_types=("application/octet-stream",)
    )
    assert native_frames == [native.PixelData]
    compressed = client.retrieve_instance_frames(
        study, series, rle.SOPInstanceUID, [1], media_types=(("application/octet-stream", "*"),)
    )
    assert compressed == list(generate_frames(rle.PixelData, number_of_frames=1))
    decoded = client.retrieve_instance_frames(
        study, series, rle.SOPInstanceUID, [1], media_types=("application/octet-stream",)
    )
    assert decoded == [native.pixel_array.astype("<u2").tobytes()]  # lossless: same values

    jpeg = client.retrieve_instance_rendered(study, series, native.SOPInstanceUID)
    assert Image.open(io.BytesIO(jpeg)).size == (16, 16)


def _store_file(hub: Hub, name: str) -> tuple[str, str, str]:
    """Store one of pydicom's test files in its own transfer syntax, under new UIDs
    (several of those files share theirs)."""
    ds = dcmread(_testfile(name))
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    raw = out.getvalue()
    (group_length,) = struct.unpack_from("<I", raw, 140)
    ingest.store_instance(
        hub,
        ingest.Incoming(
            data=raw[144 + group_length :],
            sop_class_uid=ds.SOPClassUID,
            sop_instance_uid=ds.SOPInstanceUID,
            transfer_syntax_uid=ds.file_meta.TransferSyntaxUID,
        ),
    )
    return ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID


def _store_ds(hub: Hub, ds: Dataset, syntax: str) -> tuple[str, str, str]:
    ingest.store_instance(
        hub,
        ingest.Incoming(sf.encode(ds), ds.SOPClassUID, ds.SOPInstanceUID, syntax),
    )
    return ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID


def _url(ids: tuple[str, str, str], tail: str = "") -> str:
    study, series, sop = ids
    return f"/dicomweb/studies/{study}/series/{series}/instances/{sop}{tail}"


def _parts(r: httpx.Response) -> list[bytes]:
    """The parts of a multipart/related answer, parsed by the email package's rules."""
    head = f"Content-Type: {r.headers['content-type']}\r\n\r\n".encode()
    msg = BytesParser(policy=HTTP).parsebytes(head + r.content)
    assert isinstance(msg, EmailMessage)
    return [bytes(p.get_payload(decode=True)) for p in msg.iter_parts()]


def _testfile(name: str) -> str:
    found = get_testdata_file(name, download=False)
    assert isinstance(found, str), name
    return found


def test_frames_metadata_and_refusals(client: TestClient, hub: Hub) -> None:
    mr = _store_file(hub, "MR_small.dcm")
    us = _store_file(hub, "examples_ybr_color.dcm")  # JPEG baseline, 30 frames
    dose = _store_file(hub, "rtdose_rle.dcm")  # RLE, 15 frames
    star = {"Accept": "multipart/related; type=application/octet-stream; transfer-syntax=*"}

    r = client.get(_url(us, "/frames/1,30"), headers=star)
    assert r.status_code == 200, r.text
    assert "transfer-syntax=1.2.840.10008.1.2.4.50" in r.text[:400]
    stored = dcmread(_testfile("examples_ybr_color.dcm"))
    every = list(generate_frames(stored.PixelData, number_of_frames=30))
    assert _parts(r) == [every[0], every[29]]
    r = client.get(_url(us, "/frames/2"), headers={"Accept": "multipart/related; type=image/jpeg"})
    assert r.status_code == 200 and _parts(r) == [every[1]]
    everyone = ",".join(str(n) for n in range(30, 0, -1))  # streamed in batches
    assert _parts(client.get(_url(us, f"/frames/{everyone}"), headers=star)) == every[::-1]
    # Several fragments a frame, found through the Basic Offset Table.
    split = dcmread(_testfile("examples_ybr_color.dcm"))
    split.SOPInstanceUID = split.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    split.PixelData = encapsulate(every, fragments_per_frame=3, has_bot=True)
    split_ids = _store_ds(hub, split, split.file_meta.TransferSyntaxUID)
    assert _parts(client.get(_url(split_ids, "/frames/7,30"), headers=star)) == [
        every[6],
        every[29],
    ]

    r = client.get(_url(dose, "/frames/15"))  # no Accept: native bytes, decoded
    ds = dcmread(_testfile("rtdose_rle.dcm"))
    assert _parts(r) == [ds.pixel_array[14].astype("<u4").tobytes()]
    r = client.get(_url(mr, "/frames/1"), headers=star)
    assert _parts(r) == [dcmread(_testfile("MR_small.dcm")).PixelData]

    r = client.get(_url(dose, "/frames/16"))
    assert r.status_code == 404 and "frame 16" in r.json()["detail"]
    for bad in ("0", "1,x", ""):
        assert client.get(_url(dose, f"/frames/{bad}")).status_code in (400, 404)
    r = client.get(_url(mr, "/frames/1"), headers={"Accept": "multipart/related; type=image/png"})
    assert r.status_code == 406 and "application/octet-stream" in r.json()["detail"]

    r = client.get(f"/dicomweb/studies/{mr[0]}/series/{mr[1]}/instances/1.2.x")
    assert r.status_code == 400 and "not a DICOM UID" in r.json()["detail"]
    r = client.get(f"/dicomweb/studies/{'1' * 65}/metadata")
    assert r.status_code == 400
    r = client.get(f"/dicomweb/studies/{generate_uid()}")
    assert r.status_code == 404 and "does not exist" in r.json()["detail"]
    r = client.get(
        _url(mr),
        headers={
            "Accept": 'multipart/related; type="application/dicom"; '
            "transfer-syntax=1.2.840.10008.1.2.4.50"
        },
    )
    assert r.status_code == 406 and "available as stored" in r.json()["detail"]

    # The default transfer syntax for application/dicom: the JPEG one decompressed.
    r = client.get(_url(us), headers={"Accept": "multipart/related; type=application/dicom"})
    (part,) = _parts(r)
    got = dcmread(io.BytesIO(part))
    assert got.file_meta.TransferSyntaxUID == ELE and got.pixel_array.shape == (30, 240, 320, 3)

    r = client.get(f"/dicomweb/studies/{us[0]}/metadata")
    assert r.status_code == 200 and r.headers["content-type"] == "application/dicom+json"
    (doc,) = r.json()
    assert doc["00280008"]["Value"] == [30] and doc["00083002"]["Value"] == [
        stored.file_meta.TransferSyntaxUID
    ]
    uri = doc["7FE00010"]["BulkDataURI"]
    assert uri == f"http://testserver{_url(us)}/bulkdata/7FE00010"
    bulk = client.get(uri.removeprefix("http://testserver"))
    assert _parts(bulk) == [stored.PixelData]
    assert client.get(_url(us, "/bulkdata/00100010")).status_code == 404
    assert client.get(_url(us, "/bulkdata/zz")).status_code == 400

    # A share opens its one study: URIs carry its prefix, another study is not there.
    with hub.db.session() as s:
        _, token = links.create_share(s, us[0], 1, "test")
    anon = TestClient(client.app)
    r = anon.get(f"/shared/{token}/dicomweb/studies/{us[0]}/series/{us[1]}/metadata")
    assert r.status_code == 200
    assert f"/shared/{token}/dicomweb/studies/{us[0]}" in r.json()[0]["7FE00010"]["BulkDataURI"]
    assert anon.get(f"/shared/{token}/dicomweb/studies/{mr[0]}/metadata").status_code == 404
    assert anon.get(f"/dicomweb/studies/{mr[0]}/metadata").status_code == 401

    # A file the disk lost: 404 naming it, not a 500.
    _stored_file(hub.settings.data_dir, *mr).unlink()
    for tail in ("", "/frames/1", "/rendered", "/bulkdata/7FE00010"):
        r = client.get(_url(mr, tail))
        assert r.status_code == 404 and "missing" in r.json()["detail"], tail


def test_rendered_pictures_and_placeholders(
    client: TestClient, hub: Hub, caplog: pytest.LogCaptureFixture
) -> None:
    cases = {
        name: _store_file(hub, name)
        for name in (
            "examples_palette.dcm",  # PALETTE COLOR
            "MR_small_jpeg_ls_lossless.dcm",
            "examples_jpeg2k.dcm",
            "SC_rgb_rle.dcm",
            "JPGExtended.dcm",  # 12-bit JPEG
            "emri_small_jpeg_2k_lossless.dcm"
            if get_testdata_file("emri_small_jpeg_2k_lossless.dcm", download=False)
            else "MR_small_RLE.dcm",
        )
    }
    for name, ids in cases.items():
        r = client.get(_url(ids, "/rendered"))
        assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg", name
        assert "warning" not in r.headers, (name, r.headers.get("warning"))
        Image.open(io.BytesIO(r.content)).load()

    mr = cases["MR_small_jpeg_ls_lossless.dcm"]
    r = client.get(
        _url(mr, "/rendered"),
        params={"window": "600,800,sigmoid", "viewport": "128,128"},
        headers={"Accept": "image/png"},
    )
    png = Image.open(io.BytesIO(r.content))
    assert r.headers["content-type"] == "image/png" and png.size == (128, 128)
    r = client.get(f"/dicomweb/studies/{mr[0]}/thumbnail", params={"viewport": "32,16"})
    assert Image.open(io.BytesIO(r.content)).size == (16, 16)
    for query in ({"window": "1,0"}, {"window": "a,b"}, {"viewport": "0,5"}, {"quality": "x"}):
        r = client.get(_url(mr, "/rendered"), params=query)
        assert r.status_code == 400 and r.json()["detail"], query
    assert client.get(_url(mr, "/frames/2/rendered")).status_code == 404
    assert client.get(_url(mr, "/rendered"), headers={"Accept": "text/html"}).status_code == 406

    # A file the decoders cannot read: a placeholder that says why, decoded and
    # logged once however often it is viewed.
    bad = _store_file(hub, "JPEG-lossy.dcm")
    caplog.set_level(logging.WARNING, logger="hub.archive.render")
    for _ in range(2):
        r = client.get(_url(bad, "/rendered"))
        assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
        assert r.headers["warning"].startswith('299 vethub "cannot decode: ')
    assert [rec.message for rec in caplog.records].count("image cannot be rendered") == 1
    assert render.reason_path(hub.settings.data_dir, bad[2]).exists()
    r = client.get(_url(bad), headers={"Accept": "multipart/related; type=application/dicom"})
    assert r.status_code == 406 and "transfer-syntax=*" in r.json()["detail"]

    # Rescale, the file's window, MONOCHROME1 inverted (PNG: exact values).
    grey = np.zeros((8, 8), "<u2")
    grey[:, 4:] = 1000  # stored 1000 = 1000 HU with slope 2, intercept -1000
    for photometric, left, right in (("MONOCHROME2", 0, 255), ("MONOCHROME1", 255, 0)):
        ds = sf.instance(
            PhotometricInterpretation=photometric,
            RescaleSlope="2",
            RescaleIntercept="-1000",
            WindowCenter="500",
            WindowWidth="1000",
        )
        ds.PixelData = grey.tobytes()
        r = client.get(_url(_store_ds(hub, ds, ELE), "/rendered"), headers={"Accept": "image/png"})
        shown = np.asarray(Image.open(io.BytesIO(r.content)))
        assert (shown[0, 0], shown[0, 7]) == (left, right), photometric

    # Not still images: a video's stream as stored, a PDF as a PDF (OHIF plays
    # and shows them from /rendered), bulk data single-part when asked so.
    mp4 = b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 40
    video = sf.instance(NumberOfFrames=25)
    video.PixelData = encapsulate([mp4])
    video["PixelData"].VR, video["PixelData"].is_undefined_length = "OB", True
    video_ids = _store_ds(hub, video, MPEG4HP41)
    r = client.get(_url(video_ids, "/rendered"))
    assert r.headers["content-type"] == "video/mp4" and r.content == mp4
    pdf_bytes = b"%PDF-1.4 a referral letter %%EOF\r\n"  # even: no padding
    pdf = sf.instance(sop_class="1.2.840.10008.5.1.4.1.1.104.1", EncapsulatedDocument=pdf_bytes)
    del pdf.PixelData
    pdf_ids = _store_ds(hub, pdf, ExplicitVRLittleEndian)
    r = client.get(_url(pdf_ids, "/rendered"))
    assert r.headers["content-type"] == "application/pdf" and r.content == pdf_bytes
    r = client.get(
        _url(pdf_ids, "/bulkdata/00420011"), headers={"Accept": "application/octet-stream"}
    )
    assert r.headers["content-type"] == "application/octet-stream" and r.content == pdf_bytes

    # The summary page's previews use the same renderer.
    stored = _stored_file(hub.settings.data_dir, *cases["examples_palette.dcm"])
    png_bytes = thumbnails.thumbnail(hub.settings.data_dir, stored, "palette-preview")
    assert png_bytes is not None and Image.open(io.BytesIO(png_bytes)).mode == "RGB"
