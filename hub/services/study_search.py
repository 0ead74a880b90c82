"""Searching the index for studies, series and instances (DICOMweb QIDO-RS).

Matching follows PS3.4 C.2.2.2 as far as the index keeps the attributes:
single values, ``*``/``?`` wildcards (matched case-insensitively, friendlier
for names typed at a desk than the standard's exact case; SQLite folds only
ASCII letters, PostgreSQL all), person names and descriptions compared
case-insensitively even without wildcards, date and time
ranges, lists of UIDs. Everything is decided in SQL through the indexes, with
LIMIT/OFFSET there too (a name wildcard's leading characters read the folded
names' index, ``ix_studies_patient_name_folded``); a study's counts and
modalities are read beside its row and the page's orders in one more query,
so the cost does not grow with the number of studies stored, only with the page.

Results are plain ``{keyword: value}`` dicts (str, int, list of str; None for
unknown): the DICOM JSON encoding is the web layer's (``hub.dicomweb.qido``).
Patient identity is answered as the stored files carry it: corrected from the
study's order when it has one (``hub.services.coercion``), else as received;
PatientName, PatientID and AccessionNumber match either the value received or
the order's.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal

from sqlalchemy import ColumnElement, Select, and_, func, or_, select
from sqlalchemy.orm import Session

from hub.models import Instance, Order, Series, Study
from hub.models.studies import MatchMethod
from hub.services import coercion, orders

Level = Literal["study", "series", "instance"]
_STUDIES = Study.metadata.tables["studies"]
_SERIES = Series.metadata.tables["series"]
_INSTANCES = Instance.metadata.tables["instances"]
_ORDERS = Order.metadata.tables["orders"]
_ESCAPE = "\\"
_IDS = 500  # order ids looked up ahead of a study query, at most


@dataclass(frozen=True)
class Range:
    """An inclusive range of DA or TM strings; None is open on that side."""

    low: str | None = None
    high: str | None = None


@dataclass(frozen=True)
class Query:
    """What to look for. Text values may hold ``*`` and ``?``; empty tuples match all."""

    level: Level
    study_uids: tuple[str, ...] = ()
    series_uids: tuple[str, ...] = ()
    sop_uids: tuple[str, ...] = ()
    sop_class_uids: tuple[str, ...] = ()
    patient_id: str | None = None
    patient_name: str | None = None
    accession_number: str | None = None
    study_description: str | None = None
    study_date: Range | None = None
    study_time: Range | None = None
    modalities_in_study: tuple[str, ...] = ()
    modalities: tuple[str, ...] = ()  # the series' Modality
    series_number: str | None = None
    series_description: str | None = None
    instance_number: int | None = None
    only_study: str | None = None  # a share: no other study exists
    with_study: bool = True  # study attributes on series and instance results
    with_series: bool = True  # series attributes on instance results
    limit: int = 100
    offset: int = 0


@dataclass
class Found:
    rows: list[dict[str, Any]] = field(default_factory=list)
    more: bool = False  # further results exist past this page


def search(s: Session, q: Query) -> Found:
    """One page of results at ``q.level``, and whether more follow."""
    if q.level == "study":
        return _studies(s, q)
    if q.level == "series":
        return _series(s, q)
    return _instances(s, q)


def like_pattern(value: str) -> str:
    """A DICOM wildcard value as a SQL LIKE pattern (escaped with backslash)."""
    out = value.replace(_ESCAPE, _ESCAPE * 2).replace("%", r"\%").replace("_", r"\_")
    return out.replace("*", "%").replace("?", "_")


def _wild(value: str) -> bool:
    return "*" in value or "?" in value


def _text(
    column: Any, value: str, *, fold: bool = False, indexed: str | None = None
) -> ColumnElement[bool]:
    """Single value or wildcard match; ``fold`` compares case-insensitively even without
    wildcards (person names). ``indexed``: the dialect's name when ``lower(column)``
    has an index in byte order (``ix_studies_patient_name_folded``; "C" on
    PostgreSQL): the comparison is written so that index serves an exact name and
    a wildcard's leading characters."""
    if not (fold or _wild(value)):
        return column == value  # through the column's index
    folded: Any = func.lower(column)
    if indexed == "postgresql":
        folded = folded.collate("C")  # the same answers: equality and LIKE ignore collation
    value = value.lower()
    if not _wild(value):
        return folded == value
    match = folded.like(like_pattern(value), escape=_ESCAPE)
    head = value[: min(i for i in (value.find("*"), value.find("?"), len(value)) if i >= 0)]
    if indexed is None or not head or ord(head[-1]) >= 0x10FFFF:
        return match
    # Every match starts with ``head`` (both sides folded), so in byte order it
    # lies in [head, head with its last character's successor): a range the
    # index reads, where SQLite's LIKE on lower() would compare every row.
    successor = ord(head[-1]) + 1
    if 0xD800 <= successor <= 0xDFFF:  # surrogates are no characters (nor UTF-8)
        successor = 0xE000
    return and_(match, folded >= head, folded < head[:-1] + chr(successor))


def _identity(s: Session, column: str, value: str) -> ColumnElement[bool]:
    """The study's own value (as received) or its order's corrected one. The orders'
    ids are looked up first, so the OR is of two index lookups on studies (an OR
    with a subquery makes both databases scan every study)."""
    ids = list(s.scalars(select(_ORDERS.c.id).where(_text(_ORDERS.c[column], value)).limit(_IDS)))
    if len(ids) == _IDS:  # a wide wildcard: let the database join
        via: Any = select(_ORDERS.c.id).where(_text(_ORDERS.c[column], value))
    elif ids:
        via = ids
    else:
        return _text(_STUDIES.c[column], value)
    return or_(_text(_STUDIES.c[column], value), _STUDIES.c.order_id.in_(via))


# The PatientName an order gives its images: Owner^Animal (``names.animal_patient_name``).
_ORDER_NAME = (
    func.coalesce(func.nullif(_ORDERS.c.owner_last_name, ""), _ORDERS.c.owner_organization, "")
    .concat("^")
    .concat(_ORDERS.c.patient_name)
)


def _name(s: Session, value: str) -> ColumnElement[bool]:
    """PatientName as received or as the study's order gives it; the orders' ids
    first, as in ``_identity``, so the study side stays one read of the folded
    names' index (an OR with a subquery scans every study)."""
    dialect = s.get_bind().dialect.name
    own = _text(_STUDIES.c.patient_name, value, fold=True, indexed=dialect)
    by_order = _text(_ORDER_NAME, value, fold=True)
    ids = list(s.scalars(select(_ORDERS.c.id).where(by_order).limit(_IDS)))
    if len(ids) == _IDS:
        via: Any = select(_ORDERS.c.id).where(by_order)
    elif ids:
        via = ids
    else:
        return own
    return or_(own, _STUDIES.c.order_id.in_(via))


def _range(column: Any, r: Range, *, time: bool = False) -> list[ColumnElement[bool]]:
    """A DA range, or a TM range on HHMMSS (stored times may carry fractions, bounds
    may stop at the hour or minute: both are compared as six digits)."""
    value = func.substr(column, 1, 6) if time else column
    width = 6 if time else 8
    out: list[ColumnElement[bool]] = [column != ""]
    if r.low:
        out.append(value >= r.low.ljust(width, "0"))
    if r.high:
        out.append(value <= r.high.ljust(width, "0"))
    return out


def _study_filters(s: Session, q: Query) -> list[ColumnElement[bool]]:
    c = _STUDIES.c
    out: list[ColumnElement[bool]] = []
    if q.only_study is not None:
        out.append(c.study_instance_uid == q.only_study)
    if q.study_uids:
        out.append(c.study_instance_uid.in_(q.study_uids))
    if q.patient_id and q.patient_id != "*":
        out.append(_identity(s, "patient_id", q.patient_id))
    if q.accession_number and q.accession_number != "*":
        out.append(_identity(s, "accession_number", q.accession_number))
    if q.patient_name and q.patient_name != "*":
        out.append(_name(s, q.patient_name))
    if q.study_description and q.study_description != "*":
        out.append(_text(c.study_description, q.study_description, fold=True))
    if q.study_date is not None:
        out += _range(c.study_date, q.study_date)
    if q.study_time is not None:
        out += _range(c.study_time, q.study_time, time=True)
    if q.modalities_in_study:
        having = select(_SERIES.c.study_id).where(_SERIES.c.modality.in_(q.modalities_in_study))
        out.append(c.id.in_(having))
    return out


def _series_filters(q: Query) -> list[ColumnElement[bool]]:
    c = _SERIES.c
    out: list[ColumnElement[bool]] = []
    if q.series_uids:
        out.append(c.series_instance_uid.in_(q.series_uids))
    if q.modalities:
        out.append(c.modality.in_(q.modalities))
    if q.series_number:
        out.append(c.series_number == q.series_number)
    if q.series_description and q.series_description != "*":
        out.append(_text(c.series_description, q.series_description, fold=True))
    return out


def _instance_filters(q: Query) -> list[ColumnElement[bool]]:
    c = _INSTANCES.c
    out: list[ColumnElement[bool]] = []
    if q.sop_uids:
        out.append(c.sop_instance_uid.in_(q.sop_uids))
    if q.sop_class_uids:
        out.append(c.sop_class_uid.in_(q.sop_class_uids))
    if q.instance_number is not None:
        out.append(c.instance_number == q.instance_number)
    return out


_STUDY_COLUMNS = (
    _STUDIES.c.id,
    _STUDIES.c.study_instance_uid,
    _STUDIES.c.patient_id,
    _STUDIES.c.patient_name,
    _STUDIES.c.accession_number,
    _STUDIES.c.study_date,
    _STUDIES.c.study_time,
    _STUDIES.c.study_description,
    _STUDIES.c.received,
    _STUDIES.c.order_id,
    _STUDIES.c.match_method,
)


def _page(s: Session, stmt: Select, q: Query) -> tuple[list[Any], bool]:
    rows = list(s.execute(stmt.limit(q.limit + 1).offset(q.offset)))
    return rows[: q.limit], len(rows) > q.limit


def _studies_statement(s: Session, q: Query) -> Select:
    """The study rows ``q`` matches with their tallies, newest first (unpaged)."""
    return (
        select(*_STUDY_COLUMNS, *_TALLY)
        .where(*_study_filters(s, q))
        .order_by(_STUDIES.c.study_date.desc(), _STUDIES.c.study_time.desc(), _STUDIES.c.id.desc())
    )


def _studies(s: Session, q: Query) -> Found:
    rows, more = _page(s, _studies_statement(s, q), q)
    if not rows:
        return Found()
    found = orders.by_ids(s, {r.order_id for r in rows if r.order_id is not None})
    out = []
    for r in rows:
        attrs = _study_attrs(r, found.get(r.order_id) if r.order_id else None)
        attrs["ModalitiesInStudy"] = (
            sorted(set(r.modalities.split(_SEP)) - {""}) if r.modalities else []
        )
        attrs["NumberOfStudyRelatedSeries"] = r.n_series
        attrs["NumberOfStudyRelatedInstances"] = r.n_instances
        out.append(attrs)
    return Found(out, more)


# A study's series (those holding an instance), instances and modalities, read
# beside each matching row through the study_id indexes: cheaper than a second
# grouped query over a list of a page's ids (and no Python loop over series).
_SEP = "\x1f"
_HELD = select(_INSTANCES.c.id).where(_INSTANCES.c.series_id == _SERIES.c.id).exists()
_TALLY = (
    select(func.count())
    .select_from(_SERIES)
    .where(_SERIES.c.study_id == _STUDIES.c.id, _HELD)
    .scalar_subquery()
    .label("n_series"),
    select(func.count())
    .select_from(_INSTANCES)
    .where(_INSTANCES.c.study_id == _STUDIES.c.id)
    .scalar_subquery()
    .label("n_instances"),
    select(func.aggregate_strings(_SERIES.c.modality, _SEP))
    .where(_SERIES.c.study_id == _STUDIES.c.id, _HELD)
    .scalar_subquery()
    .label("modalities"),
)


def _study_attrs(r: Any, order: Order | None) -> dict[str, Any]:
    received = {k: v for k, v in (r.received or {}).items() if v not in (None, "", [])}
    patient: dict[str, Any] = {
        "PatientName": r.patient_name,
        "PatientID": r.patient_id,
        "AccessionNumber": r.accession_number,
        **received,
    }
    if order is not None:
        fixes = coercion.corrections(
            coercion.target(order), patient, overwrite=r.match_method == MatchMethod.MANUAL
        )
        patient.update({k: v["to"] for k, v in fixes.items()})
    return {
        "StudyInstanceUID": r.study_instance_uid,
        "StudyDate": r.study_date,
        "StudyTime": r.study_time,
        "AccessionNumber": patient.get("AccessionNumber"),
        "ReferringPhysicianName": order.referring_vet if order is not None else None,
        "PatientName": patient.get("PatientName"),
        "PatientID": patient.get("PatientID"),
        "PatientBirthDate": patient.get("PatientBirthDate"),
        "PatientSex": patient.get("PatientSex"),
        "PatientSpeciesDescription": patient.get("PatientSpeciesDescription"),
        "PatientBreedDescription": patient.get("PatientBreedDescription"),
        "PatientSexNeutered": patient.get("PatientSexNeutered"),
        "ResponsiblePerson": patient.get("ResponsiblePerson"),
        "ResponsiblePersonRole": patient.get("ResponsiblePersonRole"),
        "ResponsibleOrganization": patient.get("ResponsibleOrganization"),
        "StudyID": None,
        "StudyDescription": r.study_description,
    }


_SERIES_COLUMNS = (
    _SERIES.c.id.label("series_id"),
    _SERIES.c.series_instance_uid,
    _SERIES.c.modality,
    _SERIES.c.series_number,
    _SERIES.c.series_description,
)


def _series_attrs(r: Any) -> dict[str, Any]:
    number = r.series_number.strip() if r.series_number else ""
    return {
        "SeriesInstanceUID": r.series_instance_uid,
        "Modality": r.modality,
        "SeriesNumber": int(number) if number.lstrip("+-").isdigit() else None,
        "SeriesDescription": r.series_description,
    }


def _with_study(s: Session, rows: list[Any], q: Query) -> list[dict[str, Any]]:
    """Each row's study attributes (all of them, or only its UID)."""
    if not q.with_study:
        return [{"StudyInstanceUID": r.study_instance_uid} for r in rows]
    found = orders.by_ids(s, {r.order_id for r in rows if r.order_id is not None})
    return [_study_attrs(r, found.get(r.order_id) if r.order_id else None) for r in rows]


def _series(s: Session, q: Query) -> Found:
    stmt = (
        select(*_STUDY_COLUMNS, *_SERIES_COLUMNS)
        .join(_STUDIES, _STUDIES.c.id == _SERIES.c.study_id)
        .where(*_study_filters(s, q), *_series_filters(q))
        .order_by(_STUDIES.c.id.desc(), _SERIES.c.id)
    )
    rows, more = _page(s, stmt, q)
    if not rows:
        return Found()
    counted = select(_INSTANCES.c.series_id, func.count(_INSTANCES.c.id)).where(
        _INSTANCES.c.series_id.in_([r.series_id for r in rows])
    )
    counts: dict[int, int] = {
        series_id: n for series_id, n in s.execute(counted.group_by(_INSTANCES.c.series_id))
    }
    out = []
    for r, study in zip(rows, _with_study(s, rows, q), strict=True):
        attrs = {**study, **_series_attrs(r)}
        attrs["NumberOfSeriesRelatedInstances"] = counts.get(r.series_id, 0)
        out.append(attrs)
    return Found(out, more)


def _instances(s: Session, q: Query) -> Found:
    i = _INSTANCES.c
    stmt = (
        select(
            *_STUDY_COLUMNS,
            *_SERIES_COLUMNS,
            i.sop_class_uid,
            i.sop_instance_uid,
            i.instance_number,
            i.pixel_rows,
            i.pixel_columns,
            i.number_of_frames,
        )
        .select_from(_INSTANCES)
        .join(_SERIES, _SERIES.c.id == i.series_id)
        .join(_STUDIES, _STUDIES.c.id == i.study_id)
        .where(*_study_filters(s, q), *_series_filters(q), *_instance_filters(q))
        .order_by(_STUDIES.c.id.desc(), _SERIES.c.id, i.instance_number, i.id)
    )
    rows, more = _page(s, stmt, q)
    out = []
    for r, study in zip(rows, _with_study(s, rows, q), strict=True):
        attrs = {**study, **(_series_attrs(r) if q.with_series else {})}
        attrs["SeriesInstanceUID"] = r.series_instance_uid
        attrs.update(
            SOPClassUID=r.sop_class_uid,
            SOPInstanceUID=r.sop_instance_uid,
            InstanceNumber=r.instance_number,
            Rows=r.pixel_rows,
            Columns=r.pixel_columns,
            NumberOfFrames=r.number_of_frames,
        )
        out.append(attrs)
    return Found(out, more)


# -- Query/Retrieve (the DICOM door's C-FIND at PATIENT level, C-MOVE, C-GET) --

PATIENT_SCAN = 5000  # studies grouped into patients per PATIENT-level query, at most


def patients(s: Session, q: Query) -> list[dict[str, Any]]:
    """PATIENT-level answers: the studies ``q`` matches, grouped by the PatientID
    they are answered with (corrected from the order), newest study's identity
    first. The hub keeps no patient table; an animal is its studies."""
    found = _studies(s, replace(q, level="study", limit=PATIENT_SCAN, offset=0))
    out: dict[str, dict[str, Any]] = {}
    for row in found.rows:
        key = row.get("PatientID") or ""
        seen = out.get(key)
        if seen is None:
            seen = out[key] = {
                k: row.get(k)
                for k in (
                    "PatientName",
                    "PatientID",
                    "PatientBirthDate",
                    "PatientSex",
                    "PatientSpeciesDescription",
                    "PatientBreedDescription",
                    "PatientSexNeutered",
                    "ResponsiblePerson",
                    "ResponsiblePersonRole",
                    "ResponsibleOrganization",
                )
            }
            seen.update(
                NumberOfPatientRelatedStudies=0,
                NumberOfPatientRelatedSeries=0,
                NumberOfPatientRelatedInstances=0,
            )
        seen["NumberOfPatientRelatedStudies"] += 1
        seen["NumberOfPatientRelatedSeries"] += row["NumberOfStudyRelatedSeries"]
        seen["NumberOfPatientRelatedInstances"] += row["NumberOfStudyRelatedInstances"]
    return list(out.values())


@dataclass(frozen=True)
class StoredFile:
    """One instance to retrieve: its file (relative to the data dir) and syntax."""

    study_instance_uid: str
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str
    path: str


def stored_files(s: Session, q: Query) -> list[StoredFile]:
    """Every instance ``q`` names (its UIDs and patient), in study/series/number order."""
    i = _INSTANCES.c
    stmt = (
        select(
            _STUDIES.c.study_instance_uid,
            i.sop_class_uid,
            i.sop_instance_uid,
            i.transfer_syntax_uid,
            i.path,
        )
        .select_from(_INSTANCES)
        .join(_SERIES, _SERIES.c.id == i.series_id)
        .join(_STUDIES, _STUDIES.c.id == i.study_id)
        .where(*_study_filters(s, q), *_series_filters(q), *_instance_filters(q))
        .order_by(_STUDIES.c.id, _SERIES.c.id, i.instance_number, i.id)
    )
    return [StoredFile(*row) for row in s.execute(stmt)]
