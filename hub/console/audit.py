"""Audit (``/console/audit``, admin, as ``GET /api/v1/audit``): the audit log newest
first, filtered by action, target id and actor (a whole actor such as
``user:3:ada`` or just the name), paged with the API's cursor."""

from __future__ import annotations

from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from hub.console.web import person, problem, render
from hub.context import Hub
from hub.errors import Invalid
from hub.models import AuditEvent
from hub.services import events

router = APIRouter()
KEY = "audit"
PAGE = 100
FILTERS = ("action", "target_id", "actor")


def load(hub: Hub, flt: dict[str, str], cursor: str | None) -> tuple[list[AuditEvent], str | None]:
    with hub.db.read_session() as s:
        return events.audit_trail(
            s,
            action=flt.get("action"),
            target_id=flt.get("target_id"),
            actor=flt.get("actor"),
            limit=PAGE,
            cursor=cursor,
        )


@router.get("/console/audit")
async def audit(request: Request) -> Response:
    who = await person(request, KEY)
    if isinstance(who, Response):
        return who
    q = request.query_params
    flt = {k: q[k].strip()[:128] for k in FILTERS if q.get(k, "").strip()}
    try:
        rows, nxt = await run_in_threadpool(
            load, request.app.state.hub, flt, q.get("cursor") or None
        )
    except Invalid:
        return problem(request, who, 400, "Bad page", "That page of the audit log does not exist.")
    next_url = f"/console/audit?{urlencode({**flt, 'cursor': nxt})}" if nxt else None
    ctx = {"rows": rows, "flt": flt, "next_url": next_url, "paged": bool(q.get("cursor"))}
    return render(request, who, "audit.html", ctx, current=KEY)
