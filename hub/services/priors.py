"""An animal's other studies (the viewer's priors list), newest first.

Patient IDs are only unique within the practice system that issued them: two
clinics sending to one hub may both have a patient "1234". So a matched
study's priors are the studies matched to orders of the same source and
patient ID. A study not matched to any order has no trusted source; its
priors are the other unmatched studies with the same (non-empty) patient ID
as the device sent it, which is all the device told us.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session
from sqlmodel import col

from hub.models import Order, Study

LIMIT = 50


def of_study(s: Session, study: Study, *, limit: int = LIMIT) -> list[Study]:
    newest_first = (
        col(Study.study_date).desc(),
        col(Study.study_time).desc(),
        col(Study.id).desc(),
    )
    order = s.get(Order, study.order_id) if study.order_id is not None else None
    if order is not None:
        stmt = (
            select(Study)
            .join(Order, col(Order.id) == col(Study.order_id))
            .where(col(Order.source) == order.source, col(Order.patient_id) == order.patient_id)
        )
    elif study.patient_id:
        stmt = select(Study).where(
            col(Study.order_id).is_(None), col(Study.patient_id) == study.patient_id
        )
    else:
        return []
    stmt = stmt.where(col(Study.id) != study.id).order_by(*newest_first).limit(limit)
    return list(s.scalars(stmt))
