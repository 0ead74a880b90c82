"""Indexing a received instance: its study (made and matched on the study's
first instance), its series and its instance row, in one transaction.

The file work around these calls is ``hub.archive.ingest``. Together they keep
the crash-safety promise of docs/interface.md, in this order:

1. check the bytes (archive: structure walk and header scan; ``header_from``
   here checks the UIDs),
2. decide the match (``place``, inside the transaction),
3. write the file durably (archive: temp file, fsync, rename, fsync dir),
4. commit the index (``record``, then the session's commit),
5. only then answer success.

A crash before the commit leaves at most an unindexed file that the device's
resend overwrites.

Resent instances (same SOP Instance UID): **first copy wins**. The resend is
answered with success and not written again; when its bytes differ from the
first copy's (a changed object under an old UID), the difference is logged and
written to the audit trail, never silently overwritten (docs/domain.md §7.9).
"""

from __future__ import annotations

import logging
import re
import time
import weakref
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.orm import Session
from sqlmodel import col

from hub.errors import FieldError, Invalid
from hub.models import Instance, Order, OrderStatus, Series, Study, utcnow
from hub.services import candidates, coercion, events, matching, modalities, orders, routes

log = logging.getLogger("hub.studies")
S = OrderStatus
# Core statements on the tables: the ORM unit of work costs more than the rest
# of indexing an instance together.
# Built once and run on the session's connection: constructing and ORM-executing
# the statements anew for every instance cost more than running them.
_INSTANCES = Instance.metadata.tables["instances"]
_STUDIES = Study.metadata.tables["studies"]
_SERIES = Series.metadata.tables["series"]
_RESENT = select(_INSTANCES.c.received_sha256, _INSTANCES.c.study_id, _INSTANCES.c.coerced).where(
    _INSTANCES.c.sop_instance_uid == bindparam("uid")
)
_STUDY = select(_STUDIES.c.id, _STUDIES.c.order_id).where(
    _STUDIES.c.study_instance_uid == bindparam("uid")
)
_SERIES_ID = select(_SERIES.c.id).where(_SERIES.c.series_instance_uid == bindparam("uid"))
_ADD_INSTANCE = insert(_INSTANCES)
_STUDY_RECEIVED = (
    update(_STUDIES)
    .where(_STUDIES.c.id == bindparam("sid"))
    .values(last_received_at=bindparam("at"))
)
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
# What the header scan must find, besides the patient attributes coercion keeps.
HEADER_TEXT = (
    "SOPClassUID",
    "SOPInstanceUID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "StudyDate",
    "StudyTime",
    "SeriesDate",
    "ContentDate",
    "AccessionNumber",
    "Modality",
    "StudyDescription",
    "SeriesDescription",
    "SeriesNumber",
    "PatientName",
    "PatientID",
    "ResponsiblePerson",
    # Kept on the instance row for DICOMweb search answers (text; Rows/Columns as decimal).
    "InstanceNumber",
    "Rows",
    "Columns",
    "NumberOfFrames",
)


class Unreadable(Invalid):
    """The bytes are not a complete DICOM data set."""


def valid_uid(value: str) -> bool:
    """A DICOM UID: digits and dots, at most 64 characters (and so a safe file name)."""
    return 0 < len(value) <= 64 and _UID.match(value) is not None


@dataclass(frozen=True)
class Header:
    """What an instance says about itself, as plain values."""

    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    attrs: dict[str, str]
    received: dict[str, coercion.Value]


@dataclass(frozen=True)
class Arrival:
    """How the instance came: the request's side of the C-STORE."""

    transfer_syntax_uid: str
    calling_ae: str
    sha256: str  # of the data set bytes as sent (without file meta)


@dataclass(frozen=True)
class Stored:
    study_instance_uid: str
    duplicate: bool
    coerced: bool
    order_id: int | None


@dataclass(frozen=True)
class Placement:
    """Where a new instance belongs, decided before its file is written."""

    study_id: int
    series_id: int
    order_id: int | None
    fixes: dict[str, dict[str, coercion.Value]]

    @property
    def values(self) -> dict[str, coercion.Value]:
        """The header values the file must carry instead of the device's."""
        return {k: v["to"] for k, v in self.fixes.items()}


def header_from(found: dict[str, Any], sop_class_uid: str, sop_instance_uid: str) -> Header:
    """The scanned header as plain values, checked: UIDs present, valid and agreeing
    with the request's SOP Class (presentation context) and Affected SOP Instance UID."""
    attrs = {kw: str(found.get(kw) or "") for kw in HEADER_TEXT}
    received = {kw: found.get(kw) for kw in coercion.KEYWORDS}
    problems = []
    for kw in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
        if not attrs[kw]:
            problems.append(FieldError(kw, "is missing"))
        elif not valid_uid(attrs[kw]):
            problems.append(FieldError(kw, f"{attrs[kw]!r} is not a valid UID"))
    if attrs["SOPClassUID"] and attrs["SOPClassUID"] != sop_class_uid:
        problems.append(
            FieldError(
                "SOPClassUID",
                f"{attrs['SOPClassUID']} does not match the request's {sop_class_uid}",
            )
        )
    if attrs["SOPInstanceUID"] and attrs["SOPInstanceUID"] != sop_instance_uid:
        problems.append(
            FieldError("SOPInstanceUID", "does not match the request's Affected SOP Instance UID")
        )
    if problems:
        raise Invalid(problems)
    return Header(
        sop_class_uid=attrs["SOPClassUID"],
        sop_instance_uid=attrs["SOPInstanceUID"],
        study_instance_uid=attrs["StudyInstanceUID"],
        series_instance_uid=attrs["SeriesInstanceUID"],
        attrs=attrs,
        received=received,
    )


def place(
    s: Session, memo: Memo, h: Header, arrival: Arrival, *, patient_day: bool
) -> Stored | Placement:
    """A resent instance's answer (``Stored``), or where a new one goes and what to correct."""
    dup = s.connection().execute(_RESENT, {"uid": h.sop_instance_uid}).first()
    if dup is not None:
        return _duplicate(s, dup, h, arrival)
    study_id, order_id = _study_for(s, h, arrival.calling_ae, patient_day=patient_day)
    series_id = _series_for(s, memo.series, study_id, h)
    fixes: dict[str, dict[str, coercion.Value]] = {}
    if order_id is not None:
        order = s.get_one(Order, order_id)
        fixes = coercion.corrections(coercion.target(order), h.received, overwrite=False)
    return Placement(study_id, series_id, order_id, fixes)


def record(
    s: Session,
    memo: Memo,
    h: Header,
    arrival: Arrival,
    spot: Placement,
    *,
    path: str,
    size: int,
) -> Stored:
    """Index the instance whose file is now durable at ``path`` (relative to the data dir)."""
    now = utcnow()
    db = s.connection()
    db.execute(
        _ADD_INSTANCE,
        {
            "study_id": spot.study_id,
            "series_id": spot.series_id,
            "sop_instance_uid": h.sop_instance_uid,
            "sop_class_uid": h.sop_class_uid,
            "transfer_syntax_uid": arrival.transfer_syntax_uid,
            "path": path,
            "size": size,
            "received_sha256": arrival.sha256,
            "coerced": bool(spot.fixes),
            "calling_ae": arrival.calling_ae[:16],
            "received_at": now,
            "instance_number": _integer(h.attrs["InstanceNumber"]),
            "pixel_rows": _integer(h.attrs["Rows"]),
            "pixel_columns": _integer(h.attrs["Columns"]),
            "number_of_frames": _integer(h.attrs["NumberOfFrames"]),
        },
    )
    db.execute(_STUDY_RECEIVED, {"sid": spot.study_id, "at": now})
    # A forward already delivered for this study goes again, for this instance.
    routes.rearm(s, h.study_instance_uid)
    if spot.order_id is not None:
        order = s.get_one(Order, spot.order_id)
        if order.status == S.SCHEDULED:
            orders.transition(s, order, S.IN_PROGRESS, reason="first image received")
    if spot.fixes:
        events.audit(
            s,
            f"dicom:{arrival.calling_ae}",
            "coerce",
            "instance",
            h.sop_instance_uid,
            {
                "study_instance_uid": h.study_instance_uid,
                "order_id": spot.order_id,
                "changes": spot.fixes,
            },
        )
    if arrival.calling_ae and memo.touch_due(arrival.calling_ae):
        modalities.touch(s, arrival.calling_ae, "store", now)
    s.flush()
    return Stored(h.study_instance_uid, False, bool(spot.fixes), spot.order_id)


def _integer(text: str) -> int | None:
    """An IS/US header value as a number, or None when absent or not one (a device's
    bad InstanceNumber must not refuse its image)."""
    try:
        value = int(text.split("\\")[0].strip())
    except ValueError:
        return None
    return value if -(2**31) <= value < 2**31 else None


def indexed(s: Session, sop_instance_uid: str) -> bool:
    found = s.scalars(
        select(col(Instance.id)).where(col(Instance.sop_instance_uid) == sop_instance_uid)
    )
    return found.first() is not None


def _duplicate(s: Session, dup: Any, h: Header, arrival: Arrival) -> Stored:
    study = s.get(Study, dup.study_id)
    if dup.received_sha256 != arrival.sha256:
        log.warning(
            "resent instance differs from the stored one; keeping the first copy",
            extra={"sop_instance_uid": h.sop_instance_uid, "calling_ae": arrival.calling_ae},
        )
        events.audit(
            s,
            f"dicom:{arrival.calling_ae}",
            "resend_ignored",
            "instance",
            h.sop_instance_uid,
            {"stored_sha256": dup.received_sha256, "resent_sha256": arrival.sha256},
        )
    return Stored(
        study.study_instance_uid if study else h.study_instance_uid,
        True,
        dup.coerced,
        study.order_id if study else None,
    )


@dataclass(frozen=True)
class Preview:
    """What storing an instance would do, decided without writing anything."""

    outcome: str  # "new" or "duplicate"
    order_id: int | None
    match_method: str | None
    unmatched_reason: str | None


def preview(s: Session, h: Header, *, patient_day: bool) -> Preview:
    """The dry run of ``place``: duplicate, joins a stored study, or how it would match.

    Reads only, so an import can report before it changes anything.
    """
    found = s.connection().execute(_STUDY, {"uid": h.study_instance_uid}).first()
    if s.connection().execute(_RESENT, {"uid": h.sop_instance_uid}).first() is not None:
        return Preview("duplicate", found.order_id if found else None, None, None)
    if found is not None:
        study = s.get_one(Study, found.id)
        return Preview("new", study.order_id, study.match_method, study.unmatched_reason)
    m = candidates.decide(s, _facts(h), patient_day=patient_day)
    return Preview("new", m.order_id, m.method, m.reason)


def _facts(h: Header) -> matching.StudyFacts:
    a = h.attrs
    return matching.StudyFacts(
        study_instance_uid=h.study_instance_uid,
        accession_number=a["AccessionNumber"],
        patient_id=a["PatientID"],
        patient_name=a["PatientName"],
        modality=a["Modality"],
        study_date=a["StudyDate"] or a["SeriesDate"] or a["ContentDate"],
        responsible_person=a["ResponsiblePerson"],
    )


def _study_for(
    s: Session, h: Header, calling_ae: str, *, patient_day: bool
) -> tuple[int, int | None]:
    """(study id, order id): the study's row, made and matched on its first instance."""
    found = s.connection().execute(_STUDY, {"uid": h.study_instance_uid}).first()
    if found is not None:
        return found.id, found.order_id
    a = h.attrs
    facts = _facts(h)
    m = candidates.decide(s, facts, patient_day=patient_day)
    study = Study(
        study_instance_uid=h.study_instance_uid,
        patient_id=a["PatientID"][:64],
        patient_name=a["PatientName"][:200],
        accession_number=a["AccessionNumber"][:16],
        study_date=facts.study_date[:8],
        study_time=a["StudyTime"][:16],
        modality=a["Modality"][:16],
        study_description=a["StudyDescription"][:64],
        calling_ae=calling_ae[:16],
        received=h.received,
        order_id=m.order_id,
        match_method=m.method,
        unmatched_reason=m.reason,
        candidates=[c.as_dict() for c in m.candidates] or None,
    )
    s.add(study)
    s.flush()
    events.record(
        s,
        "study.received",
        order_id=study.order_id,
        study_instance_uid=study.study_instance_uid,
        payload={"match_method": study.match_method, "unmatched_reason": study.unmatched_reason},
    )
    assert study.id is not None  # flushed
    return study.id, study.order_id


def _series_for(s: Session, known: dict[str, tuple[int, int]], study_id: int, h: Header) -> int:
    cached = known.get(h.series_instance_uid)
    if cached is not None and cached[1] == study_id:
        return cached[0]
    found = s.connection().execute(_SERIES_ID, {"uid": h.series_instance_uid}).scalar()
    if found is not None:
        return found
    series = Series(
        study_id=study_id,
        series_instance_uid=h.series_instance_uid,
        modality=h.attrs["Modality"][:16],
        series_number=h.attrs["SeriesNumber"][:12],
        series_description=h.attrs["SeriesDescription"][:64],
    )
    s.add(series)
    s.flush()
    assert series.id is not None  # flushed
    return series.id


@dataclass
class Memo:
    """Per-database memory of the hot path: series ids (they never change once
    committed) and when each device's ``last_store_at`` was last refreshed."""

    series: dict[str, tuple[int, int]] = field(default_factory=dict)
    touched: dict[str, float] = field(default_factory=dict)

    def remember_series(self, spot: Placement, h: Header) -> None:
        """Call after the commit: only committed series ids are worth remembering."""
        if len(self.series) > 10_000:  # bounded: recent series are the ones that recur
            self.series.clear()
        self.series[h.series_instance_uid] = (spot.series_id, spot.study_id)

    def touch_due(self, ae_title: str) -> bool:
        now = time.monotonic()
        if now - self.touched.get(ae_title, -1e9) < TOUCH_EVERY_S:
            return False
        self.touched[ae_title] = now
        return True


# A device's last_store_at is refreshed at most this often (seconds), not per image.
TOUCH_EVERY_S = 5.0
_memos: weakref.WeakKeyDictionary[object, Memo] = weakref.WeakKeyDictionary()


def memo_for(database: object) -> Memo:
    """The memo of one database (``hub.db``): ids differ between databases."""
    memo = _memos.get(database)
    if memo is None:
        memo = _memos[database] = Memo()
    return memo
