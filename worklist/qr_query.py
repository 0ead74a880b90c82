"""Query/Retrieve identifiers: what a C-FIND, C-MOVE or C-GET asks, as a study search.

The identifier's keys become a ``study_search.Query`` (PS3.4 C.2.2.2 matching
decided in SQL there); the hierarchical rules of C.4.1.2.1 are checked here:
a known QueryRetrieveLevel for the information model, and above it each
level's unique key as one value. A fault is a ``QueryError`` with the status
and a comment that names it. Answers carry the keys the identifier asked for,
each with its value or empty when the hub does not know it.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
)

from hub.services.study_search import Query, Range
from worklist import charset as charsets
from worklist import items, status

PATIENT_ROOT = frozenset(
    str(u)
    for u in (
        PatientRootQueryRetrieveInformationModelFind,
        PatientRootQueryRetrieveInformationModelMove,
        PatientRootQueryRetrieveInformationModelGet,
    )
)
# Level -> the search level behind it, and the unique keys (C.6.1.1 / C.6.2.1)
# each level above the asked one must give as one value.
_SEARCH = {"PATIENT": "study", "STUDY": "study", "SERIES": "series", "IMAGE": "instance"}
_UNIQUE = {
    "PATIENT": "PatientID",
    "STUDY": "StudyInstanceUID",
    "SERIES": "SeriesInstanceUID",
    "IMAGE": "SOPInstanceUID",
}
_ORDER = ("PATIENT", "STUDY", "SERIES", "IMAGE")
_NOT_RETURNED = frozenset(("SpecificCharacterSet", "QueryRetrieveLevel"))


class QueryError(Exception):
    def __init__(self, status_code: int, comment: str) -> None:
        super().__init__(comment)
        self.status = status_code
        self.comment = comment


@dataclass(frozen=True)
class Asked:
    level: str  # PATIENT / STUDY / SERIES / IMAGE
    query: Query


def _text(ds: Dataset, keyword: str) -> str | None:
    value = ds.get(keyword)
    if value is None:
        return None
    if isinstance(value, MultiValue):
        value = "\\".join(str(v) for v in value)
    text = str(value).strip()
    return text or None


def _list(ds: Dataset, keyword: str) -> tuple[str, ...]:
    value = ds.get(keyword)
    if value is None or value == "":
        return ()
    items = value if isinstance(value, MultiValue) else str(value).split("\\")
    return tuple(str(v).strip() for v in items if str(v).strip())


def _range(ds: Dataset, keyword: str) -> Range | None:
    text = _text(ds, keyword)
    if text is None:
        return None
    if "-" not in text:
        return Range(text, text)
    low, _, high = text.partition("-")
    return Range(low.strip() or None, high.strip() or None)


def _single(ds: Dataset, keyword: str) -> bool:
    text = _text(ds, keyword)
    return text is not None and not any(c in text for c in "*?\\")


def parse(ds: Dataset, model: str, *, retrieve: bool = False) -> Asked:
    """The identifier of a C-FIND (or with ``retrieve`` a C-MOVE/C-GET) under ``model``."""
    level = (_text(ds, "QueryRetrieveLevel") or "").upper()
    if not level:
        raise QueryError(status.DOES_NOT_MATCH_SOP_CLASS, "QueryRetrieveLevel missing")
    root = "PATIENT" if model in PATIENT_ROOT else "STUDY"
    levels = _ORDER[_ORDER.index(root) :]
    if level not in levels:
        raise QueryError(
            status.DOES_NOT_MATCH_SOP_CLASS,
            f"QueryRetrieveLevel {level[:16]} not in {'/'.join(levels)}",
        )
    above = levels[: levels.index(level) + (1 if retrieve else 0)]
    for upper in above:
        key = _UNIQUE[upper]
        if upper == level:  # C-MOVE/C-GET: the level's own key, a list of UIDs allowed
            if not _list(ds, key) or (key == "PatientID" and not _single(ds, key)):
                raise QueryError(status.DOES_NOT_MATCH_SOP_CLASS, f"{key} missing")
        elif not _single(ds, key):
            raise QueryError(status.DOES_NOT_MATCH_SOP_CLASS, f"{key} must be one value")
    number = _text(ds, "InstanceNumber")
    try:
        instance_number = int(number) if number and not retrieve else None
    except ValueError as exc:
        raise QueryError(status.CANNOT_UNDERSTAND, "InstanceNumber is not a number") from exc
    modality = _text(ds, "Modality")
    query = Query(
        level=_SEARCH[level],  # type: ignore[arg-type]
        study_uids=_list(ds, "StudyInstanceUID"),
        series_uids=_list(ds, "SeriesInstanceUID") if level in ("SERIES", "IMAGE") else (),
        sop_uids=_list(ds, "SOPInstanceUID") if level == "IMAGE" else (),
        patient_id=_text(ds, "PatientID"),
        **({} if retrieve else _matching(ds, level)),
        modalities=(modality,) if modality and "*" not in modality and not retrieve else (),
        instance_number=instance_number,
        limit=500,
    )
    return Asked(level, query)


def _matching(ds: Dataset, level: str) -> dict[str, Any]:
    """The C-FIND-only matching keys (a retrieve names its instances by UID)."""
    out: dict[str, Any] = {
        "patient_name": _text(ds, "PatientName"),
        "accession_number": _text(ds, "AccessionNumber"),
        "study_description": _text(ds, "StudyDescription"),
        "study_date": _range(ds, "StudyDate"),
        "study_time": _range(ds, "StudyTime"),
        "modalities_in_study": tuple(m for m in _list(ds, "ModalitiesInStudy") if "*" not in m),
        "sop_class_uids": _list(ds, "SOPClassUID") if level == "IMAGE" else (),
    }
    if level in ("SERIES", "IMAGE"):
        out["series_number"] = _text(ds, "SeriesNumber")
        out["series_description"] = _text(ds, "SeriesDescription")
    return out


def _texts(values: Iterable[Any]) -> str:
    return "".join(str(v) for v in values if isinstance(v, str))


def _values(attrs: dict[str, Any], level: str, retrieve_ae: str) -> dict[str, Any]:
    values = {
        **attrs,
        "QueryRetrieveLevel": level,
        "RetrieveAETitle": retrieve_ae,
        "InstanceAvailability": "ONLINE",
    }
    number = values.get("SeriesNumber")
    if isinstance(number, int):
        values["SeriesNumber"] = str(number)
    if isinstance(values.get("InstanceNumber"), int):
        values["InstanceNumber"] = str(values["InstanceNumber"])
    return values


def _charset(values: dict[str, Any], asked_charset: str | None) -> str:
    if asked_charset is not None:
        try:
            _texts(values.values()).encode(charsets.QUERY_CODECS[asked_charset])
            return asked_charset
        except UnicodeEncodeError:
            pass
    return charsets.UTF8


# Sets ``items.encode`` writes exactly as pydicom does (others go through pydicom).
_ENCODED_CHARSETS = frozenset((charsets.UTF8, charsets.LATIN1, charsets.ASCII))
_TEXT_VRS = frozenset(("AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "PN", "SH", "TM", "UI"))


@dataclass(frozen=True)
class Plan:
    """The identifier's returned keys, read once per query: (keyword, tag, VR if empty, VR)."""

    keys: tuple[tuple[str, int, str, str], ...]


def plan(identifier: Dataset) -> Plan:
    keys = []
    for elem in identifier:
        keyword = elem.keyword
        if not keyword or keyword in _NOT_RETURNED or elem.tag.group == 0x0002:
            continue
        tag = int(elem.tag)
        keys.append((keyword, tag, str(elem.VR), items.vr_of(tag) or ""))
    return Plan(tuple(keys))


def encoded_answer(
    keys: Plan,
    attrs: dict[str, Any],
    level: str,
    asked_charset: str | None,
    retrieve_ae: str,
    implicit: bool,
) -> bytes | None:
    """The bytes ``answer`` would give pynetdicom, written without building a data set.

    Per answer the pydicom ``Dataset`` and its writer cost more than the
    search. None when the answer holds anything this writer does not
    reproduce byte for byte (a sequence, an ambiguous or long-text VR, a
    backslash, another character set): then ``answer`` is used.
    """
    values = _values(attrs, level, retrieve_ae)
    charset = _charset(values, asked_charset)
    if charset not in _ENCODED_CHARSETS:
        return None
    item: dict[int, tuple[str, Any]] = {0x00080052: ("CS", level)}
    for keyword, tag, empty_vr, vr in keys.keys:
        value = values.get(keyword)
        if value is None or value == [] or value == "":
            vr, value = empty_vr, ""
        else:
            value = _plain(value, vr)
        if vr not in _TEXT_VRS or value is None:
            return None
        item[tag] = (vr, value)
    try:
        return items.encode(item, None, charset, implicit, strict=True)
    except UnicodeEncodeError:
        return None


class AnswerEncoder:
    """``encoded_answer`` for one query, its per-key work done once.

    The same bytes as ``encoded_answer`` (tests compare them on every stored
    study of the benchmark archive): per answer only the values are looked
    up and encoded; the headers, their order, the VR checks and the
    SpecificCharacterSet element are prepared when the query comes.
    """

    def __init__(self, keys: Plan, level: str, retrieve_ae: str, implicit: bool) -> None:
        self.implicit = implicit
        fixed = {"QueryRetrieveLevel": level, "RetrieveAETitle": retrieve_ae}
        fixed["InstanceAvailability"] = "ONLINE"
        self.fixed = fixed
        # (tag, keyword, VR with a value, header when empty or None if that falls back)
        steps = [(0x00080052, "QueryRetrieveLevel", "CS", "CS")]
        steps += [(tag, keyword, vr, empty_vr) for keyword, tag, empty_vr, vr in keys.keys]
        self.steps = [
            (
                _tag_bytes(tag),
                keyword,
                vr,
                _empty_header(tag, empty_vr, implicit) if empty_vr in _TEXT_VRS else None,
            )
            for tag, keyword, vr, empty_vr in sorted(steps)
        ]
        self.charset_element = {
            cs: items.encode({}, None, cs, implicit) for cs in _ENCODED_CHARSETS
        }

    def __call__(self, attrs: dict[str, Any], asked_charset: str | None) -> bytes | None:
        fixed = self.fixed
        if asked_charset is None:
            charset = charsets.UTF8
        else:
            charset = _charset(
                _values(attrs, fixed["QueryRetrieveLevel"], fixed["RetrieveAETitle"]), asked_charset
            )
            if charset not in _ENCODED_CHARSETS:
                return None
        codec = _CODECS[charset]
        implicit = self.implicit
        parts = [self.charset_element[charset]]
        for tag_bytes, keyword, vr, empty in self.steps:
            value = fixed[keyword] if keyword in fixed else attrs.get(keyword)
            if value is None or value == [] or value == "":
                if empty is None:
                    return None
                parts.append(empty)
                continue
            if vr not in _TEXT_VRS:
                return None
            if isinstance(value, int) and (
                keyword in _NUMBERS or (vr == "IS" and not isinstance(value, bool))
            ):
                value = str(value)
            texts = value if isinstance(value, list) else (value,)
            raw = []
            for text in texts:
                if not isinstance(text, str) or "\\" in text:
                    return None
                if text.isascii():
                    raw.append(text.encode("ascii"))
                elif vr in _NON_ASCII_VRS:
                    try:
                        raw.append(text.encode(codec))
                    except UnicodeEncodeError:
                        return None
                else:
                    return None
            data = b"\\".join(raw)
            if len(data) % 2:
                data += b"\0" if vr == "UI" else b" "
            if implicit:
                parts.append(tag_bytes + _U32.pack(len(data)))
            else:
                parts.append(tag_bytes + vr.encode() + _U16.pack(len(data)))
            parts.append(data)
        return b"".join(parts)


_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_CODECS = {charsets.UTF8: "utf-8", charsets.LATIN1: "latin-1", charsets.ASCII: "ascii"}
# Text VRs whose values may hold letters beyond ASCII in the answer's set (``_plain``).
_NON_ASCII_VRS = frozenset(("PN", "LO", "SH"))
# Keys ``_values`` turns from int to text whatever their VR.
_NUMBERS = frozenset(("SeriesNumber", "InstanceNumber"))


def _tag_bytes(tag: int) -> bytes:
    return struct.pack("<HH", tag >> 16, tag & 0xFFFF)


def _empty_header(tag: int, vr: str, implicit: bool) -> bytes:
    if implicit:
        return _tag_bytes(tag) + _U32.pack(0)
    return _tag_bytes(tag) + vr.encode() + _U16.pack(0)


def _plain(value: Any, vr: str) -> str | list[str] | None:
    """The value as text(s) when pydicom would write exactly these characters."""
    if isinstance(value, int) and not isinstance(value, bool) and vr == "IS":
        value = str(value)
    texts = value if isinstance(value, list) else [value]
    if not all(isinstance(v, str) and "\\" not in v for v in texts):
        return None
    if vr != "PN" and not all(v.isascii() for v in texts) and vr not in ("LO", "SH"):
        return None
    if isinstance(value, list):
        return list(texts) if len(texts) > 1 else texts[0]
    return value


def answer(
    identifier: Dataset,
    attrs: dict[str, Any],
    level: str,
    asked_charset: str | None,
    retrieve_ae: str,
) -> Dataset:
    """One C-FIND answer: each key the identifier holds, with the hub's value or empty.

    Written in the query's character set when every value fits it, else UTF-8.
    """
    values = _values(attrs, level, retrieve_ae)
    charset = _charset(values, asked_charset)
    out = Dataset()
    name = charsets.specific_character_set(charset)
    if name is not None:
        out.SpecificCharacterSet = name
    out.QueryRetrieveLevel = level
    for elem in identifier:
        keyword = elem.keyword
        if not keyword or keyword in _NOT_RETURNED or elem.tag.group == 0x0002:
            continue
        value = values.get(keyword)
        if value is None or value == [] or value == "" or elem.VR == "SQ":
            out[elem.tag] = DataElement(elem.tag, elem.VR, [] if elem.VR == "SQ" else None)
        else:
            setattr(out, keyword, value)
    return out
