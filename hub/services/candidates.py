"""Matching a study against the orders table: which orders are worth comparing,
and the pure rules of ``hub.services.matching`` applied to them.

Used on arrival, by the re-match after an order is placed or changed, by the
timed re-match, and when a waiting study is shown (its candidates are ranked
against the orders as they are now, not as they were when it arrived).
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session
from sqlmodel import col

from hub.models import Order, OrderStatus, Study
from hub.services import matching

S = OrderStatus


def decide(s: Session, facts: matching.StudyFacts, *, patient_day: bool) -> matching.Match:
    return matching.match_study(
        facts, [order_facts(o) for o in candidate_orders(s, facts)], patient_day=patient_day
    )


def candidate_orders(s: Session, facts: matching.StudyFacts, limit: int = 300) -> list[Order]:
    """Orders worth comparing: same accession, UID or patient, or open ones around the day."""
    conds = [col(Order.study_instance_uid) == facts.study_instance_uid]
    if facts.accession_number.strip():
        conds.append(col(Order.accession_number) == facts.accession_number.strip())
    if facts.patient_id.strip():
        conds.append(col(Order.patient_id) == facts.patient_id.strip())
    days = _days_around(facts.study_date)
    if days:
        conds.append(col(Order.sps_start_date).in_(days) & col(Order.status).in_(S.OPEN))
    stmt = select(Order).where(or_(*conds)).order_by(col(Order.id).desc()).limit(limit)
    return list(s.scalars(stmt))


def order_facts(o: Order) -> matching.OrderFacts:
    assert o.id is not None  # a stored order
    return matching.OrderFacts(
        id=o.id,
        accession_number=o.accession_number,
        study_instance_uid=o.study_instance_uid,
        patient_id=o.patient_id,
        animal_name=o.patient_name,
        owner_name=o.owner_last_name or o.owner_organization or "",
        modality=o.modality or "",
        scheduled_date=o.sps_start_date,
        status=o.status,
    )


def facts_of(study: Study) -> matching.StudyFacts:
    return matching.StudyFacts(
        study_instance_uid=study.study_instance_uid,
        accession_number=study.accession_number,
        patient_id=study.patient_id,
        patient_name=study.patient_name,
        modality=study.modality,
        study_date=study.study_date,
    )


def ranked(s: Session, study: Study, *, leave_out: int | None = None) -> list[dict[str, Any]]:
    """The study's candidates against today's orders (``leave_out``: an order a
    person just detached it from)."""
    facts = facts_of(study)
    found = [order_facts(o) for o in candidate_orders(s, facts) if o.id != leave_out]
    return [c.as_dict() for c in matching.rank_candidates(facts, found)]


def current(s: Session, study: Study) -> list[dict[str, Any]]:
    """What a person deciding about the study should see now.

    A study that waits for a rule (not attached, not held by a person) is
    ranked again: orders placed or changed since it arrived count. An attached
    study has none, and a held one keeps the list made when it was detached
    (it leaves out the order it was wrongly attached to).
    """
    if study.order_id is not None:
        return []
    if study.held:
        return list(study.candidates or [])
    return ranked(s, study)


def _days_around(da: str) -> list[str]:
    try:
        day = date(int(da[:4]), int(da[4:6]), int(da[6:8]))
    except (ValueError, IndexError):
        return []
    return [(day + timedelta(days=d)).strftime("%Y%m%d") for d in (-1, 0, 1)]
