"""Patient changes that reach every open order of an animal (ADT A04/A08, merge A40).

The hub keeps no patient table: an order carries a snapshot of its patient,
so "update the patient" means "update each open order (worklist item) of
that patient id", through ``orders.update`` so versions and events follow.
Closed orders keep what was true when they were done.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session
from sqlmodel import col

from hub.errors import Invalid
from hub.models import Order, OrderStatus, Study
from hub.services import events, orders, reconcile
from hub.services.orders import OrderContext


def open_orders(session: Session, patient_id: str, source: str | None = None) -> list[Order]:
    stmt = (
        select(Order)
        .where(col(Order.patient_id) == patient_id, col(Order.status).in_(OrderStatus.OPEN))
        .order_by(col(Order.id))
    )
    if source is not None:
        stmt = stmt.where(col(Order.source) == source)
    return list(session.scalars(stmt))


def update(
    session: Session,
    patient_id: str,
    changes: dict[str, Any],
    ctx: OrderContext,
    *,
    source: str | None = None,
) -> list[Order]:
    """Apply ``{"patient": {...}, "owner": {...}}`` (merge-patch shape) to every open order."""
    patch = {k: v for k, v in changes.items() if k in ("patient", "owner") and v}
    if "id" in patch.get("patient", {}) and patch["patient"]["id"] != patient_id:
        raise Invalid.one("patient.id", "use merge to change a patient's id")
    changed = []
    for order in open_orders(session, patient_id, source):
        changed.append(orders.update(session, order.id, patch, ctx))  # type: ignore[arg-type]
    return changed


def merge(
    session: Session,
    prior_id: str,
    surviving_id: str,
    ctx: OrderContext,
    *,
    changes: dict[str, Any] | None = None,
    source: str | None = None,
    actor: str = "hl7",
) -> list[Order]:
    """Move the open orders and the received studies of ``prior_id`` to ``surviving_id`` (A40).

    The survivor's demographics in ``changes`` are applied to the moved orders
    and to the survivor's own open orders, so both look the same on the
    worklist. Completed orders keep the id they were done under. Studies
    received under the prior id (unmatched, or matched to an order of this
    source) take the surviving id, so matching no longer sees them as another
    animal's; the prior id is kept in the audit log. Stored DICOM files are
    not rewritten for the merge itself; waiting studies the merge lets the
    match rules attach get their headers corrected like any re-match.
    """
    if not prior_id or not surviving_id:
        raise Invalid.one("patient.id", "both the prior and the surviving patient id are needed")
    if prior_id == surviving_id:
        raise Invalid.one("merge.prior_patient_id", "is the same as the surviving patient id")
    base = {k: v for k, v in (changes or {}).items() if k in ("patient", "owner") and v}
    moved = []
    for order in open_orders(session, prior_id, source):
        patch = orders.merge_patch(base, {"patient": {"id": surviving_id}})
        moved.append(orders.update(session, order.id, patch, ctx))  # type: ignore[arg-type]
    update(session, surviving_id, base, ctx, source=source)
    studies = _studies_of(session, prior_id, source)
    for study in studies:
        study.patient_id = surviving_id
    session.flush()
    for order in open_orders(session, surviving_id, source):
        # Studies that waited under the prior id may now be this animal's order's.
        reconcile.rematch_for_order(session, order)
    events.audit(
        session,
        actor,
        "merge",
        "patient",
        surviving_id,
        {
            "prior_patient_id": prior_id,
            "source": source,
            "orders": [o.id for o in moved],
            "studies": [s.study_instance_uid for s in studies],
        },
    )
    return moved


def _studies_of(session: Session, patient_id: str, source: str | None) -> list[Study]:
    stmt = select(Study).where(col(Study.patient_id) == patient_id)
    if source is not None:
        mine = select(col(Order.id)).where(col(Order.source) == source)
        stmt = stmt.where(or_(col(Study.order_id).is_(None), col(Study.order_id).in_(mine)))
    return list(session.scalars(stmt))
