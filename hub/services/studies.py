"""Studies as the index knows them: find one, list them, count their images.

Where a stored image becomes a study: ``hub.services.ingest`` (index) with
``hub.archive.ingest`` (bytes and files). Matching against orders:
``hub.services.candidates``; reconcile, detach and re-match:
``hub.services.reconcile``; quiet-period completion: ``hub.services.completion``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session
from sqlmodel import col

from hub.errors import NotFound
from hub.models import Instance, Series, Study
from hub.services import paging


@dataclass(frozen=True)
class StudyFilter:
    matched: bool | None = None
    patient_id: str | None = None
    accession_number: str | None = None
    date: date | None = None
    modality: str | None = None


def get(s: Session, study_instance_uid: str) -> Study:
    study = s.scalars(
        select(Study).where(col(Study.study_instance_uid) == study_instance_uid)
    ).first()
    if study is None:
        raise NotFound(f"study {study_instance_uid} does not exist")
    return study


def find(
    s: Session, flt: StudyFilter, *, limit: int = 50, cursor: str | None = None
) -> tuple[list[Study], str | None]:
    stmt = select(Study)
    if flt.matched is True:
        stmt = stmt.where(col(Study.order_id).is_not(None))
    elif flt.matched is False:
        stmt = stmt.where(col(Study.order_id).is_(None))
    if flt.patient_id is not None:
        stmt = stmt.where(col(Study.patient_id) == flt.patient_id)
    if flt.accession_number is not None:
        stmt = stmt.where(col(Study.accession_number) == flt.accession_number)
    if flt.date is not None:
        stmt = stmt.where(col(Study.study_date) == flt.date.strftime("%Y%m%d"))
    if flt.modality is not None:
        stmt = stmt.where(col(Study.modality) == flt.modality.upper())
    return paging.page(s, stmt, col(Study.id), limit=limit, cursor=cursor)


def counts(s: Session, study_ids: list[int]) -> dict[int, tuple[int, int]]:
    """``{study id: (series count, instance count)}``."""
    if not study_ids:
        return {}
    out = {i: (0, 0) for i in study_ids}
    rows = s.execute(
        select(
            col(Instance.study_id),
            func.count(func.distinct(Instance.series_id)),
            func.count(col(Instance.id)),
        )
        .where(col(Instance.study_id).in_(study_ids))
        .group_by(col(Instance.study_id))
    )
    for study_id, n_series, n_inst in rows:
        out[study_id] = (n_series, n_inst)
    return out


def instance_paths(s: Session, study: Study) -> list[str]:
    """The study's files, relative to the data directory, in arrival order."""
    return list(
        s.scalars(
            select(col(Instance.path))
            .where(col(Instance.study_id) == study.id)
            .order_by(col(Instance.id))
        )
    )


def series_of(s: Session, study: Study) -> list[tuple[Series, list[Instance]]]:
    """The study's series with their instances, each in arrival order."""
    rows = s.execute(
        select(Series, Instance)
        .join(Instance, col(Instance.series_id) == col(Series.id))
        .where(col(Series.study_id) == study.id)
        .order_by(col(Series.id), col(Instance.id))
    )
    grouped: dict[int, tuple[Series, list[Instance]]] = {}
    for series, instance in rows:
        grouped.setdefault(series.id or 0, (series, []))[1].append(instance)
    return list(grouped.values())


def instance_of(s: Session, study: Study, sop_instance_uid: str) -> Instance:
    found = s.scalars(
        select(Instance).where(
            col(Instance.sop_instance_uid) == sop_instance_uid,
            col(Instance.study_id) == study.id,
        )
    ).first()
    if found is None:
        raise NotFound(
            f"instance {sop_instance_uid} is not part of study {study.study_instance_uid}"
        )
    return found


def received_since(s: Session, since: datetime, *, limit: int = 200) -> list[Study]:
    """Studies first received at or after ``since`` (UTC), newest first."""
    stmt = (
        select(Study)
        .where(col(Study.created_at) >= since)
        .order_by(col(Study.id).desc())
        .limit(limit)
    )
    return list(s.scalars(stmt))


def attached_since(s: Session, since: datetime, *, limit: int = 50) -> list[Study]:
    """Studies received since ``since`` that are attached to an order, newest first:
    where a person looks for a wrong attachment to undo."""
    stmt = (
        select(Study)
        .where(col(Study.created_at) >= since, col(Study.order_id).is_not(None))
        .order_by(col(Study.id).desc())
        .limit(limit)
    )
    return list(s.scalars(stmt))


def of_order(s: Session, order_id: int) -> list[Study]:
    """The studies attached to an order, in arrival order."""
    return list(
        s.scalars(select(Study).where(col(Study.order_id) == order_id).order_by(col(Study.id)))
    )


def located(
    s: Session,
    study_instance_uid: str,
    series_instance_uid: str | None = None,
    sop_instance_uid: str | None = None,
) -> list[tuple[str, Instance]]:
    """``(series uid, instance)`` of a study, one series or one instance, in series
    then arrival order: what DICOMweb retrieves (empty when nothing is there)."""
    stmt = (
        select(col(Series.series_instance_uid), Instance)
        .join(Series, col(Series.id) == col(Instance.series_id))
        .join(Study, col(Study.id) == col(Instance.study_id))
        .where(col(Study.study_instance_uid) == study_instance_uid)
    )
    if series_instance_uid is not None:
        stmt = stmt.where(col(Series.series_instance_uid) == series_instance_uid)
    if sop_instance_uid is not None:
        stmt = stmt.where(col(Instance.sop_instance_uid) == sop_instance_uid)
    rows = s.execute(stmt.order_by(col(Series.id), col(Instance.id)))
    return [(series_uid, inst) for series_uid, inst in rows]
