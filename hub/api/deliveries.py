"""Deliveries to practice software: what was sent, what is waiting, what failed; resend."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel

from hub.api.auth import Caller, require
from hub.api.params import RowId, RowIdFilter
from hub.errors import Invalid
from hub.schemas import Page, UtcDateTime
from hub.services.deliveries import review
from hub.services.deliveries.kinds import Registry
from hub.services.paging import MAX_LIMIT

router = APIRouter(prefix="/api/v1/deliveries", tags=["deliveries"])
READ = require("integration")
RETRY = require("integration")


def delivery_kinds(request: Request) -> Registry:
    """The registry the composition root built (hub/serve.py ``build_app``)."""
    kinds: Registry = request.app.state.delivery_kinds
    return kinds


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
    next_attempt_at: UtcDateTime | None
    last_error: str | None
    created_at: UtcDateTime
    delivered_at: UtcDateTime | None
    payload: dict[str, Any]


@router.get("", response_model=Page[DeliveryOut])
def list_deliveries(
    request: Request,
    source: str | None = None,
    status: Literal["pending", "delivered", "failed"] | None = None,
    order_id: RowIdFilter = None,
    kind: str | None = Query(None, max_length=16, description="a delivery kind, e.g. webhook"),
    limit: int = Query(50, ge=1, le=MAX_LIMIT),
    cursor: str | None = None,
    who: Caller = Depends(READ),
) -> Page[DeliveryOut]:
    kinds = delivery_kinds(request)
    if kind is not None and kind not in kinds:
        raise Invalid.one("kind", f"unknown delivery kind {kind!r}; use {', '.join(kinds.names())}")
    flt = review.DeliveryFilter(source=source, status=status, order_id=order_id, kind=kind)
    with request.app.state.hub.db.read_session() as s:
        rows, nxt = review.find(s, flt, limit=limit, cursor=cursor)
        items = [DeliveryOut(**review.to_out(r)) for r in rows]
    return Page[DeliveryOut](items=items, next_cursor=nxt)


@router.get("/{delivery_id}", response_model=DeliveryOut)
def get_delivery(delivery_id: RowId, request: Request, who: Caller = Depends(READ)) -> DeliveryOut:
    with request.app.state.hub.db.read_session() as s:
        return DeliveryOut(**review.to_out(review.get(s, delivery_id)))


@router.post("/{delivery_id}/retry", response_model=DeliveryOut)
def retry_delivery(
    delivery_id: RowId, request: Request, who: Caller = Depends(RETRY)
) -> DeliveryOut:
    """Send again now under the same ``X-Vethub-Delivery`` id, with fresh attempts."""
    with request.app.state.hub.db.session() as s:
        return DeliveryOut(**review.to_out(review.retry(s, delivery_id, who.actor)))
