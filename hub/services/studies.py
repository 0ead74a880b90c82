"""Studies: a received instance becomes an indexed, matched (or queued) study.

``store_instance`` is what the C-STORE door calls. Its order of work is the
crash-safety promise of interface.md: check the bytes, decide the match, write
the file durably (temp, fsync, rename, fsync dir), then commit the index row;
only then does the caller answer success. A crash before the commit leaves at
most an unindexed file that the device's resend overwrites.

Resent instances (same SOP Instance UID): **first copy wins**. The resend is
answered with success and not written again; when its bytes differ from the
first copy's (a changed object under an old UID), the difference is logged and
written to the audit trail, never silently overwritten (domain.md §7.9).
"""

from __future__ import annotations

import hashlib
import logging
import time
import weakref
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from hub.errors import Conflict, FieldError, Invalid, NotFound
from hub.models import Instance, Mpps, Order, OrderStatus, Series, Study, utcnow
from hub.services import archive, coercion, dicomfile, events, matching, modalities, orders, paging

log = logging.getLogger("hub.studies")
S = OrderStatus


class Unreadable(Invalid):
    """The bytes are not a complete DICOM data set."""


@dataclass(frozen=True)
class Incoming:
    """One C-STORE as received: the data set bytes exactly as sent, plus the request."""

    raw: bytes
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str
    calling_ae: str = ""


@dataclass(frozen=True)
class Stored:
    study_instance_uid: str
    duplicate: bool
    coerced: bool
    order_id: int | None


@dataclass(frozen=True)
class Header:
    """What an instance says about itself, as plain values."""

    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    attrs: dict[str, str]
    received: dict[str, coercion.Value]


# -- ingest -------------------------------------------------------------------


def store_instance(hub: Any, inc: Incoming) -> Stored:
    """Check, match, write durably and index one instance (see module docstring)."""
    header = read(inc)
    meta = dicomfile.file_meta(
        header.sop_class_uid, header.sop_instance_uid, inc.transfer_syntax_uid, inc.calling_ae
    )
    digest = hashlib.sha256(inc.raw).hexdigest()
    for attempt in range(3):
        try:
            return _store(hub, inc, header, meta, digest)
        except IntegrityError:
            # Another association indexed the same study/series/instance first.
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def read(inc: Incoming) -> Header:
    """Parse and check the header: complete, UIDs present and agreeing with the request."""
    try:
        found = dicomfile.scan(inc.raw, inc.transfer_syntax_uid)
        attrs = {
            kw: str(found.get(kw) or "")
            for kw in dicomfile.HEADER_KEYWORDS
            if kw != "PatientSpeciesCodeSequence"
        }
        received = {kw: found.get(kw) for kw in coercion.KEYWORDS}
    except Exception as exc:  # pydicom raises many kinds on garbage
        raise Unreadable([FieldError("dataset", f"cannot be decoded: {exc}")]) from None
    problems = []
    for kw in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
        if not attrs[kw]:
            problems.append(FieldError(kw, "is missing"))
        elif not archive.valid_uid(attrs[kw]):
            problems.append(FieldError(kw, f"{attrs[kw]!r} is not a valid UID"))
    if attrs["SOPClassUID"] and attrs["SOPClassUID"] != inc.sop_class_uid:
        problems.append(
            FieldError(
                "SOPClassUID",
                f"{attrs['SOPClassUID']} does not match the request's {inc.sop_class_uid}",
            )
        )
    if attrs["SOPInstanceUID"] and attrs["SOPInstanceUID"] != inc.sop_instance_uid:
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


def _store(hub: Any, inc: Incoming, h: Header, meta: bytes, digest: str) -> Stored:
    data_dir: Path = hub.settings.data_dir
    rel = archive.relative_path(h.study_instance_uid, h.series_instance_uid, h.sop_instance_uid)
    path = archive.absolute(data_dir, rel)
    written = False
    try:
        with hub.db.session() as s:
            dup = s.execute(
                select(Instance.received_sha256, Instance.study_id, Instance.coerced).where(
                    Instance.sop_instance_uid == h.sop_instance_uid
                )
            ).first()
            if dup is not None:
                return _duplicate(s, dup, inc, h, digest)

            study_id, order_id = _study_for(s, hub, h, inc.calling_ae)
            series_id = _series_for(s, _memo(hub).series, study_id, h)
            order = s.get(Order, order_id) if order_id else None

            chunks: tuple[bytes, ...] = (meta, inc.raw)
            fixes: dict[str, dict[str, coercion.Value]] = {}
            if order is not None:
                fixes = coercion.corrections(coercion.target(order), h.received, overwrite=False)
                if fixes:
                    ds = dicomfile.read_full(meta + inc.raw)
                    coercion.apply(ds, {k: v["to"] for k, v in fixes.items()})
                    chunks = (dicomfile.encode(ds),)
            size = archive.write_atomic(path, chunks)
            written = True

            now = utcnow()
            s.execute(
                insert(Instance.__table__).values(  # type: ignore[attr-defined]
                    study_id=study_id,
                    series_id=series_id,
                    sop_instance_uid=h.sop_instance_uid,
                    sop_class_uid=h.sop_class_uid,
                    transfer_syntax_uid=inc.transfer_syntax_uid,
                    path=rel,
                    size=size,
                    received_sha256=digest,
                    coerced=bool(fixes),
                    calling_ae=inc.calling_ae[:16],
                    received_at=now,
                )
            )
            s.execute(
                update(Study.__table__)  # type: ignore[attr-defined]
                .where(Study.__table__.c.id == study_id)  # type: ignore[attr-defined]
                .values(last_received_at=now)
            )
            if order is not None and order.status == S.SCHEDULED:
                orders.transition(s, order, S.IN_PROGRESS, reason="first image received")
            if fixes:
                events.audit(
                    s,
                    f"dicom:{inc.calling_ae}",
                    "coerce",
                    "instance",
                    h.sop_instance_uid,
                    {
                        "study_instance_uid": h.study_instance_uid,
                        "order_id": order_id,
                        "changes": fixes,
                    },
                )
            if inc.calling_ae and _memo(hub).touch_due(inc.calling_ae):
                modalities.touch(s, inc.calling_ae, "store", now)
            s.flush()
        _memo(hub).remember_series(h.series_instance_uid, series_id, study_id)
        return Stored(h.study_instance_uid, False, bool(fixes), order_id)
    except BaseException:
        if written and not _indexed(hub, h.sop_instance_uid):
            archive.remove(path)  # never leave a file the index does not know of
        raise


def _duplicate(s: Session, dup: Any, inc: Incoming, h: Header, digest: str) -> Stored:
    study = s.get(Study, dup.study_id)
    if dup.received_sha256 != digest:
        log.warning(
            "resent instance differs from the stored one; keeping the first copy",
            extra={"sop_instance_uid": h.sop_instance_uid, "calling_ae": inc.calling_ae},
        )
        events.audit(
            s,
            f"dicom:{inc.calling_ae}",
            "resend_ignored",
            "instance",
            h.sop_instance_uid,
            {"stored_sha256": dup.received_sha256, "resent_sha256": digest},
        )
    return Stored(
        study.study_instance_uid if study else h.study_instance_uid,
        True,
        dup.coerced,
        study.order_id if study else None,
    )


@dataclass
class _Memo:
    """Per-database memory of the hot path: series ids (they never change once
    committed) and when each device's ``last_store_at`` was last refreshed."""

    series: dict[str, tuple[int, int]] = field(default_factory=dict)
    touched: dict[str, float] = field(default_factory=dict)

    def remember_series(self, uid: str, series_id: int, study_id: int) -> None:
        if len(self.series) > 10_000:  # bounded: recent series are the ones that recur
            self.series.clear()
        self.series[uid] = (series_id, study_id)

    def touch_due(self, ae_title: str) -> bool:
        now = time.monotonic()
        if now - self.touched.get(ae_title, -1e9) < TOUCH_EVERY_S:
            return False
        self.touched[ae_title] = now
        return True


# A device's last_store_at is refreshed at most this often (seconds), not per image.
TOUCH_EVERY_S = 5.0
_memos: weakref.WeakKeyDictionary[Any, _Memo] = weakref.WeakKeyDictionary()


def _memo(hub: Any) -> _Memo:
    memo = _memos.get(hub.db)
    if memo is None:
        memo = _memos[hub.db] = _Memo()
    return memo


def _indexed(hub: Any, sop_instance_uid: str) -> bool:
    try:
        with hub.db.read_session() as s:
            return (
                s.scalars(
                    select(Instance.id).where(Instance.sop_instance_uid == sop_instance_uid)
                ).first()
                is not None
            )
    except Exception:
        return True  # when in doubt, keep the file: an orphan is harmless, a lost image is not


def _study_for(s: Session, hub: Any, h: Header, calling_ae: str) -> tuple[int, int | None]:
    """(study id, order id): the study's row, made and matched on its first instance."""
    found = s.execute(
        select(Study.id, Study.order_id).where(Study.study_instance_uid == h.study_instance_uid)
    ).first()
    if found is not None:
        return found.id, found.order_id
    a = h.attrs
    facts = matching.StudyFacts(
        study_instance_uid=h.study_instance_uid,
        accession_number=a["AccessionNumber"],
        patient_id=a["PatientID"],
        patient_name=a["PatientName"],
        modality=a["Modality"],
        study_date=a["StudyDate"] or a["SeriesDate"] or a["ContentDate"],
        responsible_person=a["ResponsiblePerson"],
    )
    m = decide(s, facts, patient_day=hub.settings.match_patient_day)
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
    return study.id, study.order_id  # type: ignore[return-value]


def _series_for(s: Session, known: dict[str, tuple[int, int]], study_id: int, h: Header) -> int:
    cached = known.get(h.series_instance_uid)
    if cached is not None and cached[1] == study_id:
        return cached[0]
    found = s.scalars(
        select(Series.id).where(Series.series_instance_uid == h.series_instance_uid)
    ).first()
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
    return series.id  # type: ignore[return-value]


# -- matching against the orders table -----------------------------------------


def decide(s: Session, facts: matching.StudyFacts, *, patient_day: bool) -> matching.Match:
    return matching.match_study(
        facts, [order_facts(o) for o in candidate_orders(s, facts)], patient_day=patient_day
    )


def candidate_orders(s: Session, facts: matching.StudyFacts, limit: int = 300) -> list[Order]:
    """Orders worth comparing: same accession, UID or patient, or open ones around the day."""
    conds = [Order.study_instance_uid == facts.study_instance_uid]
    if facts.accession_number.strip():
        conds.append(Order.accession_number == facts.accession_number.strip())
    if facts.patient_id.strip():
        conds.append(Order.patient_id == facts.patient_id.strip())
    days = _days_around(facts.study_date)
    if days:
        conds.append(Order.sps_start_date.in_(days) & Order.status.in_(S.OPEN))
    stmt = select(Order).where(or_(*conds)).order_by(Order.id.desc()).limit(limit)
    return list(s.scalars(stmt))


def order_facts(o: Order) -> matching.OrderFacts:
    return matching.OrderFacts(
        id=o.id,  # type: ignore[arg-type]
        accession_number=o.accession_number,
        study_instance_uid=o.study_instance_uid,
        patient_id=o.patient_id,
        animal_name=o.patient_name,
        owner_name=o.owner_last_name or o.owner_organization or "",
        modality=o.modality or "",
        scheduled_date=o.sps_start_date,
        status=o.status,
    )


# -- queries --------------------------------------------------------------------


@dataclass(frozen=True)
class StudyFilter:
    matched: bool | None = None
    patient_id: str | None = None
    accession_number: str | None = None
    date: date | None = None
    modality: str | None = None


def get(s: Session, study_instance_uid: str) -> Study:
    study = s.scalars(select(Study).where(Study.study_instance_uid == study_instance_uid)).first()
    if study is None:
        raise NotFound(f"study {study_instance_uid} does not exist")
    return study


def find(
    s: Session, flt: StudyFilter, *, limit: int = 50, cursor: str | None = None
) -> tuple[list[Study], str | None]:
    stmt = select(Study).order_by(Study.id)
    if flt.matched is True:
        stmt = stmt.where(Study.order_id.is_not(None))  # type: ignore[union-attr]
    elif flt.matched is False:
        stmt = stmt.where(Study.order_id.is_(None))  # type: ignore[union-attr]
    if flt.patient_id is not None:
        stmt = stmt.where(Study.patient_id == flt.patient_id)
    if flt.accession_number is not None:
        stmt = stmt.where(Study.accession_number == flt.accession_number)
    if flt.date is not None:
        stmt = stmt.where(Study.study_date == flt.date.strftime("%Y%m%d"))
    if flt.modality is not None:
        stmt = stmt.where(Study.modality == flt.modality.upper())
    if cursor:
        stmt = stmt.where(Study.id > paging.decode_cursor(cursor))
    limit = max(1, min(limit, paging.MAX_LIMIT))
    rows = list(s.scalars(stmt.limit(limit + 1)))
    nxt = paging.encode_cursor(rows[limit - 1].id) if len(rows) > limit else None  # type: ignore[arg-type]
    return rows[:limit], nxt


def counts(s: Session, study_ids: list[int]) -> dict[int, tuple[int, int]]:
    """``{study id: (series count, instance count)}``."""
    if not study_ids:
        return {}
    out = {i: (0, 0) for i in study_ids}
    rows = s.execute(
        select(
            Instance.study_id,
            func.count(func.distinct(Instance.series_id)),
            func.count(Instance.id),
        )
        .where(Instance.study_id.in_(study_ids))  # type: ignore[attr-defined]
        .group_by(Instance.study_id)
    )
    for study_id, n_series, n_inst in rows:
        out[study_id] = (n_series, n_inst)
    return out


def instance_paths(s: Session, study: Study) -> list[str]:
    return list(
        s.scalars(select(Instance.path).where(Instance.study_id == study.id).order_by(Instance.id))
    )


# -- reconcile / detach ----------------------------------------------------------


def reconcile(hub: Any, study_instance_uid: str, order_id: int, actor: str) -> Study:
    """Attach a study to an order by hand and correct its stored headers from the order.

    The DB change commits first (it is the truth); the files are then
    rewritten one by one, each atomically. Calling it again for the same
    order redoes the rewrite, so an interrupted rewrite can be finished.

    The StudyInstanceUID is deliberately *not* rewritten to the order's: it is
    the study's identity here (index, file tree, viewer URL) and at the device
    and any other archive that already holds copies; the link to the order is
    ``order_id``, and PatientID/AccessionNumber in the headers now name it.
    """
    with hub.db.session() as s:
        study = get(s, study_instance_uid)
        order = orders.get(s, order_id)
        if study.order_id is not None and study.order_id != order.id:
            raise Conflict(
                f"study {study_instance_uid} is attached to order {study.order_id}; "
                "detach it first",
                field="order_id",
            )
        if order.status in (S.CANCELLED, S.DISCONTINUED):
            raise Conflict(f"order {order.id} is {order.status}", field="order_id")
        previous = {"match_method": study.match_method, "unmatched_reason": study.unmatched_reason}
        study.order_id = order.id
        study.match_method = "manual" if study.match_method is None else study.match_method
        study.unmatched_reason = None
        study.candidates = None
        study.held = False
        if order.status == S.SCHEDULED:
            orders.transition(s, order, S.IN_PROGRESS, reason="study reconciled")
        want = coercion.target(order)
        fixes = coercion.corrections(want, study.received or {}, overwrite=True)
        events.record(
            s,
            "study.reconciled",
            order_id=order.id,
            study_instance_uid=study_instance_uid,
            payload={"by": actor},
        )
        events.audit(
            s,
            actor,
            "reconcile",
            "study",
            study_instance_uid,
            {
                "order_id": order.id,
                "previous": previous,
                "original": study.received,
                "changes": fixes,
            },
        )
        paths = instance_paths(s, study)
    _rewrite(hub, paths, {k: v["to"] for k, v in fixes.items()})
    with hub.db.read_session() as s:
        return get(s, study_instance_uid)


def detach(hub: Any, study_instance_uid: str, actor: str) -> Study:
    """Undo a wrong attachment: the study returns to the queue with its received headers."""
    with hub.db.session() as s:
        study = get(s, study_instance_uid)
        if study.order_id is None:
            raise Conflict(f"study {study_instance_uid} is not attached to an order", "order_id")
        old_order, old_method = study.order_id, study.match_method
        study.order_id = None
        study.match_method = None
        study.unmatched_reason = "no_match"
        study.held = True
        facts = facts_of(study)
        ranked = matching.rank_candidates(
            facts, [order_facts(o) for o in candidate_orders(s, facts) if o.id != old_order]
        )
        study.candidates = [c.as_dict() for c in ranked] or None
        events.record(
            s,
            "study.detached",
            order_id=old_order,
            study_instance_uid=study_instance_uid,
            payload={"by": actor, "match_method": old_method},
        )
        events.audit(
            s,
            actor,
            "detach",
            "study",
            study_instance_uid,
            {"order_id": old_order, "match_method": old_method},
        )
        paths = instance_paths(s, study)
        original = dict(study.received or {})
    _rewrite(hub, paths, original)
    with hub.db.read_session() as s:
        return get(s, study_instance_uid)


def facts_of(study: Study) -> matching.StudyFacts:
    return matching.StudyFacts(
        study_instance_uid=study.study_instance_uid,
        accession_number=study.accession_number,
        patient_id=study.patient_id,
        patient_name=study.patient_name,
        modality=study.modality,
        study_date=study.study_date,
    )


def _rewrite(hub: Any, paths: list[str], values: dict[str, coercion.Value]) -> None:
    if not values:
        return
    for rel in paths:
        path = archive.absolute(hub.settings.data_dir, rel)
        try:
            ds = dicomfile.read_full(str(path))
            coercion.apply(ds, values)
            archive.write_atomic(path, (dicomfile.encode(ds),))
        except Exception:
            log.exception("could not rewrite a stored instance", extra={"path": rel})


def rematch_waiting(hub: Any, *, max_age_days: float = 7, limit: int = 200) -> list[str]:
    """Try the match rules again for waiting studies: orders often arrive after
    the images (domain.md §7.1). A study now matched by a rule is attached as
    on arrival; the others get fresh candidates. Conflicts and studies a person
    detached (``held``) are left to people. Returns the attached study UIDs.
    """
    since = utcnow() - timedelta(days=max_age_days)
    attached: list[tuple[str, list[str], dict[str, coercion.Value]]] = []
    with hub.db.session() as s:
        waiting = s.scalars(
            select(Study)
            .where(
                Study.order_id.is_(None),  # type: ignore[union-attr]
                Study.held.is_(False),  # type: ignore[attr-defined]
                Study.unmatched_reason.in_(("no_match", "ambiguous")),  # type: ignore[union-attr]
                Study.created_at >= since,
            )
            .order_by(Study.id.desc())  # type: ignore[union-attr]  # newest first
            .limit(limit)
        )
        for study in list(waiting):
            m = decide(s, facts_of(study), patient_day=hub.settings.match_patient_day)
            if m.order_id is None:
                fresh = [c.as_dict() for c in m.candidates] or None
                if (m.reason, fresh) != (study.unmatched_reason, study.candidates):
                    study.unmatched_reason, study.candidates = m.reason, fresh
                continue
            order = orders.get(s, m.order_id)
            study.order_id, study.match_method = order.id, m.method
            study.unmatched_reason, study.candidates = None, None
            if order.status == S.SCHEDULED:
                orders.transition(s, order, S.IN_PROGRESS, reason="study matched")
            fixes = coercion.corrections(
                coercion.target(order), study.received or {}, overwrite=False
            )
            events.record(
                s,
                "study.reconciled",
                order_id=order.id,
                study_instance_uid=study.study_instance_uid,
                payload={"by": "rematch", "match_method": m.method},
            )
            events.audit(
                s,
                "hub:rematch",
                "reconcile",
                "study",
                study.study_instance_uid,
                {"order_id": order.id, "match_method": m.method, "changes": fixes},
            )
            values = {k: v["to"] for k, v in fixes.items()}
            attached.append((study.study_instance_uid, instance_paths(s, study), values))
    for _, paths, values in attached:
        _rewrite(hub, paths, values)
    return [uid for uid, _, _ in attached]


# -- order completion ------------------------------------------------------------


def complete_quiet_orders(hub: Any, now: datetime | None = None) -> list[int]:
    """Complete in-progress orders whose studies received nothing for the quiet period.

    Orders with an MPPS still IN PROGRESS are left to the device's own N-SET.
    """
    minutes = hub.settings.study_quiet_minutes
    if minutes <= 0:
        return []
    cutoff = (now or utcnow()) - timedelta(minutes=minutes)
    done: list[int] = []
    with hub.db.session() as s:
        latest = (
            select(Study.order_id, func.max(Study.last_received_at).label("last"))
            .where(Study.order_id.is_not(None))  # type: ignore[union-attr]
            .group_by(Study.order_id)
            .subquery()
        )
        open_mpps = select(Mpps.order_id).where(
            Mpps.status == "IN PROGRESS",
            Mpps.order_id.is_not(None),  # type: ignore[union-attr]
        )
        stmt = (
            select(Order)
            .join(latest, latest.c.order_id == Order.id)
            .where(Order.status == S.IN_PROGRESS, latest.c.last < cutoff)
            .where(Order.id.not_in(open_mpps))  # type: ignore[union-attr]
        )
        for order in s.scalars(stmt):
            orders.transition(s, order, S.COMPLETED, reason="no new images for the quiet period")
            done.append(order.id)  # type: ignore[arg-type]
    return done


def _days_around(da: str) -> list[str]:
    try:
        day = date(int(da[:4]), int(da[4:6]), int(da[6:8]))
    except (ValueError, IndexError):
        return []
    return [(day + timedelta(days=d)).strftime("%Y%m%d") for d in (-1, 0, 1)]
