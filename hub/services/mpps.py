"""Modality Performed Procedure Steps: what a device says it did with an order.

N-CREATE opens a step (only as IN PROGRESS), N-SET may finish it once as
COMPLETED or DISCONTINUED; a finished step is final (docs/domain.md §3). The step
is tied to its order by the ScheduledStepAttributesSequence (accession number
first, then study UID); the order follows: in_progress, completed,
discontinued. Unscheduled steps (no linkage) are kept without an order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlmodel import col

from hub.errors import Conflict, Invalid, NotFound
from hub.models import Mpps, Order, OrderStatus, utcnow
from hub.services import events, modalities, orders

IN_PROGRESS, COMPLETED, DISCONTINUED = "IN PROGRESS", "COMPLETED", "DISCONTINUED"
FINAL = (COMPLETED, DISCONTINUED)
S = OrderStatus


class DuplicateStep(Conflict):
    """N-CREATE for a SOP Instance UID that already exists (DICOM 0x0111)."""


class FinalStep(Conflict):
    """N-SET on a step already COMPLETED or DISCONTINUED (DICOM 0x0110, A710)."""


@dataclass(frozen=True)
class StepLink:
    """One ScheduledStepAttributesSequence item, as plain values."""

    accession_number: str = ""
    study_instance_uid: str = ""


def create(
    s: Session,
    sop_instance_uid: str,
    status: str,
    links: list[StepLink],
    attributes: dict[str, Any],
    calling_ae: str = "",
) -> Mpps:
    if status != IN_PROGRESS:
        raise Invalid.one(
            "PerformedProcedureStepStatus", f"must be IN PROGRESS on N-CREATE, not {status!r}"
        )
    if s.scalars(select(Mpps).where(col(Mpps.sop_instance_uid) == sop_instance_uid)).first():
        raise DuplicateStep(f"MPPS {sop_instance_uid} already exists", "SOPInstanceUID")
    order = _linked_order(s, links)
    step = Mpps(
        sop_instance_uid=sop_instance_uid,
        status=status,
        attributes=attributes,
        order_id=order.id if order else None,
        study_instance_uid=next((x.study_instance_uid for x in links if x.study_instance_uid), None)
        or None,
        calling_ae=calling_ae[:16],
    )
    try:
        with s.begin_nested():
            s.add(step)
            s.flush()
    except IntegrityError:
        raise DuplicateStep(f"MPPS {sop_instance_uid} already exists", "SOPInstanceUID") from None
    if order is not None and order.status == S.SCHEDULED:
        orders.transition(s, order, S.IN_PROGRESS, reason="MPPS IN PROGRESS")
    events.record(
        s,
        "mpps.in_progress",
        order_id=step.order_id,
        study_instance_uid=step.study_instance_uid,
        payload={"sop_instance_uid": sop_instance_uid},
    )
    if calling_ae:
        modalities.touch(s, calling_ae, "report")
    return step


def update(
    s: Session,
    sop_instance_uid: str,
    status: str | None,
    attributes: dict[str, Any],
    calling_ae: str = "",
) -> Mpps:
    """Apply an N-SET: ``attributes`` replace the stored ones (sequences are sent whole)."""
    step = s.scalars(
        select(Mpps).where(col(Mpps.sop_instance_uid) == sop_instance_uid).with_for_update()
    ).first()
    if step is None:
        raise NotFound(f"no MPPS {sop_instance_uid}")
    if step.status in FINAL:
        raise FinalStep(f"MPPS {sop_instance_uid} is {step.status} and may not change", "status")
    if status is not None and status not in (IN_PROGRESS, *FINAL):
        raise Invalid.one("PerformedProcedureStepStatus", f"unknown status {status!r}")
    merged = dict(step.attributes or {})
    merged.update(attributes)
    step.attributes = merged
    step.updated_at = utcnow()
    if status is not None:
        step.status = status
    s.flush()
    order = s.get(Order, step.order_id) if step.order_id else None
    if status in FINAL:
        events.record(
            s,
            f"mpps.{status.lower()}",
            order_id=step.order_id,
            study_instance_uid=step.study_instance_uid,
            payload={"sop_instance_uid": sop_instance_uid},
        )
        if order is not None and order.status in S.OPEN:
            new = S.COMPLETED if status == COMPLETED else S.DISCONTINUED
            orders.transition(s, order, new, reason=f"MPPS {status}")
    if calling_ae:
        modalities.touch(s, calling_ae, "report")
    return step


def _linked_order(s: Session, links: list[StepLink]) -> Order | None:
    for link in links:
        if link.accession_number:
            order = s.scalars(
                select(Order).where(col(Order.accession_number) == link.accession_number)
            ).first()
            if order is not None:
                return order
    for link in links:
        if link.study_instance_uid:
            order = s.scalars(
                select(Order).where(col(Order.study_instance_uid) == link.study_instance_uid)
            ).first()
            if order is not None:
                return order
    return None
