"""What people do with deliveries: find them, read one, send one again."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session
from sqlmodel import col

from hub.errors import NotFound
from hub.models import Delivery, as_utc, utcnow
from hub.models.deliveries import DeliveryStatus as ST
from hub.services import events
from hub.services.paging import page


@dataclass(frozen=True)
class DeliveryFilter:
    source: str | None = None
    status: str | None = None
    order_id: int | None = None
    kind: str | None = None


def find(
    session: Session, flt: DeliveryFilter, *, limit: int = 50, cursor: str | None = None
) -> tuple[list[Delivery], str | None]:
    """Newest first (what an admin looks for is usually what just failed)."""
    stmt = select(Delivery)
    if flt.source is not None:
        stmt = stmt.where(col(Delivery.source) == flt.source)
    if flt.status is not None:
        stmt = stmt.where(col(Delivery.status) == flt.status)
    if flt.order_id is not None:
        stmt = stmt.where(col(Delivery.order_id) == flt.order_id)
    if flt.kind is not None:
        stmt = stmt.where(col(Delivery.kind) == flt.kind)
    return page(session, stmt, col(Delivery.id), limit=limit, cursor=cursor, newest_first=True)


def get(session: Session, delivery_id: int) -> Delivery:
    row = session.get(Delivery, delivery_id)
    if row is None:
        raise NotFound(f"delivery {delivery_id} does not exist")
    return row


def retry(session: Session, delivery_id: int, actor: str) -> Delivery:
    """Send again now, under the same delivery id, with a fresh set of attempts."""
    row = session.scalar(select(Delivery).where(col(Delivery.id) == delivery_id).with_for_update())
    if row is None:
        raise NotFound(f"delivery {delivery_id} does not exist")
    row.status = ST.PENDING
    row.attempts = 0
    row.next_attempt_at = utcnow()
    row.delivered_at = None
    session.flush()
    events.audit(session, actor, "delivery.retry", "delivery", delivery_id, {"uuid": row.uuid})
    return row


def retry_failed(session: Session, source: str, actor: str) -> list[int]:
    """Send every failed delivery of ``source`` again (each as ``retry``); their ids."""
    stmt = (
        select(col(Delivery.id))
        .where(col(Delivery.source) == source, col(Delivery.status) == ST.FAILED)
        .order_by(col(Delivery.id))
    )
    ids = [i for i in session.scalars(stmt) if i is not None]
    for delivery_id in ids:
        retry(session, delivery_id, actor)
    return ids


def failed_per_source(session: Session) -> dict[str, int]:
    """How many deliveries have failed, per source (sources with none left out)."""
    stmt = (
        select(col(Delivery.source), func.count())
        .where(col(Delivery.status) == ST.FAILED)
        .group_by(col(Delivery.source))
        .order_by(col(Delivery.source))
    )
    return {source: n for source, n in session.execute(stmt)}


def to_out(row: Delivery) -> dict[str, Any]:
    return {
        "id": row.id,
        "delivery_id": row.uuid,
        "source": row.source,
        "kind": row.kind,
        "event": row.event_kind,
        "outbox_event_id": row.outbox_event_id,
        "order_id": row.order_id,
        "study_instance_uid": row.study_instance_uid,
        "status": row.status,
        "attempts": row.attempts,
        "next_attempt_at": as_utc(row.next_attempt_at) if row.status == ST.PENDING else None,
        "last_error": row.last_error,
        "created_at": as_utc(row.created_at),
        "delivered_at": as_utc(row.delivered_at),
        "payload": row.payload,
    }
