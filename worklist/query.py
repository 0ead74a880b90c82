"""A C-FIND identifier as a database query (PS3.4 C.2.2.2), with bound parameters only.

Every matching key maps to an indexed column of ``orders``; the identifier's
values only ever reach SQL as bound parameters (wildcards become LIKE/GLOB
patterns with their own special characters escaped), so a query holding
quotes or SQL text is just an odd value that matches nothing.

Matching rules implemented:

* single value (exact; case-sensitive except person names, which compare
  without case or accents through ``Order.name_key``);
* ``*`` / ``?`` wildcards; a value of only ``*`` is universal matching;
* DA/TM/DT ranges incl. open ranges; SPS start date and time given together
  with a time range form one date-time interval;
* UID lists (``a\\b\\c``) and, leniently, lists for AE/CS/SH keys;
* sequence matching inside ScheduledProcedureStepSequence (and the code
  value of the species / requested procedure code sequences);
* an exact Modality also matches its aliases (``mappings/modality_aliases.yaml``),
  and ``answer_modality`` names the code those answers carry;
* an empty or absent stored value never matches a non-empty key.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from sqlalchemy import ColumnElement, Select, and_, false, inspect, or_, select
from sqlalchemy.sql.elements import ColumnClause
from sqlmodel import col

from hub.mappings import ModalityAliases
from hub.models import Order, OrderStatus
from hub.names import fold
from hub.services.orders import on_worklist
from worklist import status
from worklist.items import ALL, SPECIFIC_CHARACTER_SET, Spec, vr_of

_DA = re.compile(r"\d{8}")
_DA_OLD = re.compile(r"\d{4}\.\d{2}\.\d{2}")
_TM = re.compile(r"(\d{2})(\d{2})?(\d{2})?(\.\d{1,6})?")
_DT = re.compile(r"(\d{4,14})(\.\d{1,6})?([+-]\d{4})?")
_UID = re.compile(r"[0-9.]{1,64}")
_NO_ALIASES = ModalityAliases()


class QueryError(Exception):
    """The identifier cannot be answered; carries the DICOM status and a comment for the SCU."""

    def __init__(self, comment: str, code: int = status.DOES_NOT_MATCH_SOP_CLASS) -> None:
        super().__init__(comment)
        self.status = code
        self.comment = comment[:64]


@dataclass
class Scope:
    """Defaults of a registered device, applied only where its query leaves a key universal."""

    station: str | None = None
    modality: str | None = None
    site: str | None = None
    date_window_days: int | None = None


@dataclass
class WorklistQuery:
    spec: Spec
    clauses: list[ColumnElement[bool]] = field(default_factory=list)
    constrained: set[str] = field(default_factory=set)  # keywords that carried a value
    # Exact Modality values asked for, when aliases widened the match (see ``answer_modality``).
    modalities: tuple[str, ...] = ()


# -- value helpers ----------------------------------------------------------


def _values(elem_value: Any) -> list[str]:
    if elem_value is None:
        return []
    if isinstance(elem_value, MultiValue | list | tuple):
        return [str(v) for v in elem_value]
    return [str(elem_value)]


def _is_universal(text: str) -> bool:
    return text == "" or set(text) == {"*"}


def _has_wildcard(text: str) -> bool:
    return "*" in text or "?" in text


def _like(column: Any, pattern: str, dialect: str) -> ColumnElement[bool]:
    """A DICOM wildcard pattern as a case-sensitive SQL pattern (GLOB on SQLite)."""
    if dialect == "sqlite":
        glob = "".join("[[]" if c == "[" else c for c in pattern)
        return column.op("GLOB")(glob)
    like = "".join(
        {"*": "%", "?": "_", "%": "\\%", "_": "\\_", "\\": "\\\\"}.get(c, c) for c in pattern
    )
    return column.like(like, escape="\\")


def text_clause(
    column: Any, raw: list[str], dialect: str, *, transform: Callable[[str], str] = str
) -> ColumnElement[bool] | None:
    """Single value, wildcard or (lenient) list matching of a string column; None = universal."""
    values = [v.strip() for v in raw]
    if not values or any(_is_universal(v) for v in values):
        return None
    parts = []
    for v in values:
        v = transform(v)
        if _has_wildcard(v):
            parts.append(_like(column, v, dialect))
        else:
            parts.append(column == v)
    return parts[0] if len(parts) == 1 else or_(*parts)


def _pn_key(value: str) -> str:
    """Query PN folded like ``name_key``: first component group, no trailing "^"."""
    alphabetic = value.split("=")[0]
    return fold(alphabetic).rstrip("^ ").replace(" ^", "^")


def enum_clause(
    column: Any, raw: list[str], mapping: dict[str, list[Any]]
) -> ColumnElement[bool] | None:
    """Match a coded value (e.g. STAT) stored in another spelling (e.g. 'stat')."""
    values = [v.strip() for v in raw]
    if not values or any(_is_universal(v) for v in values):
        return None
    stored: list[Any] = []
    for v in values:
        for code, spellings in mapping.items():
            if fnmatch.fnmatchcase(code, v.replace("[", "[[]")):
                stored.extend(spellings)
    if not stored:
        return false()
    plain = [s for s in stored if s is not None]
    clause = column.in_(plain) if plain else false()
    return or_(clause, column.is_(None)) if None in stored else clause


def uid_clause(column: Any, raw: list[str], keyword: str) -> ColumnElement[bool] | None:
    values = [v.strip().rstrip("\0") for v in raw]
    if not values or any(_is_universal(v) for v in values):
        return None
    for v in values:
        if not _UID.fullmatch(v):
            raise QueryError(f"{keyword}: {v[:30]!r} is not a UID")
    return column.in_(values)


def _parse_da(text: str, keyword: str) -> str:
    if _DA_OLD.fullmatch(text):  # ACR-NEMA YYYY.MM.DD, still sent by old devices
        text = text.replace(".", "")
    if not _DA.fullmatch(text):
        raise QueryError(f"{keyword}: {text[:20]!r} is not a date")
    return text


def _split_range(text: str, keyword: str) -> tuple[str, str] | None:
    """'lo-hi', 'lo-', '-hi' or a single value; None for universal."""
    text = text.strip()
    if _is_universal(text) or text == "-":
        return None
    if text.count("-") > 1:
        raise QueryError(f"{keyword}: {text[:20]!r} is not a range")
    if "-" in text:
        lo, _, hi = text.partition("-")
        return lo.strip(), hi.strip()
    return text, text


def _parse_tm(text: str, keyword: str, *, upper: bool) -> str:
    match = _TM.fullmatch(text.replace(":", ""))
    if not match:
        raise QueryError(f"{keyword}: {text[:20]!r} is not a time")
    digits = "".join(g or "" for g in match.groups()[:3])
    if int(digits[:2]) > 24:
        raise QueryError(f"{keyword}: {text[:20]!r} is not a time")
    return digits + ("995959"[len(digits) :] if upper else "000000"[len(digits) :])


def _parse_dt(text: str, keyword: str, *, upper: bool) -> tuple[str, str]:
    match = _DT.fullmatch(text)
    if not match or len(match.group(1)) % 2:
        raise QueryError(f"{keyword}: {text[:26]!r} is not a date-time")
    digits = match.group(1)
    full = digits + ("99991231235959" if upper else "00000101000000")[len(digits) :]
    return full[:8], full[8:14]


Bound = tuple[str, str]  # (YYYYMMDD, HHMMSS)


def interval_clause(lo: Bound | None, hi: Bound | None) -> ColumnElement[bool] | None:
    """SPS start (date, time) within [lo, hi], written so the date index can be used."""
    d, t = col(Order.sps_start_date), col(Order.sps_start_time)
    parts: list[ColumnElement[bool]] = []
    if lo is not None:
        parts.append(d >= lo[0])
        if lo[1] != "000000":
            parts.append(or_(d > lo[0], t >= lo[1]))
    if hi is not None:
        parts.append(d <= hi[0])
        if hi[1] < "235959":
            parts.append(or_(d < hi[0], t <= hi[1]))
    return and_(*parts) if parts else None


def _date_bounds(text: str, keyword: str) -> tuple[str | None, str | None] | None:
    rng = _split_range(text, keyword)
    if rng is None:
        return None
    lo, hi = rng
    return (_parse_da(lo, keyword) if lo else None, _parse_da(hi, keyword) if hi else None)


def _time_bounds(text: str, keyword: str) -> tuple[str | None, str | None] | None:
    rng = _split_range(text, keyword)
    if rng is None:
        return None
    lo, hi = rng
    return (
        _parse_tm(lo, keyword, upper=False) if lo else None,
        _parse_tm(hi, keyword, upper=True) if hi else None,
    )


def sps_datetime_clause(
    date_text: str, time_text: str, dt_text: str = ""
) -> ColumnElement[bool] | None:
    """PS3.4 C.2.2.2.5: SPS start date and time; with a time range they are one interval."""
    clauses: list[ColumnElement[bool]] = []
    dates = _date_bounds(date_text, "ScheduledProcedureStepStartDate")
    times = _time_bounds(time_text, "ScheduledProcedureStepStartTime")
    time_is_range = "-" in time_text.strip() and times is not None
    if dates is not None and times is not None and time_is_range:
        d_lo, d_hi = dates
        t_lo, t_hi = times
        lo = (d_lo, t_lo or "000000") if d_lo else None
        hi = (d_hi, t_hi or "235959") if d_hi else None
        clause = interval_clause(lo, hi)
        if clause is not None:
            clauses.append(clause)
    else:
        if dates is not None:
            d_lo, d_hi = dates
            clause = interval_clause(
                (d_lo, "000000") if d_lo else None, (d_hi, "235959") if d_hi else None
            )
            if clause is not None:
                clauses.append(clause)
        if times is not None:
            t_lo, t_hi = times
            if t_lo:
                clauses.append(col(Order.sps_start_time) >= t_lo)
            if t_hi:
                clauses.append(col(Order.sps_start_time) <= t_hi)
    rng = _split_range(dt_text, "ScheduledProcedureStepStartDateTime") if dt_text else None
    if rng is not None:
        lo_t, hi_t = rng
        key = "ScheduledProcedureStepStartDateTime"
        clause = interval_clause(
            _parse_dt(lo_t, key, upper=False) if lo_t else None,
            _parse_dt(hi_t, key, upper=True) if hi_t else None,
        )
        if clause is not None:
            clauses.append(clause)
    if not clauses:
        return None
    return and_(*clauses) if len(clauses) > 1 else clauses[0]


def date_clause(column: Any, text: str, keyword: str) -> ColumnElement[bool] | None:
    """DA matching of a ``date`` column."""
    bounds = _date_bounds(text, keyword)
    if bounds is None:
        return None
    lo, hi = bounds
    parts = [column.is_not(None)]
    if lo:
        parts.append(column >= datetime.strptime(lo, "%Y%m%d").date())
    if hi:
        parts.append(column <= datetime.strptime(hi, "%Y%m%d").date())
    return and_(*parts)


# -- identifier -> query ----------------------------------------------------

_TEXT_TOP: dict[str, Any] = {
    "AccessionNumber": Order.accession_number,
    "PatientID": Order.patient_id,
    "IssuerOfPatientID": Order.source,
    "RequestedProcedureID": Order.requested_procedure_id,
    "PlacerOrderNumberImagingServiceRequest": Order.placer_order_number,
    "PatientSpeciesDescription": Order.species_description,
    "PatientBreedDescription": Order.breed,
    "ResponsibleOrganization": Order.owner_organization,
    "RequestedProcedureDescription": Order.procedure_description,
}
_TEXT_SPS: dict[str, Any] = {
    "ScheduledStationAETitle": Order.station_ae_title,
    "ScheduledProcedureStepID": Order.scheduled_step_id,
    "ScheduledProcedureStepLocation": Order.site,
    "ScheduledProcedureStepDescription": Order.procedure_description,
}
_ENUM: dict[str, tuple[Any, dict[str, list[Any]]]] = {
    "RequestedProcedurePriority": (Order.priority, {"ROUTINE": ["routine"], "STAT": ["stat"]}),
    "PatientSex": (
        Order.patient_sex,
        {"M": ["male"], "F": ["female"], "O": ["unknown", None]},
    ),
    "PatientSexNeutered": (Order.patient_neutered, {"ALTERED": [True], "UNALTERED": [False]}),
    "ScheduledProcedureStepStatus": (
        Order.status,
        {"SCHEDULED": [OrderStatus.SCHEDULED], "STARTED": [OrderStatus.IN_PROGRESS]},
    ),
}
# Code sequences whose CodeValue is matched: keyword -> column
_CODE_SEQUENCES: dict[str, Any] = {
    "PatientSpeciesCodeSequence": Order.species_code,
    "RequestedProcedureCodeSequence": Order.procedure_code,
    "ScheduledProtocolCodeSequence": Order.procedure_code,
}
# Keys that are never stored: a non-empty value matches nothing.
_NEVER = frozenset({"ScheduledPerformingPhysicianName"})


def _sequence_items(elem: Any, keyword: str) -> list[Dataset]:
    if elem.VR != "SQ":
        raise QueryError(f"{keyword} must be a sequence (VR SQ), not {elem.VR}")
    items = list(elem.value or [])
    if len(items) > 1:
        raise QueryError(f"{keyword} may hold at most one item in a query")
    return items


def _spec_of(ds: Dataset, path: str) -> Spec:
    """Requested keys of a data set (sequence items: nested specs)."""
    out: list[tuple[int, Any]] = []
    for elem in ds:
        t = int(elem.tag)
        if elem.tag.is_private or elem.tag.element == 0 or t == SPECIFIC_CHARACTER_SET:
            continue
        known_vr = vr_of(t)
        if known_vr is None:
            continue  # retired/unknown: nothing to answer with
        if known_vr == "SQ":
            items = _sequence_items(elem, path + elem.keyword)
            if not items or len(items[0]) == 0:
                out.append((t, ALL))
            else:
                out.append((t, _spec_of(items[0], path + elem.keyword + ".")))
        else:
            if elem.VR == "SQ":
                raise QueryError(f"{elem.keyword or elem.tag} is not a sequence")
            out.append((t, None))
    out.sort(key=lambda p: p[0])
    return tuple(out)


def _text(ds: Dataset, keyword: str) -> list[str]:
    elem = ds.get(keyword)
    if elem is None:
        return []
    elem = ds[keyword]
    if elem.VR == "SQ":
        raise QueryError(f"{keyword} must not be a sequence")
    return _values(elem.value)


def parse(
    identifier: Dataset, dialect: str, aliases: ModalityAliases | None = None
) -> WorklistQuery:
    """Translate a decoded MWL identifier into a query; raises QueryError for odd content.

    ``aliases``: a Modality asked for also matches the codes grouped with it.
    """
    try:
        return _parse(identifier, dialect, aliases or _NO_ALIASES)
    except QueryError:
        raise
    except (UnicodeError, LookupError) as exc:
        raise QueryError(
            f"identifier cannot be decoded: {exc}"[:64], status.CANNOT_UNDERSTAND
        ) from None
    except (ValueError, TypeError, AttributeError, OverflowError) as exc:
        raise QueryError(f"identifier not understood: {exc}"[:64]) from None


def _parse(identifier: Dataset, dialect: str, aliases: ModalityAliases) -> WorklistQuery:
    query = WorklistQuery(spec=_spec_of(identifier, ""))
    add = query.clauses.append

    def constrain(keyword: str, clause: ColumnElement[bool] | None) -> None:
        if clause is not None:
            add(clause)
            query.constrained.add(keyword)

    for keyword, column in _TEXT_TOP.items():
        constrain(keyword, text_clause(column, _text(identifier, keyword), dialect))
    names_ = _text(identifier, "PatientName")
    constrain("PatientName", text_clause(Order.name_key, names_, dialect, transform=_pn_key))
    for keyword, (column, mapping) in _ENUM.items():
        if keyword == "ScheduledProcedureStepStatus":
            continue
        constrain(keyword, enum_clause(column, _text(identifier, keyword), mapping))
    role = [v.strip() for v in _text(identifier, "ResponsiblePersonRole")]
    if role and not any(_is_universal(v) for v in role):
        wanted = any(fnmatch.fnmatchcase("OWNER", v) for v in role)
        constrain(
            "ResponsiblePersonRole", col(Order.owner_last_name).is_not(None) if wanted else false()
        )
    constrain(
        "StudyInstanceUID",
        uid_clause(
            Order.study_instance_uid, _text(identifier, "StudyInstanceUID"), "StudyInstanceUID"
        ),
    )
    birth = _text(identifier, "PatientBirthDate")
    if birth:
        constrain(
            "PatientBirthDate",
            date_clause(Order.patient_birth_date, birth[0], "PatientBirthDate"),
        )
    for keyword in _NEVER:
        constrain(keyword, _never(_text(identifier, keyword)))
    for keyword, column in _CODE_SEQUENCES.items():
        if keyword == "ScheduledProtocolCodeSequence":
            continue
        constrain(keyword, _code_clause(identifier, keyword, column, dialect))

    sps_elem = identifier.get("ScheduledProcedureStepSequence")
    if sps_elem is not None:
        items = _sequence_items(
            identifier["ScheduledProcedureStepSequence"], "ScheduledProcedureStepSequence"
        )
        if items:
            _parse_sps(items[0], query, dialect, constrain, aliases)
    return query


def _never(raw: list[str]) -> ColumnElement[bool] | None:
    values = [v.strip() for v in raw]
    if not values or any(_is_universal(v) for v in values):
        return None
    return false()


def _code_clause(
    ds: Dataset, keyword: str, column: Any, dialect: str
) -> ColumnElement[bool] | None:
    elem = ds.get(keyword)
    if elem is None:
        return None
    items = _sequence_items(ds[keyword], keyword)
    if not items:
        return None
    return text_clause(column, _text(items[0], "CodeValue"), dialect)


def _parse_sps(
    sps: Dataset,
    query: WorklistQuery,
    dialect: str,
    constrain: Callable[[str, ColumnElement[bool] | None], None],
    aliases: ModalityAliases,
) -> None:
    for keyword, column in _TEXT_SPS.items():
        constrain(keyword, text_clause(column, _text(sps, keyword), dialect))
    constrain("Modality", _modality_clause(_text(sps, "Modality"), dialect, aliases, query))
    column, mapping = _ENUM["ScheduledProcedureStepStatus"]
    constrain(
        "ScheduledProcedureStepStatus",
        enum_clause(column, _text(sps, "ScheduledProcedureStepStatus"), mapping),
    )
    for keyword in _NEVER:
        constrain(keyword, _never(_text(sps, keyword)))
    constrain(
        "ScheduledProtocolCodeSequence",
        _code_clause(sps, "ScheduledProtocolCodeSequence", Order.procedure_code, dialect),
    )
    date_text = _single(
        _text(sps, "ScheduledProcedureStepStartDate"), "ScheduledProcedureStepStartDate"
    )
    time_text = _single(
        _text(sps, "ScheduledProcedureStepStartTime"), "ScheduledProcedureStepStartTime"
    )
    dt_text = _single(
        _text(sps, "ScheduledProcedureStepStartDateTime"), "ScheduledProcedureStepStartDateTime"
    )
    clause = sps_datetime_clause(date_text, time_text, dt_text)
    if clause is not None:
        query.clauses.append(clause)
        if not _is_universal(date_text.strip()) or not _is_universal(dt_text.strip()):
            query.constrained.add("ScheduledProcedureStepStartDate")
        if not _is_universal(time_text.strip()):
            query.constrained.add("ScheduledProcedureStepStartTime")


def _modality_clause(
    raw: list[str], dialect: str, aliases: ModalityAliases, query: WorklistQuery
) -> ColumnElement[bool] | None:
    """Modality matching, an exact code widened to its alias group (CR finds DX orders)."""
    values = [v.strip() for v in raw]
    if not values or any(_is_universal(v) for v in values) or any(map(_has_wildcard, values)):
        return text_clause(col(Order.modality), raw, dialect)
    wanted = tuple(dict.fromkeys(code for v in values for code in aliases.of(v)))
    if len(wanted) > len(set(values)):
        query.modalities = tuple(dict.fromkeys(values))
    return col(Order.modality).in_(wanted) if len(wanted) > 1 else col(Order.modality) == wanted[0]


def answer_modality(
    query: WorklistQuery, order_modality: str | None, aliases: ModalityAliases | None
) -> str | None:
    """The Modality an answer carries in place of the order's, or None to keep it.

    A device asking for CR gets the DX orders its alias finds labelled CR:
    a matching key's returned value must match it (PS3.4 C.2.2.2), and
    strict devices drop answers that do not.
    """
    if not query.modalities or order_modality in query.modalities or aliases is None:
        return None
    for asked in query.modalities:
        if order_modality in aliases.of(asked):
            return asked
    return None


def _single(values: list[str], keyword: str) -> str:
    if len(values) > 1:
        raise QueryError(f"{keyword} takes one value or range, not a list")
    return values[0] if values else ""


# -- the statement ----------------------------------------------------------

# Only the columns an answer needs: no ORM objects, no identity map.
ITEM_COLUMNS: tuple[ColumnClause[Any], ...] = tuple(
    inspect(Order).columns[name]
    for name in (
        "id", "version", "status", "source", "placer_order_number", "accession_number",
        "study_instance_uid", "requested_procedure_id", "scheduled_step_id", "patient_id",
        "patient_name", "patient_birth_date", "patient_sex", "patient_neutered",
        "patient_weight_kg", "species_input", "species_description", "species_code",
        "species_scheme", "species_meaning", "breed", "owner_last_name", "owner_first_name",
        "owner_organization", "procedure_code", "procedure_description", "modality",
        "station_ae_title", "site", "sps_start_date", "sps_start_time", "referring_vet",
        "priority", "notes", "patient_alerts", "patient_microchip", "patient_other_ids",
        "reason",
    )
)  # fmt: skip


def apply_scope(
    query: WorklistQuery,
    scope: Scope | None,
    today: date,
    aliases: ModalityAliases | None = None,
) -> list[ColumnElement[bool]]:
    """Extra clauses from a device's scoping, for the keys its query left universal.

    A device scoped to its modality is treated as if it had asked for it,
    aliases included (``query.modalities`` is set for ``answer_modality``).
    """
    if scope is None:
        return []
    extra: list[ColumnElement[bool]] = []
    if scope.station and "ScheduledStationAETitle" not in query.constrained:
        extra.append(col(Order.station_ae_title) == scope.station)
    if scope.modality and "Modality" not in query.constrained:
        wanted = (aliases or _NO_ALIASES).of(scope.modality)
        if len(wanted) > 1:
            query.modalities = (scope.modality,)
            extra.append(col(Order.modality).in_(wanted))
        else:
            extra.append(col(Order.modality) == scope.modality)
    if scope.site and "ScheduledProcedureStepLocation" not in query.constrained:
        extra.append(col(Order.site) == scope.site)
    if (
        scope.date_window_days is not None
        and "ScheduledProcedureStepStartDate" not in query.constrained
    ):
        window = timedelta(days=scope.date_window_days)
        extra.append(col(Order.sps_start_date) >= (today - window).strftime("%Y%m%d"))
        extra.append(col(Order.sps_start_date) <= (today + window).strftime("%Y%m%d"))
    return extra


def statement(
    query: WorklistQuery,
    *,
    now: datetime,
    max_age_days: float = 0,
    scope: Scope | None = None,
    limit: int = 0,
    extra: Iterable[ColumnElement[bool]] = (),
    aliases: ModalityAliases | None = None,
) -> Select[Any]:
    """The SELECT answering ``query``: open orders only, minus those past the age cut-off
    (``orders.on_worklist``, which /metrics counts with too)."""
    stmt = select(*ITEM_COLUMNS).where(*on_worklist(now, max_age_days))
    clauses = [*query.clauses, *apply_scope(query, scope, now.date(), aliases), *extra]
    if clauses:
        stmt = stmt.where(*clauses)
    stmt = stmt.order_by(col(Order.sps_start_date), col(Order.sps_start_time), col(Order.id))
    if limit > 0:
        stmt = stmt.limit(limit)
    return stmt
