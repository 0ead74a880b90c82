"""Orders (``/console/orders``; frontdesk, tech, vet, admin): search and open an
order; frontdesk and admin cancel or discontinue one, with a reason that is
kept on the order's event and in the audit trail (the person as actor)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse, Response

from hub.console.web import CANCEL_ROLES, RECONCILE_ROLES, action, is_htmx, person, problem, render
from hub.context import Hub
from hub.errors import Conflict, Invalid, NotFound
from hub.models import Order, OrderStatus, Study
from hub.services import events, orders, studies

router = APIRouter()
PAGE_SIZE = 50
STATUSES = ("scheduled", "in_progress", "completed", "cancelled", "discontinued")
MAX_REASON = 200
# What a person may do to an order in each status (orders.TRANSITIONS decides in the end).
STOPS = {
    OrderStatus.SCHEDULED: ("cancel",),
    OrderStatus.IN_PROGRESS: ("discontinue",),
}


@dataclass
class Search:
    """The search form as typed, and what is wrong with it (shown, never a 422)."""

    text: str = ""
    accession: str = ""
    day: str = ""
    status: str = ""
    errors: list[str] = field(default_factory=list)

    @classmethod
    def parse(cls, params: dict[str, str]) -> Search:
        got = cls(
            text=params.get("q", "").strip()[:64],
            accession=params.get("accession", "").strip()[:16],
            day=params.get("date", "").strip()[:10],
            status=params.get("status", "").strip(),
        )
        if got.status and got.status not in STATUSES:
            got.errors.append(f"Unknown status {got.status!r}.")
            got.status = ""
        if got.day:
            try:
                date.fromisoformat(got.day)
            except ValueError:
                got.errors.append(f"{got.day!r} is not a date (YYYY-MM-DD).")
                got.day = ""
        return got

    def filter(self) -> orders.OrderFilter:
        return orders.OrderFilter(
            status=self.status or None,
            date=date.fromisoformat(self.day) if self.day else None,
            accession_number=self.accession or None,
            patient_text=self.text or None,
        )

    def query(self) -> str:
        pairs = {"q": self.text, "accession": self.accession, "date": self.day}
        pairs["status"] = self.status
        return urlencode({k: v for k, v in pairs.items() if v})


def find(hub: Hub, search: Search, cursor: str | None) -> tuple[list[Order], str | None]:
    with hub.db.read_session() as s:
        return orders.find(s, search.filter(), limit=PAGE_SIZE, cursor=cursor, newest_first=True)


@router.get("/console/orders")
async def order_search(request: Request) -> Response:
    who = await person(request, "orders")
    if isinstance(who, Response):
        return who
    search = Search.parse(dict(request.query_params))
    cursor = request.query_params.get("cursor") or None
    hub: Hub = request.app.state.hub
    try:
        rows, nxt = await run_in_threadpool(find, hub, search, cursor)
    except Invalid:  # a cursor that is not ours
        rows, nxt = await run_in_threadpool(find, hub, search, None)
    ctx = {"search": search, "rows": rows, "next_cursor": nxt, "statuses": STATUSES}
    template = "orders_live.html" if is_htmx(request) else "orders.html"
    return render(request, who, template, ctx, current="orders")


def _order_and_studies(hub: Hub, order_id: int) -> tuple[Order, list[Study]]:
    with hub.db.read_session() as s:
        return orders.get(s, order_id), studies.of_order(s, order_id)


@router.get("/console/orders/{order_id}")
async def order_page(request: Request, order_id: int) -> Response:
    who = await person(request, "orders")
    if isinstance(who, Response):
        return who
    try:
        order, attached = await run_in_threadpool(
            _order_and_studies, request.app.state.hub, order_id
        )
    except NotFound as err:
        return problem(request, who, 404, "Not found", str(err))
    ctx = {
        "order": order,
        "studies": attached,
        "stops": STOPS.get(order.status, ()) if who.role in CANCEL_ROLES else (),
        "may_detach": who.role in RECONCILE_ROLES,
        "done": request.query_params.get("done", ""),
        "max_reason": MAX_REASON,
    }
    return render(request, who, "order.html", ctx, current="orders")


def stop(hub: Hub, order_id: int, how: str, reason: str, actor: str) -> None:
    """Cancel or discontinue, through the same service as the API, and audit it."""
    with hub.db.session() as s:
        change = orders.cancel if how == "cancel" else orders.discontinue
        order = change(s, order_id, reason=f"{reason} ({actor})")
        events.audit(s, actor, how, "order", order_id, {"reason": reason, "status": order.status})


@router.post("/console/orders/{order_id}/{how}")
async def stop_order(request: Request, order_id: int, how: str) -> Response:
    got = await action(request, "orders", CANCEL_ROLES)
    if isinstance(got, Response):
        return got
    who, form = got
    if how not in ("cancel", "discontinue"):
        return problem(request, who, 404, "Not found", "Orders are cancelled or discontinued.")
    reason = " ".join(form.get("reason", "").split())
    if not reason or len(reason) > MAX_REASON:
        message = f"Say why, in at most {MAX_REASON} characters: the practice will ask."
        return problem(request, who, 400, "A reason is needed", message)
    try:
        await run_in_threadpool(stop, request.app.state.hub, order_id, how, reason, who.actor)
    except NotFound as err:
        return problem(request, who, 404, "Not found", str(err))
    except Conflict as err:
        return problem(request, who, 409, "Not changed", str(err))
    done = "cancelled" if how == "cancel" else "discontinued"
    return RedirectResponse(f"/console/orders/{order_id}?done={done}", status_code=303)
