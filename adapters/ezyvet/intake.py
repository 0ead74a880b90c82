"""An understood ezyVet request applied to the order core, in the caller's transaction.

ezyVet may resend a push, and nothing says it keeps them in order, so every
command is idempotent and safe out of order:

- create / update / no action: an upsert by the request id (the order's
  placer number). The same body again changes nothing; a changed body
  updates the order.
- disable: cancels (discontinues once in progress). A disable for an id the
  hub never saw places the order and cancels it at once when the body
  carries enough, so a create arriving late finds it cancelled instead of
  reviving it.
- Anything sent for an order that is already cancelled or completed is
  answered, not applied, and the reason is noted for the source's status.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from pydantic import ValidationError
from sqlalchemy.orm import Session

from adapters.ezyvet.request import Request
from hub.errors import Conflict, Invalid, NotFound
from hub.models import Order, OrderStatus
from hub.schemas import OrderIn
from hub.services import orders
from hub.services.orders import OrderContext


@dataclass(frozen=True)
class Applied:
    """What one request did: ``outcome`` is created, updated, unchanged, cancelled,
    discontinued or ignored; ``note`` says why when nothing was applied."""

    outcome: str
    order: Order | None
    note: str | None = None


def apply(session: Session, source: str, req: Request, ctx: OrderContext) -> Applied:
    """Apply ``req`` for ``source``; raises ``Invalid`` when the order cannot be built."""
    existing = _find(session, source, req.request_id)
    if req.action == "disable":
        return _disable(session, source, req, existing, ctx)
    assert req.order is not None  # only a disable may lack one (request.read)
    if existing is None:
        body = _order_in(source, req)
        try:
            order, created = orders.place(session, body, ctx)
        except Conflict as exc:
            if exc.field != "placer_order_number":
                raise
            # Placed by a concurrent push of the same id with other content: update it.
            existing = orders.find_by_placer(session, source, req.request_id)
        else:
            return Applied("created" if created else "unchanged", order)
    return _update(session, req, existing, ctx)


def _update(session: Session, req: Request, order: Order, ctx: OrderContext) -> Applied:
    if order.status not in OrderStatus.OPEN:
        return Applied("unchanged", order, f"order is {order.status}; the update was not applied")
    assert req.order is not None and order.id is not None
    version = order.version
    patch = {k: v for k, v in req.order.items() if k != "placer_order_number"}
    if "scheduled_start" in patch:  # as the order keeps it (local), so a resend is no change
        start = datetime.fromisoformat(patch["scheduled_start"])
        patch["scheduled_start"] = ctx.local(start).replace(microsecond=0).isoformat()
    updated = orders.update(session, order.id, patch, ctx)
    return Applied("updated" if updated.version != version else "unchanged", updated)


def _disable(
    session: Session, source: str, req: Request, order: Order | None, ctx: OrderContext
) -> Applied:
    if order is None:
        try:
            if req.order is None:
                raise Invalid.one("body", "too little to place the order")
            order, _ = orders.place(session, _order_in(source, req), ctx)
        except Invalid:
            return Applied("ignored", None, f"no order for request {req.request_id!r}")
    assert order.id is not None
    if order.status == OrderStatus.SCHEDULED:
        return Applied("cancelled", orders.cancel(session, order.id, reason="disabled in ezyVet"))
    if order.status == OrderStatus.IN_PROGRESS:
        done = orders.discontinue(session, order.id, reason="disabled in ezyVet")
        return Applied("discontinued", done)
    return Applied("unchanged", order, f"order is already {order.status}")


def _order_in(source: str, req: Request) -> OrderIn:
    try:
        return OrderIn.model_validate({**(req.order or {}), "source": source})
    except ValidationError as exc:
        raise orders.invalid_from(exc) from None


def _find(session: Session, source: str, request_id: str) -> Order | None:
    try:
        return orders.find_by_placer(session, source, request_id)
    except NotFound:
        return None
