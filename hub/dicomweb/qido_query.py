"""A QIDO-RS request's query string as a ``study_search.Query`` (PS3.18 §8.3.4).

Keys are DICOM keywords or tags (``PatientID`` or ``00100020``). A key that
names no DICOM attribute, or a malformed value, is a 400 naming the key: a
typo should not quietly widen a search to everything. A real attribute the
index cannot match on is ignored and said so in a ``Warning`` header, as
PS3.18 allows. ``fuzzymatching`` is accepted and ignored (wildcard matching
is already case-insensitive).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from fastapi import HTTPException
from pydicom.datadict import keyword_for_tag, tag_for_keyword

from hub.services import study_search
from hub.services.ingest import valid_uid

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
MAX_OFFSET = 10**9
MAX_VALUE = 256  # longest query value taken (the longest stored is a 200-character name)
_TAG = re.compile(r"^[0-9A-Fa-f]{8}$")
_DATE = re.compile(r"^\d{8}$")
_TIME = re.compile(r"^\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?$")
_CODE = re.compile(r"^[A-Z0-9_ ]{1,16}$")
_LIST = re.compile(r"[,\\]")
_CONTROLS = re.compile(r"[\x00-\x1f\x7f]")
_CONTROL = frozenset({"limit", "offset", "includefield", "fuzzymatching"})

# Which level each matched key belongs to and which Query field it fills.
_TEXT = {
    "PatientID": ("study", "patient_id"),
    "PatientName": ("study", "patient_name"),
    "AccessionNumber": ("study", "accession_number"),
    "StudyDescription": ("study", "study_description"),
    "SeriesDescription": ("series", "series_description"),
}
_UIDS = {
    "StudyInstanceUID": ("study", "study_uids"),
    "SeriesInstanceUID": ("series", "series_uids"),
    "SOPInstanceUID": ("instance", "sop_uids"),
    "SOPClassUID": ("instance", "sop_class_uids"),
}
_CODES = {
    "ModalitiesInStudy": ("study", "modalities_in_study"),
    "Modality": ("series", "modalities"),
}
_RANK = {"study": 0, "series": 1, "instance": 2}


@dataclass
class Parsed:
    query: study_search.Query
    include_all: bool = False
    include: set[str] = field(default_factory=set)  # keywords named by includefield
    ignored: list[str] = field(default_factory=list)  # attributes not matched on
    limit_asked: int | None = None  # as the client asked, before capping


def keyword(key: str, what: str = "query key") -> str:
    """The DICOM keyword a key names (by keyword or by tag), or a 400."""
    if _TAG.match(key):
        found = keyword_for_tag(int(key, 16))
    else:
        found = key if tag_for_keyword(key) is not None else ""
    if not found:
        raise HTTPException(400, f"{what} {key[:80]!r} is not a DICOM attribute keyword or tag")
    return found


def parse(
    items: list[tuple[str, str]],
    level: study_search.Level,
    path: dict[str, Any],
) -> Parsed:
    """The request's query items at ``level``; ``path`` holds Query fields fixed by the
    URL (the study and series UIDs of ``/studies/{study}/series``...)."""
    fields: dict[str, Any] = dict(path)
    out = Parsed(query=study_search.Query(level=level))
    seen: set[str] = set()
    limit, offset = DEFAULT_LIMIT, 0
    for key, value in items:
        if len(value) > MAX_VALUE:
            raise HTTPException(400, f"query key {key[:80]!r}: value is too long")
        if _CONTROLS.search(value):  # a NUL would reach PostgreSQL, which refuses it
            raise HTTPException(400, f"query key {key[:80]!r}: value has control characters")
        if key in _CONTROL:
            if key == "includefield":
                _includes(out, value)
                continue
            if key in seen:
                raise HTTPException(400, f"query key {key!r} is given more than once")
            seen.add(key)
            if key == "limit":
                limit = _count("limit", value, low=1)
                out.limit_asked = limit
            elif key == "offset":
                offset = _count("offset", value, low=0)
            continue
        kw = keyword(key)
        if kw in seen:
            raise HTTPException(400, f"query key {key!r} is given more than once")
        seen.add(kw)
        value = value.strip()
        if value in ("", "*"):
            continue  # universal matching: the attribute is only asked to be returned
        _match(fields, out, kw, key, value, level)
    out.query = study_search.Query(
        level=level, limit=min(limit, MAX_LIMIT), offset=min(offset, MAX_OFFSET), **fields
    )
    return out


def _match(
    fields: dict[str, Any],
    out: Parsed,
    kw: str,
    key: str,
    value: str,
    level: study_search.Level,
) -> None:
    owner = (_TEXT.get(kw) or _UIDS.get(kw) or _CODES.get(kw) or ("study", ""))[0]
    if kw in ("SeriesNumber", "InstanceNumber"):
        owner = "series" if kw == "SeriesNumber" else "instance"
    if _RANK[owner] > _RANK[level]:
        out.ignored.append(kw)  # e.g. Modality in a study search: not a study attribute
        return
    if kw in _TEXT:
        fields[_TEXT[kw][1]] = value
    elif kw in _UIDS:
        uids = tuple(u.strip() for u in _LIST.split(value) if u.strip())
        bad = [u for u in uids if not valid_uid(u)]
        if bad or not uids:
            raise HTTPException(400, f"query key {key!r}: {bad[0][:80]!r} is not a valid UID")
        name = _UIDS[kw][1]
        if name in fields:  # fixed by the path: both must hold
            uids = tuple(u for u in uids if u in fields[name]) or ("0",)
        fields[name] = uids
    elif kw in _CODES:
        codes = tuple(c.strip().upper() for c in _LIST.split(value) if c.strip())
        if not codes or not all(_CODE.match(c) for c in codes):
            raise HTTPException(400, f"query key {key!r}: {value[:80]!r} is not a modality code")
        fields[_CODES[kw][1]] = codes
    elif kw == "StudyDate":
        fields["study_date"] = _range(key, value, _DATE, "a date YYYYMMDD")
    elif kw == "StudyTime":
        fields["study_time"] = _range(key, value, _TIME, "a time HHMMSS")
    elif kw == "SeriesNumber":
        fields["series_number"] = str(_count(key, value, low=-(2**31)))
    elif kw == "InstanceNumber":
        fields["instance_number"] = _count(key, value, low=-(2**31))
    else:
        out.ignored.append(kw)


def _includes(out: Parsed, value: str) -> None:
    for item in (v.strip() for v in value.split(",")):
        if not item:
            continue
        if item == "all":
            out.include_all = True
        else:
            out.include.add(keyword(item, "includefield"))


def _count(key: str, value: str, *, low: int) -> int:
    text = value.strip()
    if not re.fullmatch(r"[+-]?\d{1,18}", text):
        raise HTTPException(400, f"query key {key!r}: {value[:40]!r} is not a whole number")
    n = int(text)
    if n < low:
        raise HTTPException(400, f"query key {key!r}: must be at least {low}")
    if key in ("SeriesNumber", "InstanceNumber") and n >= 2**31:
        raise HTTPException(400, f"query key {key!r}: {n} is out of range")
    return n


def _range(key: str, value: str, form: re.Pattern[str], what: str) -> study_search.Range:
    """``A``, ``A-B``, ``-B`` or ``A-`` (PS3.4 C.2.2.2.5)."""
    if value.count("-") > 1:
        raise HTTPException(400, f"query key {key!r}: {value[:40]!r} is not {what} or a range")
    low, dash, high = value.partition("-")
    if not dash:
        high = low
    if not low and not high:
        raise HTTPException(400, f"query key {key!r}: a range needs at least one end")
    for end in (low, high):
        if end and not (form.match(end) and _real(end, form)):
            raise HTTPException(400, f"query key {key!r}: {end[:40]!r} is not {what}")
    if low and high and low > high:
        raise HTTPException(400, f"query key {key!r}: the range ends before it starts")
    if not dash and form is _TIME:
        # A single time matches the whole stated precision: 10 is 10:00:00 to 10:59:59.
        return study_search.Range(low, (high.split(".")[0] + "9999")[:6])
    return study_search.Range(low or None, high or None)


def _real(end: str, form: re.Pattern[str]) -> bool:
    """A real date or time, not just digits (20261399 and 2561 are refused)."""
    digits = end.split(".")[0]
    fmt = "%Y%m%d" if form is _DATE else "%H%M%S"[: len(digits)]
    try:
        datetime.strptime(digits, fmt)
    except ValueError:
        return False
    return True
