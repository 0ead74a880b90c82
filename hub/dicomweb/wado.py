"""DICOMweb WADO-RS (PS3.18 10.4): instances, metadata, frames, bulk data and
rendered pictures of stored studies.

Files are found through the index (never from request text) and sent as they
were stored whenever the client accepts the stored transfer syntax; the
retrieve of a study is streamed file by file. Each route is audited once per
caller and study (``access.audit_retrieve``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import Response, StreamingResponse

from hub.archive import frames, render, transcode
from hub.context import Hub
from hub.dicomweb import dicomjson, multipart
from hub.dicomweb.access import Access, audit_retrieve, retriever
from hub.models import Instance
from hub.services import studies
from hub.services.ingest import valid_uid

log = logging.getLogger(__name__)
router = APIRouter(tags=["dicomweb"])

EXPLICIT_LE = transcode.EXPLICIT_LE
DICOM_JSON = "application/dicom+json"
OCTETS = "application/octet-stream"
# The single-frame media type of each compressed transfer syntax (PS3.18 8.7.3.3.2).
FRAME_TYPES = {
    "1.2.840.10008.1.2.4.50": "image/jpeg",
    "1.2.840.10008.1.2.4.51": "image/jpeg",
    "1.2.840.10008.1.2.4.57": "image/jpeg",
    "1.2.840.10008.1.2.4.70": "image/jpeg",
    "1.2.840.10008.1.2.4.80": "image/jls",
    "1.2.840.10008.1.2.4.81": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2",
    "1.2.840.10008.1.2.4.91": "image/jp2",
    "1.2.840.10008.1.2.4.92": "image/jpx",
    "1.2.840.10008.1.2.4.93": "image/jpx",
    "1.2.840.10008.1.2.4.201": "image/jphc",
    "1.2.840.10008.1.2.4.202": "image/jphc",
    "1.2.840.10008.1.2.4.203": "image/jphc",
    "1.2.840.10008.1.2.5": "image/x-dicom-rle",
}
ANY = frozenset({"*/*", "multipart/*"})
MAX_FRAMES_ASKED = 1000
FRAME_BATCH = 16
# Pixel data never changes once stored (reconciliation corrects headers only), so
# a viewer's browser may keep frames; private: never in a shared cache.
FRAME_CACHE = {"Cache-Control": "private, max-age=86400"}
_TAG = re.compile(r"^[0-9A-Fa-f]{8}$")

Located = list[tuple[str, Instance]]


# -- finding what was asked for ---------------------------------------------


def check_uid(value: str, what: str) -> str:
    if not valid_uid(value):
        raise HTTPException(400, f"{what} is not a DICOM UID (digits and dots, at most 64)")
    return value


def _find(
    request: Request,
    access: Access,
    study: str,
    series: str | None = None,
    instance: str | None = None,
    what: str = "retrieve",
) -> Located:
    """The asked instances (404 when none), after the share check; audited."""
    check_uid(study, "the study UID")
    if series is not None:
        check_uid(series, "the series UID")
    if instance is not None:
        check_uid(instance, "the SOP instance UID")
    access.check_study(study)
    hub: Hub = request.app.state.hub
    with hub.db.read_session() as s:
        found = studies.located(s, study, series, instance)
    if not found:
        if instance is not None:
            raise HTTPException(404, f"instance {instance} is not in series {series} of {study}")
        if series is not None:
            raise HTTPException(404, f"series {series} is not in study {study}")
        raise HTTPException(404, f"study {study} does not exist")
    audit_retrieve(hub, access, study, what)
    return found


def _path(request: Request, inst: Instance) -> Path:
    hub: Hub = request.app.state.hub
    return Path(hub.settings.data_dir) / inst.path


def _file(request: Request, inst: Instance) -> Path:
    """The instance's file, or 404 (logged: the index knows a file the disk lost)."""
    path = _path(request, inst)
    if not path.is_file():
        log.error("stored file missing", extra={"sop_instance_uid": inst.sop_instance_uid})
        raise HTTPException(404, f"the file of instance {inst.sop_instance_uid} is missing")
    return path


def base_url(request: Request) -> str:
    """``scheme://host/dicomweb``, or a share's ``scheme://host/shared/{token}/dicomweb``:
    the root the client asked through."""
    path = request.url.path
    cut = path.find("/dicomweb")
    return f"{request.url.scheme}://{request.url.netloc}{path[: cut + len('/dicomweb')]}"


def instance_url(base: str, study: str, series: str, sop: str) -> str:
    return f"{base}/studies/{study}/series/{series}/instances/{sop}"


# -- instances ----------------------------------------------------------------


def _wanted_syntax(header: str | None) -> str:
    """The transfer syntax the Accept header asks for: ``*``, a UID, or 406."""
    for r in multipart.accept(header):
        if r.type in ANY:
            return EXPLICIT_LE
        if r.type == "multipart/related":
            part = r.param("type") or "application/dicom"
        elif r.type == "application/dicom":
            part = r.type
        else:
            continue
        if part not in ("application/dicom", "application/*", "*/*"):
            continue
        return r.param("transfer-syntax") or EXPLICIT_LE
    raise HTTPException(
        406,
        'instances are available as multipart/related; type="application/dicom" '
        "(transfer-syntax=* for the stored encoding)",
    )


def _instances_response(request: Request, found: Located) -> Response:
    wanted = _wanted_syntax(request.headers.get("accept"))
    if wanted not in ("*", EXPLICIT_LE):
        for _, inst in found:
            if inst.transfer_syntax_uid != wanted:
                raise HTTPException(
                    406,
                    f"instance {inst.sop_instance_uid} is not available in transfer syntax "
                    f"{wanted}: available as stored ({inst.transfer_syntax_uid}, or "
                    f"transfer-syntax=*) or {EXPLICIT_LE}",
                )
    paths = [(inst, _path(request, inst)) for _, inst in found]
    boundary = multipart.new_boundary()
    media_type = multipart.related("application/dicom", boundary)
    if len(paths) == 1 and wanted not in ("*", paths[0][0].transfer_syntax_uid):
        inst = paths[0][0]
        try:
            body = transcode.explicit_little(_file(request, inst))
        except Exception as exc:  # one instance: say why rather than send nothing
            raise HTTPException(
                406,
                f"instance {inst.sop_instance_uid} cannot be decoded to {EXPLICIT_LE} "
                f"({str(exc)[:200]}); ask for transfer-syntax=* to have it as stored "
                f"({inst.transfer_syntax_uid})",
            ) from None
        part = multipart.Out(f"application/dicom; transfer-syntax={EXPLICIT_LE}", body)
        return Response(b"".join(multipart.stream([part], boundary)), media_type=media_type)
    if len(paths) == 1:
        _file(request, paths[0][0])

    def parts() -> Iterator[multipart.Out]:
        for inst, path in paths:
            if not path.is_file():
                log.error("stored file missing", extra={"sop_instance_uid": inst.sop_instance_uid})
                continue
            stored = inst.transfer_syntax_uid
            if wanted in ("*", stored):
                yield multipart.Out(f"application/dicom; transfer-syntax={stored}", path)
                continue
            try:
                body = transcode.explicit_little(path)
            except Exception as exc:  # a decoder that cannot: the rest still goes out
                log.warning(
                    "instance left out: cannot transcode",
                    extra={"sop_instance_uid": inst.sop_instance_uid, "error": str(exc)[:300]},
                )
                continue
            yield multipart.Out(f"application/dicom; transfer-syntax={EXPLICIT_LE}", body)

    return StreamingResponse(multipart.stream(parts(), boundary), media_type=media_type)


@router.get("/studies/{study}")
def retrieve_study(study: str, request: Request, access: Access = Depends(retriever)) -> Response:
    return _instances_response(request, _find(request, access, study, what="study"))


@router.get("/studies/{study}/series/{series}")
def retrieve_series(
    study: str, series: str, request: Request, access: Access = Depends(retriever)
) -> Response:
    return _instances_response(request, _find(request, access, study, series, what="series"))


@router.get("/studies/{study}/series/{series}/instances/{instance}")
def retrieve_instance(
    study: str, series: str, instance: str, request: Request, access: Access = Depends(retriever)
) -> Response:
    found = _find(request, access, study, series, instance, what="instance")
    return _instances_response(request, found)


# -- metadata -----------------------------------------------------------------


def _metadata_response(request: Request, study: str, found: Located) -> Response:
    for r in multipart.accept(request.headers.get("accept")):
        if r.type in (DICOM_JSON, "application/json", "application/*", "*/*"):
            break
    else:
        raise HTTPException(406, f"metadata is available as {DICOM_JSON}")
    base = base_url(request)
    items = [(series, inst, _path(request, inst)) for series, inst in found]

    def body() -> Iterator[bytes]:
        yield b"["
        first = True
        for series, inst, path in items:
            try:
                doc = dicomjson.instance(path)
            except Exception as exc:
                log.warning(
                    "instance left out of metadata",
                    extra={"sop_instance_uid": inst.sop_instance_uid, "error": str(exc)[:300]},
                )
                continue
            url = instance_url(base, study, series, inst.sop_instance_uid)
            yield (b"" if first else b",") + dicomjson.with_base(doc, url).encode()
            first = False
        yield b"]"

    return StreamingResponse(body(), media_type=DICOM_JSON)


@router.get("/studies/{study}/metadata")
def study_metadata(study: str, request: Request, access: Access = Depends(retriever)) -> Response:
    return _metadata_response(request, study, _find(request, access, study, what="metadata"))


@router.get("/studies/{study}/series/{series}/metadata")
def series_metadata(
    study: str, series: str, request: Request, access: Access = Depends(retriever)
) -> Response:
    found = _find(request, access, study, series, what="metadata")
    return _metadata_response(request, study, found)


@router.get("/studies/{study}/series/{series}/instances/{instance}/metadata")
def instance_metadata(
    study: str, series: str, instance: str, request: Request, access: Access = Depends(retriever)
) -> Response:
    found = _find(request, access, study, series, instance, what="metadata")
    return _metadata_response(request, study, found)


# -- bulk data ----------------------------------------------------------------


@router.get("/studies/{study}/series/{series}/instances/{instance}/bulkdata/{tag}")
def bulkdata(
    study: str,
    series: str,
    instance: str,
    tag: str,
    request: Request,
    access: Access = Depends(retriever),
) -> Response:
    if not _TAG.match(tag):
        raise HTTPException(400, "the bulk data tag must be 8 hexadecimal digits (e.g. 7FE00010)")
    _, inst = _find(request, access, study, series, instance, what="bulkdata")[0]
    value = dicomjson.bulk_value(_file(request, inst), int(tag, 16))
    if value is None:
        raise HTTPException(404, f"instance {instance} has no binary value ({tag.upper()})")
    single = _single_part(request.headers.get("accept"))
    if single is not None:
        return Response(value, media_type=single)
    boundary = multipart.new_boundary()
    body = b"".join(multipart.stream([multipart.Out(OCTETS, value)], boundary))
    return Response(body, media_type=multipart.related(OCTETS, boundary))


def _single_part(header: str | None) -> str | None:
    """The bare media type a client asked bulk data in (OHIF's ``singlepart``), or
    None for multipart/related, the default."""
    for r in multipart.accept(header):
        if r.type in ANY or r.type == "multipart/related":
            return None
        if "/" in r.type and not r.type.endswith("/*"):
            return r.type
    return None


# -- frames -------------------------------------------------------------------


def _frame_numbers(text: str) -> list[int]:
    parts = text.split(",")
    if len(parts) > MAX_FRAMES_ASKED:
        raise HTTPException(400, f"at most {MAX_FRAMES_ASKED} frames in one request")
    try:
        numbers = [int(p.strip()) for p in parts]
    except ValueError:
        raise HTTPException(400, "frames must be a comma-separated list of frame numbers") from None
    if any(n < 1 for n in numbers):
        raise HTTPException(400, "frame numbers start at 1")
    return numbers


def _frame_choice(header: str | None, stored: str, compressed: bool) -> tuple[bool, str]:
    """``(as stored?, part Content-Type)`` for the Accept header, or 406."""
    native_type = f"{OCTETS}; transfer-syntax={EXPLICIT_LE}"
    for r in multipart.accept(header):
        if r.type in ANY:
            return False, native_type
        part = (r.param("type") or OCTETS) if r.type == "multipart/related" else r.type
        ts = r.param("transfer-syntax")
        if part in (OCTETS, "application/*", "*/*"):
            if ts is None or ts == EXPLICIT_LE:
                return False, native_type
            if ts in ("*", stored):
                return (
                    compressed,
                    f"{OCTETS}; transfer-syntax={stored if compressed else EXPLICIT_LE}",
                )
            continue
        image_type = FRAME_TYPES.get(stored)
        if (
            compressed
            and image_type
            and part in (image_type, "image/*")
            and ts in (None, "*", stored)
        ):
            return True, f"{image_type}; transfer-syntax={stored}"
    available = f"{OCTETS} (transfer-syntax={EXPLICIT_LE}"
    if compressed:
        available += f", or {stored} / *"
    raise HTTPException(406, f"frames of this instance are available as {available})")


@router.get("/studies/{study}/series/{series}/instances/{instance}/frames/{frame_list}")
def retrieve_frames(
    study: str,
    series: str,
    instance: str,
    frame_list: str,
    request: Request,
    access: Access = Depends(retriever),
) -> Response:
    numbers = _frame_numbers(frame_list)
    _, inst = _find(request, access, study, series, instance, what="frames")[0]
    try:
        img = frames.open_image(_file(request, inst))
        frames.check(img, numbers)
    except frames.NoPixels as exc:
        raise HTTPException(404, f"instance {instance}: {exc}") from None
    except frames.NoSuchFrame as exc:
        raise HTTPException(404, str(exc)) from None
    as_stored, part_type = _frame_choice(
        request.headers.get("accept"), str(img.transfer_syntax), img.compressed
    )
    read = frames.stored if as_stored else frames.decoded
    try:
        first = read(img, numbers[:FRAME_BATCH])
    except Exception as exc:  # the decoders cannot read it
        raise HTTPException(
            406,
            f"frames of instance {instance} cannot be decoded ({str(exc)[:200]}); "
            f"ask for transfer-syntax={img.transfer_syntax} to have them as stored",
        ) from None
    boundary = multipart.new_boundary()
    media = multipart.related(part_type.split(";")[0], boundary)
    if len(numbers) <= FRAME_BATCH:
        body = b"".join(multipart.stream([multipart.Out(part_type, d) for d in first], boundary))
        return Response(body, media_type=media, headers=FRAME_CACHE)

    def parts() -> Iterator[multipart.Out]:
        """Many frames go out a batch at a time: 1000 large frames are never in memory."""
        batch = first
        for at in range(FRAME_BATCH, len(numbers) + FRAME_BATCH, FRAME_BATCH):
            yield from (multipart.Out(part_type, d) for d in batch)
            if at >= len(numbers):
                return
            try:
                batch = read(img, numbers[at : at + FRAME_BATCH])
            except Exception as exc:
                log.warning(
                    "frames cut short",
                    extra={"sop_instance_uid": instance, "error": str(exc)[:300]},
                )
                return

    return StreamingResponse(
        multipart.stream(parts(), boundary), media_type=media, headers=FRAME_CACHE
    )


# -- rendered and thumbnails ----------------------------------------------------


def _options(request: Request, frame: int, *, thumbnail: bool) -> render.Options:
    fmt: render.Format | None = None
    for r in multipart.accept(request.headers.get("accept")):
        if r.type in ("image/jpeg", "image/jpg", "image/*", "*/*"):
            fmt = "jpeg"
        elif r.type == "image/png":
            fmt = "png"
        if fmt is not None:
            break
    if fmt is None:
        raise HTTPException(406, "rendered images are available as image/jpeg or image/png")
    q = request.query_params
    try:
        window = render.parse_window(q["window"]) if q.get("window") else None
        viewport = render.parse_viewport(q["viewport"]) if q.get("viewport") else None
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from None
    quality = 90
    if q.get("quality"):
        if not q["quality"].isdigit() or not 1 <= int(q["quality"]) <= 100:
            raise HTTPException(400, "quality must be a whole number from 1 to 100")
        quality = int(q["quality"])
    if thumbnail and viewport is None:
        viewport = (render.THUMBNAIL, render.THUMBNAIL)
    return render.Options(frame, window, viewport, fmt, quality, enlarge=not thumbnail)


def _picture(request: Request, inst: Instance, opts: render.Options) -> Response:
    hub: Hub = request.app.state.hub
    path = _file(request, inst)
    if opts.frame > 1:
        try:
            frames.check(frames.open_image(path), [opts.frame])
        except frames.NoSuchFrame as exc:
            raise HTTPException(404, str(exc)) from None
        except frames.NoPixels:
            pass  # the placeholder says so
    pic = render.picture(Path(hub.settings.data_dir), path, inst.sop_instance_uid, opts)
    headers = {"Cache-Control": "private, max-age=3600"}
    if pic.warning is not None:
        reason = pic.warning.encode("ascii", "replace").decode().replace('"', "'")
        headers["Warning"] = f'299 vethub "cannot decode: {reason}"'
    return Response(pic.content, media_type=pic.media_type, headers=headers)


# What /rendered answers for an instance that is not a still image: a video's
# stream as stored (a <video> element plays it), an encapsulated PDF as a PDF.
VIDEO_TYPES = {
    "1.2.840.10008.1.2.4.100": "video/mpeg",
    "1.2.840.10008.1.2.4.101": "video/mpeg",
    **{f"1.2.840.10008.1.2.4.{n}": "video/mp4" for n in range(102, 109)},
}
ENCAPSULATED_PDF = "1.2.840.10008.5.1.4.1.1.104.1"


def _media(request: Request, inst: Instance) -> Response | None:
    """The video or PDF of the instance, when it is one and the client takes it."""
    kind = VIDEO_TYPES.get(inst.transfer_syntax_uid)
    if kind is None and inst.sop_class_uid == ENCAPSULATED_PDF:
        kind = "application/pdf"
    if kind is None:
        return None
    major = kind.split("/")[0] + "/*"
    if not any(
        r.type in ("*/*", major, kind) for r in multipart.accept(request.headers.get("accept"))
    ):
        return None
    path = _file(request, inst)
    try:
        if kind == "application/pdf":
            content = dicomjson.bulk_value(path, 0x00420011)
        else:
            content = frames.whole_stream(path)
    except Exception as exc:
        log.warning(
            "media not readable",
            extra={"sop_instance_uid": inst.sop_instance_uid, "error": str(exc)[:300]},
        )
        return None
    if not content:
        return None
    return Response(content, media_type=kind, headers={"Cache-Control": "private, max-age=3600"})


# Instances with no picture of their own: a study's or series' picture skips them.
NOT_IMAGES = (
    "1.2.840.10008.5.1.4.1.1.88.",  # structured reports, key objects
    "1.2.840.10008.5.1.4.1.1.11.",  # presentation states
    "1.2.840.10008.5.1.4.1.1.104.",  # encapsulated PDF/CDA
    "1.2.840.10008.5.1.4.1.1.9.",  # waveforms
)


def _representative(found: Located) -> Instance:
    """The study's or series' picture: its first image."""
    for _, inst in found:
        if not inst.sop_class_uid.startswith(NOT_IMAGES):
            return inst
    return found[0][1]


def _one_frame(text: str) -> int:
    numbers = _frame_numbers(text)
    if len(numbers) != 1:
        raise HTTPException(400, "a rendered frame is asked for one frame at a time")
    return numbers[0]


def _picture_routes(suffix: str, *, thumbnail: bool) -> None:
    what = suffix.strip("/")

    @router.get(f"/studies/{{study}}{suffix}", name=f"study_{what}")
    def study_picture(
        study: str, request: Request, access: Access = Depends(retriever)
    ) -> Response:
        opts = _options(request, 1, thumbnail=thumbnail)
        return _picture(request, _representative(_find(request, access, study, what=what)), opts)

    @router.get(f"/studies/{{study}}/series/{{series}}{suffix}", name=f"series_{what}")
    def series_picture(
        study: str, series: str, request: Request, access: Access = Depends(retriever)
    ) -> Response:
        opts = _options(request, 1, thumbnail=thumbnail)
        found = _find(request, access, study, series, what=what)
        return _picture(request, _representative(found), opts)

    @router.get(
        f"/studies/{{study}}/series/{{series}}/instances/{{instance}}{suffix}",
        name=f"instance_{what}",
    )
    def instance_picture(
        study: str,
        series: str,
        instance: str,
        request: Request,
        access: Access = Depends(retriever),
    ) -> Response:
        found = _find(request, access, study, series, instance, what=what)
        media = None if thumbnail else _media(request, found[0][1])
        if media is not None:
            return media
        opts = _options(request, 1, thumbnail=thumbnail)
        return _picture(request, found[0][1], opts)

    @router.get(
        f"/studies/{{study}}/series/{{series}}/instances/{{instance}}/frames/{{frame}}{suffix}",
        name=f"frame_{what}",
    )
    def frame_picture(
        study: str,
        series: str,
        instance: str,
        frame: str,
        request: Request,
        access: Access = Depends(retriever),
    ) -> Response:
        opts = _options(request, _one_frame(frame), thumbnail=thumbnail)
        found = _find(request, access, study, series, instance, what=what)
        return _picture(request, found[0][1], opts)


_picture_routes("/rendered", thumbnail=False)
_picture_routes("/thumbnail", thumbnail=True)
