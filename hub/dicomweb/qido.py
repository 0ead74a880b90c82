"""DICOMweb QIDO-RS: searching studies, series and instances (PS3.18 §10.6).

Answers are the DICOM JSON model (PS3.18 F.2), built straight from the
index's plain values (``hub.services.study_search``): no data set per row, no
file opened. An empty result is ``200 []``, which dicomweb-client and OHIF
both take. RetrieveURL is absolute on the prefix the request came in on, so
under a share link it points into that link's DICOMweb root. Searching is
not audited as a view; retrieving is (``wado``).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydicom.datadict import dictionary_VR, tag_for_keyword

from hub.context import Hub
from hub.dicomweb import qido_query
from hub.dicomweb.access import Access, searcher
from hub.services import study_search
from hub.services.ingest import valid_uid

router = APIRouter(tags=["dicomweb"])
MEDIA_TYPE = "application/dicom+json"
_ACCEPTED = ("application/dicom+json", "application/json", "application/*", "*/*")
_MULTI_VALUED = {"CS", "SH", "LO", "PN", "DA", "TM", "UI", "IS"}

# What each level answers even when empty (PS3.18 Table 10.6.3-3..5, plus the
# veterinary attributes a clinic's viewer shows); other attributes only when known.
STUDY = (
    "SpecificCharacterSet",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "ModalitiesInStudy",
    "ReferringPhysicianName",
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "StudyID",
    "StudyDescription",
    "NumberOfStudyRelatedSeries",
    "NumberOfStudyRelatedInstances",
    "RetrieveURL",
)
SERIES = (
    "Modality",
    "SeriesInstanceUID",
    "SeriesNumber",
    "SeriesDescription",
    "NumberOfSeriesRelatedInstances",
)
# InstanceNumber, Rows, Columns and NumberOfFrames only when known: instances
# indexed before migration 0012 have none.
INSTANCE = ("SOPClassUID", "SOPInstanceUID")
_REQUIRED = frozenset((*STUDY, *SERIES, *INSTANCE))
_STUDY_KEYS = frozenset(STUDY) | {
    "PatientSpeciesDescription",
    "PatientBreedDescription",
    "PatientSexNeutered",
    "ResponsiblePerson",
    "ResponsiblePersonRole",
    "ResponsibleOrganization",
}
_SERIES_KEYS = frozenset(SERIES)
_TAGS: dict[str, tuple[str, str]] = {}


def _tag(keyword: str) -> tuple[str, str]:
    """(tag as 8 hex digits, VR) of a keyword the answers use."""
    found = _TAGS.get(keyword)
    if found is None:
        tag = tag_for_keyword(keyword)
        assert tag is not None, keyword
        found = _TAGS[keyword] = (f"{tag:08X}", dictionary_VR(tag))
    return found


def _element(vr: str, value: Any) -> dict[str, Any]:
    if value is None or value == "" or value == []:
        return {"vr": vr}
    values = value if isinstance(value, list) else [value]
    if isinstance(value, str) and vr in _MULTI_VALUED:
        values = value.split("\\")
    if vr == "PN":
        groups = ("Alphabetic", "Ideographic", "Phonetic")
        values = [dict(zip(groups, str(v).split("="), strict=False)) for v in values]
    return {"vr": vr, "Value": values}


def dicom_json(attrs: dict[str, Any]) -> dict[str, Any]:
    """One result as the DICOM JSON model, tags in ascending order; unknown optional
    attributes are left out, unknown required ones given as present but empty."""
    out = {}
    for keyword, value in attrs.items():
        if value is None and keyword not in _REQUIRED:
            continue
        tag, vr = _tag(keyword)
        out[tag] = _element(vr, value)
    return dict(sorted(out.items()))


def _root(request: Request) -> str:
    """The absolute DICOMweb root this request came in on (``.../dicomweb``)."""
    url = str(request.url.replace(query=""))
    return url[: url.rindex("/dicomweb/") + len("/dicomweb")]


def _check_uid(uid: str, what: str) -> None:
    if not valid_uid(uid):
        raise HTTPException(400, f"{what} {uid[:80]!r} is not a valid UID")


def _check_accept(request: Request) -> None:
    accept = request.headers.get("accept", "")
    if accept and not any(a in accept for a in _ACCEPTED):
        raise HTTPException(406, f"search results are only given as {MEDIA_TYPE}")


def _search(
    request: Request,
    who: Access,
    level: study_search.Level,
    study: str | None = None,
    series: str | None = None,
) -> Response:
    _check_accept(request)
    path: dict[str, Any] = {}
    if study is not None:
        _check_uid(study, "study")
        who.check_study(study)
        path["study_uids"] = (study,)
    if series is not None:
        _check_uid(series, "series")
        path["series_uids"] = (series,)
    parsed = qido_query.parse(list(request.query_params.multi_items()), level, path)
    include = parsed.include
    with_study = level == "study" or study is None or parsed.include_all
    with_study = with_study or bool(include & (_STUDY_KEYS - {"StudyInstanceUID"}))
    with_series = series is None or parsed.include_all or bool(include & _SERIES_KEYS)
    q = dataclasses.replace(
        parsed.query, only_study=who.study, with_study=with_study, with_series=with_series
    )
    hub: Hub = request.app.state.hub
    with hub.db.read_session() as s:
        found = study_search.search(s, q)
    root = _root(request)
    body = []
    for attrs in found.rows:
        url = f"{root}/studies/{attrs['StudyInstanceUID']}"
        if level != "study":
            url += f"/series/{attrs['SeriesInstanceUID']}"
        if level == "instance":
            url += f"/instances/{attrs['SOPInstanceUID']}"
        attrs["SpecificCharacterSet"] = "ISO_IR 192"
        attrs["RetrieveURL"] = url
        body.append(dicom_json(attrs))
    headers = {}
    warnings = []
    capped = parsed.limit_asked is None or parsed.limit_asked > qido_query.MAX_LIMIT
    if found.more and capped:
        warnings.append(
            f"299 {request.url.hostname}: The number of results exceeded the maximum supported "
            "by the server. Additional results can be requested."
        )
    if parsed.ignored:
        names = ", ".join(dict.fromkeys(parsed.ignored))
        warnings.append(
            f"299 {request.url.hostname}: The following attributes were not matched on: {names}."
        )
    if warnings:
        headers["Warning"] = ", ".join(warnings)
    return Response(
        json.dumps(body, separators=(",", ":"), ensure_ascii=False),
        media_type=MEDIA_TYPE,
        headers=headers,
    )


def _run(request: Request, who: Access, level: study_search.Level, **path: str) -> Any:
    return run_in_threadpool(_search, request, who, level, **path)


@router.get("/studies", summary="QIDO-RS: search for studies")
async def search_studies(request: Request, who: Access = Depends(searcher)) -> Response:
    return await _run(request, who, "study")


@router.get("/series", summary="QIDO-RS: search for series")
async def search_series(request: Request, who: Access = Depends(searcher)) -> Response:
    return await _run(request, who, "series")


@router.get("/instances", summary="QIDO-RS: search for instances")
async def search_instances(request: Request, who: Access = Depends(searcher)) -> Response:
    return await _run(request, who, "instance")


@router.get("/studies/{study}/series", summary="QIDO-RS: search a study's series")
async def search_study_series(
    study: str, request: Request, who: Access = Depends(searcher)
) -> Response:
    return await _run(request, who, "series", study=study)


@router.get("/studies/{study}/instances", summary="QIDO-RS: search a study's instances")
async def search_study_instances(
    study: str, request: Request, who: Access = Depends(searcher)
) -> Response:
    return await _run(request, who, "instance", study=study)


@router.get(
    "/studies/{study}/series/{series}/instances", summary="QIDO-RS: search a series' instances"
)
async def search_series_instances(
    study: str, series: str, request: Request, who: Access = Depends(searcher)
) -> Response:
    return await _run(request, who, "instance", study=study, series=series)
