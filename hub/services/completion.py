"""Orders complete themselves when their images stop coming (the quiet period).

Devices that send MPPS say when they are done; most in a veterinary clinic do
not, so an in-progress order whose studies received nothing for
``study_quiet_minutes`` is taken as done. Orders with an MPPS still IN
PROGRESS are left to the device's own N-SET.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session
from sqlmodel import col

from hub.models import Mpps, Order, OrderStatus, Study, utcnow
from hub.services import orders

S = OrderStatus


def complete_quiet_orders(
    s: Session, *, quiet_minutes: float, now: datetime | None = None
) -> list[int]:
    """Complete the quiet in-progress orders; returns their ids (none if the period is 0)."""
    if quiet_minutes <= 0:
        return []
    cutoff = (now or utcnow()) - timedelta(minutes=quiet_minutes)
    latest = (
        select(col(Study.order_id), func.max(col(Study.last_received_at)).label("last"))
        .where(col(Study.order_id).is_not(None))
        .group_by(col(Study.order_id))
        .subquery()
    )
    open_mpps = select(col(Mpps.order_id)).where(
        col(Mpps.status) == "IN PROGRESS", col(Mpps.order_id).is_not(None)
    )
    stmt = (
        select(Order)
        .join(latest, latest.c.order_id == col(Order.id))
        .where(col(Order.status) == S.IN_PROGRESS, latest.c.last < cutoff)
        .where(col(Order.id).not_in(open_mpps))
    )
    done: list[int] = []
    for order in s.scalars(stmt):
        orders.transition(s, order, S.COMPLETED, reason="no new images for the quiet period")
        assert order.id is not None
        done.append(order.id)
    return done
