"""Messages (``/console/messages``, admin: the API's ``GET /api/v1/messages`` is
integration and admin): inbound HL7 with its ACK, searchable by the API's
filters; a message's page shows the raw text with segments and fields
labelled (hl7view) and, for admins, a Reprocess button that POSTs to the HL7
adapter's ``/api/v1/messages/{id}/reprocess`` with htmx (the session cookie
and CSRF header), then opens the new message's page."""

from __future__ import annotations

from datetime import date
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from hub.api.params import RowId
from hub.console import hl7view
from hub.console.web import is_htmx, person, problem, render
from hub.context import Hub
from hub.errors import Invalid, NotFound
from hub.models import InboundMessage
from hub.services import messages

router = APIRouter()
KEY = "messages"
PAGE = 50
TEXT_FILTERS = ("sender", "type", "patient_id", "source", "control_id")


def load(
    hub: Hub, flt: messages.MessageFilter, cursor: str | None
) -> tuple[list[InboundMessage], str | None]:
    with hub.db.read_session() as s:
        return messages.find(s, flt, limit=PAGE, cursor=cursor, tz=hub.settings.tz)


@router.get("/console/messages")
async def message_list(request: Request) -> Response:
    who = await person(request, KEY)
    if isinstance(who, Response):
        return who
    q = request.query_params
    shown: dict[str, str] = {
        k: q[k].strip()[:64] for k in (*TEXT_FILTERS, "outcome", "date", "order_id") if q.get(k)
    }
    try:
        day = date.fromisoformat(shown["date"]) if "date" in shown else None
        order_id = int(shown["order_id"]) if "order_id" in shown else None
        if order_id is not None and not 1 <= order_id < 2**63:
            raise ValueError(order_id)
    except ValueError:
        return problem(request, who, 400, "Bad filter", "Date is YYYY-MM-DD, order a number.")
    outcome = shown.get("outcome")
    flt = messages.MessageFilter(
        sender=shown.get("sender"),
        type=shown["type"].upper() if "type" in shown else None,
        outcome=outcome if outcome in ("AA", "AE", "AR") else None,
        date=day,
        patient_id=shown.get("patient_id"),
        source=shown.get("source"),
        control_id=shown.get("control_id"),
        order_id=order_id,
    )
    cursor = q.get("cursor") or None
    try:
        rows, nxt = await run_in_threadpool(load, request.app.state.hub, flt, cursor)
    except Invalid:
        return problem(request, who, 400, "Bad page", "That page of messages does not exist.")
    ctx: dict[str, Any] = {
        "rows": rows,
        "f": shown,
        "query": urlencode(shown),
        "next_url": f"/console/messages?{urlencode({**shown, 'cursor': nxt})}" if nxt else None,
        "paged": cursor is not None,
    }
    template = "messages_live.html" if is_htmx(request) else "messages.html"
    return render(request, who, template, ctx, current=KEY)


def _message(hub: Hub, message_id: int) -> InboundMessage:
    with hub.db.read_session() as s:
        row = messages.get(s, message_id)
        s.expunge(row)
        return row


@router.get("/console/messages/{message_id}")
async def message_page(request: Request, message_id: RowId) -> Response:
    who = await person(request, KEY)
    if isinstance(who, Response):
        return who
    try:
        m = await run_in_threadpool(_message, request.app.state.hub, message_id)
    except NotFound as err:
        return problem(request, who, 404, "Not found", str(err))
    body, cut = hl7view.segments(m.raw)
    ack, _ = hl7view.segments(m.ack)
    ctx = {"m": m, "body": body, "cut": cut, "ack": ack, "may_reprocess": who.role == "admin"}
    return render(request, who, "message_hl7.html", ctx, current=KEY)
