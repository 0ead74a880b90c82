"""Deliveries (``/console/deliveries``, admin: the API's ``GET /api/v1/deliveries``
is integration and admin, and people have no integration role): failed and
pending first with the receiver's last answer, attempts and next attempt;
retry one, or every failed delivery of a source (``review.retry``, audited
with the person as actor)."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse, Response

from hub.api.params import RowId
from hub.console.web import ADMIN_ONLY, action, is_htmx, person, problem, render
from hub.context import Hub
from hub.errors import NotFound
from hub.models import Delivery
from hub.models.deliveries import DeliveryStatus as ST
from hub.services.deliveries import review

router = APIRouter()
SHOWN = 100  # of each status; the API pages through the rest


@dataclass
class Board:
    source: str | None
    failed: list[Delivery]
    pending: list[Delivery]
    delivered: list[Delivery]
    failed_per_source: dict[str, int]


def load_board(hub: Hub, source: str | None) -> Board:
    with hub.db.read_session() as s:

        def of(status: str, limit: int = SHOWN) -> list[Delivery]:
            flt = review.DeliveryFilter(source=source, status=status)
            return review.find(s, flt, limit=limit)[0]

        return Board(
            source=source,
            failed=of(ST.FAILED),
            pending=of(ST.PENDING),
            delivered=of(ST.DELIVERED, 25),
            failed_per_source=review.failed_per_source(s),
        )


@router.get("/console/deliveries")
async def deliveries(request: Request, source: str | None = None) -> Response:
    who = await person(request, "deliveries")
    if isinstance(who, Response):
        return who
    board = await run_in_threadpool(load_board, request.app.state.hub, source or None)
    template = "deliveries_live.html" if is_htmx(request) else "deliveries.html"
    ctx = {"b": board, "done": request.query_params.get("done", "")}
    return render(request, who, template, ctx, current="deliveries")


def _retry_one(hub: Hub, delivery_id: int, actor: str) -> None:
    with hub.db.session() as s:
        review.retry(s, delivery_id, actor)


def _retry_source(hub: Hub, source: str, actor: str) -> int:
    with hub.db.session() as s:
        return len(review.retry_failed(s, source, actor))


@router.post("/console/deliveries/{delivery_id}/retry")
async def retry(request: Request, delivery_id: RowId) -> Response:
    got = await action(request, "deliveries", ADMIN_ONLY)
    if isinstance(got, Response):
        return got
    who, _ = got
    try:
        await run_in_threadpool(_retry_one, request.app.state.hub, delivery_id, who.actor)
    except NotFound as err:
        return problem(request, who, 404, "Not found", str(err))
    return RedirectResponse(f"/console/deliveries?done=retry-{delivery_id}", status_code=303)


@router.post("/console/deliveries/retry-failed")
async def retry_source(request: Request) -> Response:
    got = await action(request, "deliveries", ADMIN_ONLY)
    if isinstance(got, Response):
        return got
    who, form = got
    source = form.get("source", "").strip()
    if not source:
        return problem(request, who, 400, "No source chosen", "Choose a source to retry.")
    n = await run_in_threadpool(_retry_source, request.app.state.hub, source, who.actor)
    return RedirectResponse(f"/console/deliveries?done=retried-{n}", status_code=303)
