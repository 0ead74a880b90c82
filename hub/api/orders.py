"""REST orders: the JSON of docs/interface.md in, ``hub.services.orders`` underneath."""

from __future__ import annotations

import logging
from datetime import date
from typing import Any, Literal

from fastapi import APIRouter, Body, Depends, Query, Request, Response

from hub.api.auth import Caller, require
from hub.api.params import RowId
from hub.context import Hub
from hub.schemas import FieldWarning, OrderIn, OrderOut, OrderPlacedOut, Page
from hub.services import orders, paging

log = logging.getLogger("hub.api.orders")
router = APIRouter(prefix="/api/v1/orders", tags=["orders"])

WRITE = require("integration", "frontdesk")
READ = require("integration", "frontdesk", "vet", "tech")


@router.post("", status_code=201, response_model=OrderPlacedOut)
def create_order(body: OrderIn, request: Request, who: Caller = Depends(WRITE)) -> Response:
    hub: Hub = request.app.state.hub
    if who.source is not None and "source" not in body.model_fields_set:
        body = body.model_copy(update={"source": who.source})
    who.check_source(body.source)
    with hub.db.session() as s:
        order, created = orders.place(s, body, hub.orders)
        found = orders.warnings(body, hub.orders.mappings)
        out = OrderPlacedOut(
            **dict(orders.to_out(order)),
            warnings=[FieldWarning(field=w.field, message=w.message) for w in found],
        )
    if found:
        log.info(
            "order accepted with warnings",
            extra={
                "order_id": out.id,
                "source": out.source,
                "warnings": [f"{w.field}: {w.message}" for w in found],
            },
        )
    # Already an OrderOut: serialise once instead of letting FastAPI re-validate it.
    return Response(
        out.model_dump_json(),
        status_code=201 if created else 200,
        media_type="application/json",
        headers={"Location": f"/api/v1/orders/{out.id}"},
    )


@router.get("", response_model=Page[OrderOut])
def list_orders(
    request: Request,
    status: Literal["scheduled", "in_progress", "completed", "cancelled", "discontinued"]
    | None = None,
    date: date | None = Query(None, description="scheduled date, YYYY-MM-DD"),
    patient_id: str | None = None,
    accession_number: str | None = None,
    modality: str | None = None,
    station_ae_title: str | None = None,
    site: str | None = None,
    source: str | None = None,
    placer_order_number: str | None = None,
    limit: int = Query(50, ge=1, le=paging.MAX_LIMIT),
    cursor: str | None = None,
    who: Caller = Depends(READ),
) -> Page[OrderOut]:
    flt = orders.OrderFilter(
        status=status,
        date=date,
        patient_id=patient_id,
        accession_number=accession_number,
        modality=modality.upper() if modality else None,
        station_ae_title=station_ae_title,
        site=site,
        source=source,
        placer_order_number=placer_order_number,
    )
    hub: Hub = request.app.state.hub
    with hub.db.read_session() as s:
        rows, next_cursor = orders.find(s, flt, limit=limit, cursor=cursor)
        return Page[OrderOut](items=[orders.to_out(o) for o in rows], next_cursor=next_cursor)


@router.get("/{order_id}", response_model=OrderOut)
def get_order(order_id: RowId, request: Request, who: Caller = Depends(READ)) -> OrderOut:
    hub: Hub = request.app.state.hub
    with hub.db.read_session() as s:
        return orders.to_out(orders.get(s, order_id))


@router.patch("/{order_id}", response_model=OrderOut)
def patch_order(
    order_id: RowId,
    request: Request,
    patch: dict[str, Any] = Body(..., media_type="application/merge-patch+json"),
    who: Caller = Depends(WRITE),
) -> OrderOut:
    hub: Hub = request.app.state.hub
    with hub.db.session() as s:
        who.check_source(orders.get(s, order_id).source)
        return orders.to_out(orders.update(s, order_id, patch, hub.orders))


@router.post("/{order_id}/cancel", response_model=OrderOut)
def cancel_order(order_id: RowId, request: Request, who: Caller = Depends(WRITE)) -> OrderOut:
    hub: Hub = request.app.state.hub
    with hub.db.session() as s:
        who.check_source(orders.get(s, order_id).source)
        return orders.to_out(orders.cancel(s, order_id, reason=f"cancelled by {who.actor}"))


@router.post("/{order_id}/discontinue", response_model=OrderOut)
def discontinue_order(order_id: RowId, request: Request, who: Caller = Depends(WRITE)) -> OrderOut:
    hub: Hub = request.app.state.hub
    with hub.db.session() as s:
        who.check_source(orders.get(s, order_id).source)
        return orders.to_out(orders.discontinue(s, order_id, reason=f"discontinued by {who.actor}"))
