"""DICOMweb STOW-RS (PS3.18 10.5): instances POSTed as multipart/related
application/dicom parts, each stored through the same path as a C-STORE
(``hub.archive.ingest.store_instance``: checked, matched, coerced, written
durably and indexed before the answer, a faithful resend deduplicated).

The answer is the PS3.18 store response in DICOM JSON: what was stored with
its RetrieveURL, what failed with a DIMSE-style FailureReason (and a sentence
in ErrorComment). 200 when all were stored, 202 when some failed, 409 when
none was; a body that is not multipart/related application/dicom is 415, a
malformed one 400, both before anything is stored.
"""

from __future__ import annotations

import errno
import logging
import struct
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from hub.archive import ingest
from hub.context import Hub
from hub.dicomweb import multipart
from hub.dicomweb.access import Access, storer
from hub.dicomweb.wado import DICOM_JSON, base_url, check_uid, instance_url
from hub.errors import Invalid

log = logging.getLogger(__name__)
router = APIRouter(tags=["dicomweb"])

CALLING_AE = "DICOMWEB"  # in the file meta and index, where a C-STORE has the device's AE
# FailureReason values (PS3.18 Table 10.5.3-2, PS3.4 Annex GG).
PROCESSING_FAILURE = 0x0110
OUT_OF_RESOURCES = 0xA700
CLASS_INSTANCE_CONFLICT = 0xA900
CANNOT_UNDERSTAND = 0xC000
COERCED = 0xB000  # WarningReason: data elements were corrected (matching an order)


@dataclass
class Outcome:
    stored: list[dict[str, Any]] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)
    studies: set[str] = field(default_factory=set)


class NotPart10(ValueError):
    pass


def _meta(data: bytes) -> tuple[int, dict[int, str]]:
    """Where the data set starts in a DICOM file, and its meta group's UIDs.

    The file may come with the 128-byte preamble and ``DICM`` (PS3.10) or, as
    some clients (dicomweb-client) send it, start with the meta group itself.
    """
    if data[128:132] == b"DICM":
        pos = 132
    elif data[:4] == b"DICM":
        pos = 4
    else:
        pos = 0
    if data[pos : pos + 2] != b"\x02\x00":
        raise NotPart10("the part is not a DICOM file (no file meta group)")
    values: dict[int, str] = {}
    while pos + 8 <= len(data):
        group, elem = struct.unpack_from("<HH", data, pos)
        if group != 2:
            break
        vr = data[pos + 4 : pos + 6]
        if vr in (b"OB", b"OW", b"UN", b"SQ", b"UT", b"UC", b"UR"):
            if pos + 12 > len(data):
                break
            (size,) = struct.unpack_from("<I", data, pos + 8)
            at = pos + 12
        else:
            (size,) = struct.unpack_from("<H", data, pos + 6)
            at = pos + 8
        if at + size > len(data):
            raise NotPart10("the part's file meta group runs past its end")
        if elem in (0x0002, 0x0003, 0x0010):
            values[elem] = data[at : at + size].decode("ascii", "replace").rstrip("\x00 ")
        pos = at + size
    if not values.get(0x0010):
        raise NotPart10("the part's file meta group has no transfer syntax")
    return pos, values


def _item(sop_class: str, sop_instance: str) -> dict[str, Any]:
    item: dict[str, Any] = {}
    if sop_class:
        item["00081150"] = {"vr": "UI", "Value": [sop_class]}
    if sop_instance:
        item["00081155"] = {"vr": "UI", "Value": [sop_instance]}
    return item


def _fail(out: Outcome, sop_class: str, sop: str, reason: int, text: str) -> None:
    item = _item(sop_class, sop)
    item["00081197"] = {"vr": "US", "Value": [reason]}
    item["00000902"] = {"vr": "LO", "Value": [text[:1024]]}
    out.failed.append(item)


def _store_part(
    hub: Hub, part: multipart.Part, path_study: str | None, base: str, out: Outcome
) -> None:
    kind = part.content_type
    if kind is not None and kind.type not in ("application/dicom", "application/octet-stream"):
        _fail(
            out, "", "", CANNOT_UNDERSTAND, f"a part of type {kind.type} is not application/dicom"
        )
        return
    try:
        start, meta = _meta(part.content)
    except NotPart10 as exc:
        _fail(out, "", "", CANNOT_UNDERSTAND, str(exc))
        return
    sop_class, sop = meta.get(0x0002, ""), meta.get(0x0003, "")
    data = part.content[start:]
    inc = ingest.Incoming(
        data=data,
        sop_class_uid=sop_class,
        sop_instance_uid=sop,
        transfer_syntax_uid=meta[0x0010],
        calling_ae=CALLING_AE,
    )
    limit = hub.settings.dicom_max_inflated_mb << 20
    try:
        header = ingest.read(data, 0, inc, max_inflated=limit)
        if path_study is not None and header.study_instance_uid != path_study:
            _fail(
                out,
                sop_class,
                sop,
                CLASS_INSTANCE_CONFLICT,
                f"the instance belongs to study {header.study_instance_uid}, "
                f"not to {path_study} named in the request",
            )
            return
        stored = ingest.store_instance(hub, inc)
    except ingest.TooLarge as exc:
        _fail(out, sop_class, sop, OUT_OF_RESOURCES, str(exc))
        return
    except ingest.Unreadable as exc:
        _fail(out, sop_class, sop, CANNOT_UNDERSTAND, str(exc))
        return
    except Invalid as exc:
        _fail(out, sop_class, sop, CLASS_INSTANCE_CONFLICT, str(exc))
        return
    except OSError as exc:
        what = "disk full" if exc.errno == errno.ENOSPC else f"storage error: {exc}"
        log.error("could not write instance", extra={"detail": what, "sop_instance_uid": sop})
        _fail(out, sop_class, sop, OUT_OF_RESOURCES, what)
        return
    except Exception:
        log.exception("could not store instance", extra={"sop_instance_uid": sop})
        _fail(out, sop_class, sop, PROCESSING_FAILURE, "internal error; see the hub's log")
        return
    item = _item(sop_class, sop)
    url = instance_url(base, stored.study_instance_uid, header.series_instance_uid, sop)
    item["00081190"] = {"vr": "UR", "Value": [url]}
    if stored.coerced:
        item["00081196"] = {"vr": "US", "Value": [COERCED]}
    out.stored.append(item)
    out.studies.add(stored.study_instance_uid)


def _store_all(hub: Hub, parts: list[multipart.Part], path_study: str | None, base: str) -> Outcome:
    out = Outcome()
    for part in parts:
        _store_part(hub, part, path_study, base, out)
    return out


def _boundary(request: Request) -> str:
    header = request.headers.get("content-type", "")
    kind = multipart.media_type(header) if header else None
    if kind is None or kind.type != "multipart/related":
        raise HTTPException(
            415,
            'STOW-RS takes multipart/related; type="application/dicom" (got '
            f"{kind.type if kind else 'no Content-Type'})",
        )
    part_type = (kind.param("type") or "application/dicom").lower()
    if part_type != "application/dicom":
        raise HTTPException(415, f"only application/dicom parts are accepted, not {part_type}")
    boundary = kind.param("boundary")
    if not boundary:
        raise HTTPException(400, "the multipart Content-Type has no boundary")
    return boundary


async def _stow(request: Request, path_study: str | None) -> JSONResponse:
    if path_study is not None:
        check_uid(path_study, "the study UID")
    boundary = _boundary(request)
    body = await request.body()
    try:
        parts = multipart.parse(body, boundary)
    except multipart.MultipartError as exc:
        raise HTTPException(400, f"malformed multipart body: {exc}") from None
    if not parts:
        raise HTTPException(400, "the multipart body has no parts")
    hub: Hub = request.app.state.hub
    base = base_url(request)
    out = await run_in_threadpool(_store_all, hub, parts, path_study, base)
    answer: dict[str, Any] = {}
    study = path_study or (next(iter(out.studies)) if len(out.studies) == 1 else None)
    if study is not None:
        answer["00081190"] = {"vr": "UR", "Value": [f"{base}/studies/{study}"]}
    if out.failed:
        answer["00081198"] = {"vr": "SQ", "Value": out.failed}
    if out.stored:
        answer["00081199"] = {"vr": "SQ", "Value": out.stored}
    status = 200 if not out.failed else 202 if out.stored else 409
    return JSONResponse(answer, status_code=status, media_type=DICOM_JSON)


@router.post("/studies")
async def store_studies(request: Request, access: Access = Depends(storer)) -> JSONResponse:
    return await _stow(request, None)


@router.post("/studies/{study}")
async def store_study(
    study: str, request: Request, access: Access = Depends(storer)
) -> JSONResponse:
    return await _stow(request, study)
