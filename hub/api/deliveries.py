"""Deliveries to practice software: what was sent, what is waiting, what failed; resend."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel

from hub.api.auth import Caller, require
from hub.schemas import Page
from hub.services import deliveries
from hub.services.paging import MAX_LIMIT

router = APIRouter(prefix="/api/v1/deliveries", tags=["deliveries"])
READ = require("integration")
RETRY = require("integration")


class DeliveryOut(BaseModel):
    id: int
    delivery_id: str
    source: str
    kind: str
    event: str
    outbox_event_id: int
    order_id: int | None
    study_instance_uid: str | None
    status: str
    attempts: int
    next_attempt_at: datetime | None
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None
    payload: dict[str, Any]


@router.get("", response_model=Page[DeliveryOut])
def list_deliveries(
    request: Request,
    source: str | None = None,
    status: Literal["pending", "delivered", "failed"] | None = None,
    order_id: int | None = None,
    kind: Literal["webhook", "hl7-oru", "hl7-orm-status"] | None = None,
    limit: int = Query(50, ge=1, le=MAX_LIMIT),
    cursor: str | None = None,
    who: Caller = Depends(READ),
) -> Page[DeliveryOut]:
    flt = deliveries.DeliveryFilter(source=source, status=status, order_id=order_id, kind=kind)
    with request.app.state.hub.db.read_session() as s:
        rows, nxt = deliveries.find(s, flt, limit=limit, cursor=cursor)
        items = [DeliveryOut(**deliveries.to_out(r)) for r in rows]
    return Page[DeliveryOut](items=items, next_cursor=nxt)


@router.get("/{delivery_id}", response_model=DeliveryOut)
def get_delivery(delivery_id: int, request: Request, who: Caller = Depends(READ)) -> DeliveryOut:
    with request.app.state.hub.db.read_session() as s:
        return DeliveryOut(**deliveries.to_out(deliveries.get(s, delivery_id)))


@router.post("/{delivery_id}/retry", response_model=DeliveryOut)
def retry_delivery(delivery_id: int, request: Request, who: Caller = Depends(RETRY)) -> DeliveryOut:
    """Send again now under the same ``X-Vethub-Delivery`` id, with fresh attempts."""
    with request.app.state.hub.db.session() as s:
        return DeliveryOut(**deliveries.to_out(deliveries.retry(s, delivery_id, who.actor)))
