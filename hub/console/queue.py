"""Reconciliation queue (``/console/queue``; tech, vet and admin see it, tech and
admin act): each waiting study with its thumbnails, why it waits and its ranked
candidate orders; attach after a confirmation, detach a wrong attachment.

Attach and detach go through ``hub.archive.rewrite``, the same path as
``POST /api/v1/studies/{uid}/reconcile`` and ``.../detach``: the index, the
headers of the stored files and the audit trail (the person as actor).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse, Response
from sqlalchemy.orm import Session

from hub.archive import rewrite
from hub.console.today import today_in
from hub.console.web import RECONCILE_ROLES, action, is_htmx, person, problem, render
from hub.context import Hub
from hub.errors import Conflict, Invalid, NotFound
from hub.models import Order, Study
from hub.services import candidates, orders, studies

router = APIRouter()
PAGE_SIZE = 25
THUMBS = 4  # previews per study: enough to recognise the animal and the view
RECENT_DAYS = 7  # attachments shown for a second look (and a detach)

WHY = {
    "no_match": "No order fits: no accession number, study UID, or patient and day of an "
    "open order agree with the images.",
    "ambiguous": "More than one open order fits equally well; a person must choose.",
    "conflict": "The images point at an order (by accession or UID) but name another "
    "patient ID: possibly the wrong animal.",
}
HELD = "Detached by a person: automatic matching leaves it alone until someone attaches it."


@dataclass
class Choice:
    order: Order
    score: int
    reasons: list[str]


@dataclass
class Waiting:
    study: Study
    series: int
    images: int
    thumbs: list[str]
    choices: list[Choice]

    @property
    def why(self) -> str:
        if self.study.held:
            return HELD
        return WHY.get(self.study.unmatched_reason or "", "")


@dataclass
class Queue:
    waiting: list[Waiting]
    next_cursor: str | None
    recent: list[tuple[Study, Order | None]]


def preview_urls(s: Session, study: Study) -> list[str]:
    """The viewer's PNG previews of the study's first images, one series after another."""
    base = f"/viewer/studies/{quote(study.study_instance_uid)}/instances"
    urls = [
        f"{base}/{quote(i.sop_instance_uid)}/preview.png"
        for _, instances in studies.series_of(s, study)
        for i in instances
    ]
    return urls[:THUMBS]


def load_queue(hub: Hub, cursor: str | None) -> Queue:
    _, midnight = today_in(hub)
    with hub.db.read_session() as s:
        rows, nxt = studies.find(
            s, studies.StudyFilter(matched=False), limit=PAGE_SIZE, cursor=cursor
        )
        counts = studies.counts(s, [r.id for r in rows if r.id is not None])
        ranked = [candidates.current(s, r) for r in rows]
        recent = studies.attached_since(s, midnight - timedelta(days=RECENT_DAYS))
        found = orders.by_ids(
            s,
            {c["order_id"] for cs in ranked for c in cs}
            | {r.order_id for r in recent if r.order_id},
        )
        waiting = []
        for study, cands in zip(rows, ranked, strict=True):
            series, images = counts.get(study.id or 0, (0, 0))
            choices = [
                Choice(found[c["order_id"]], c["score"], list(c.get("reasons", [])))
                for c in cands
                if c["order_id"] in found
            ]
            waiting.append(Waiting(study, series, images, preview_urls(s, study), choices))
    return Queue(waiting, nxt, [(r, found.get(r.order_id or 0)) for r in recent])


@router.get("/console/queue")
async def queue(request: Request, cursor: str | None = None) -> Response:
    who = await person(request, "queue")
    if isinstance(who, Response):
        return who
    hub: Hub = request.app.state.hub
    try:
        q = await run_in_threadpool(load_queue, hub, cursor)
    except Invalid:  # a cursor that is not ours: start from the top
        q = await run_in_threadpool(load_queue, hub, None)
    notice = await run_in_threadpool(_notice, hub, request)
    template = "queue_live.html" if is_htmx(request) else "queue.html"
    ctx = {"q": q, "may_act": who.role in RECONCILE_ROLES, "notice": notice, "cursor": cursor}
    return render(request, who, template, ctx, current="queue")


def _notice(hub: Hub, request: Request) -> str | None:
    """What the last attach or detach did, from the redirect's query (looked up, not echoed)."""
    params = request.query_params
    with hub.db.read_session() as s:
        try:
            if "attached" in params:
                order = orders.get(s, int(params["attached"]))
                text = (
                    f"Study attached to order {order.accession_number} "
                    f"({order.patient_name}); the order is now {order.status.replace('_', ' ')}."
                )
                missed = params.get("not_corrected", "0")
                if missed.isdigit() and int(missed):
                    text += f" {missed} stored file(s) could not be corrected: see the audit log."
                return text
            if "detached" in params:
                study = studies.get(s, params["detached"])
                return f"Study of {study.patient_name or 'an unnamed patient'} is waiting again."
        except (NotFound, ValueError):
            return None
    return None


def _confirm_context(hub: Hub, uid: str, order_id: int | None) -> dict[str, object]:
    with hub.db.read_session() as s:
        study = studies.get(s, uid)
        order = orders.get(s, order_id) if order_id is not None else None
        attached = orders.get(s, study.order_id) if study.order_id else None
        series, images = studies.counts(s, [study.id or 0]).get(study.id or 0, (0, 0))
        return {
            "study": study,
            "order": order,
            "attached": attached,
            "images": images,
            "series": series,
            "thumbs": preview_urls(s, study),
        }


@router.get("/console/queue/{uid}/attach")
async def attach_confirm(request: Request, uid: str, order_id: int | None = None) -> Response:
    """The confirmation step: the study and the chosen order side by side."""
    who = await person(request, "queue")
    if isinstance(who, Response):
        return who
    if who.role not in RECONCILE_ROLES:
        return problem(request, who, 403, "Not allowed", "Only techs and admins attach studies.")
    if order_id is None:
        return problem(request, who, 400, "No order chosen", "Choose an order in the queue.")
    try:
        ctx = await run_in_threadpool(_confirm_context, request.app.state.hub, uid, order_id)
    except NotFound as err:
        return problem(request, who, 404, "Not found", str(err))
    return render(request, who, "attach_confirm.html", ctx, current="queue")


@router.post("/console/queue/{uid}/attach")
async def attach(request: Request, uid: str) -> Response:
    got = await action(request, "queue", RECONCILE_ROLES)
    if isinstance(got, Response):
        return got
    who, form = got
    order_id = form.get("order_id", "")
    if not order_id.isdigit():
        return problem(request, who, 400, "No order chosen", "Choose an order in the queue.")
    hub: Hub = request.app.state.hub
    try:
        missed = await run_in_threadpool(
            rewrite.reconcile_study, hub, uid, int(order_id), who.actor
        )
    except NotFound as err:
        return problem(request, who, 404, "Not found", str(err))
    except Conflict as err:
        return problem(request, who, 409, "Not attached", str(err))
    query = urlencode({"attached": order_id, "not_corrected": len(missed)})
    return RedirectResponse(f"/console/queue?{query}", status_code=303)


@router.get("/console/studies/{uid}/detach")
async def detach_confirm(request: Request, uid: str) -> Response:
    who = await person(request, "queue")
    if isinstance(who, Response):
        return who
    if who.role not in RECONCILE_ROLES:
        return problem(request, who, 403, "Not allowed", "Only techs and admins detach studies.")
    try:
        ctx = await run_in_threadpool(_confirm_context, request.app.state.hub, uid, None)
    except NotFound as err:
        return problem(request, who, 404, "Not found", str(err))
    if ctx["attached"] is None:
        return problem(request, who, 409, "Not attached", "This study waits in the queue.")
    return render(request, who, "detach_confirm.html", ctx, current="queue")


@router.post("/console/studies/{uid}/detach")
async def detach(request: Request, uid: str) -> Response:
    got = await action(request, "queue", RECONCILE_ROLES)
    if isinstance(got, Response):
        return got
    who, _ = got
    hub: Hub = request.app.state.hub
    try:
        await run_in_threadpool(rewrite.detach_study, hub, uid, who.actor)
    except NotFound as err:
        return problem(request, who, 404, "Not found", str(err))
    except Conflict as err:
        return problem(request, who, 409, "Not detached", str(err))
    return RedirectResponse(f"/console/queue?{urlencode({'detached': uid})}", status_code=303)
