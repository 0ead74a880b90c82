"""Daily QC (``/console/qc``; tech, vet and admin, as ``GET /api/v1/qc``): for a
day in the hub's zone (a date picker, today by default) the go-live checks of
hub/services/qc.py ``report``: orders whose day passed without images, studies
attached by patient and day or by hand, studies waiting too long, failed
deliveries, share links refused or expired unused, devices silent all day;
each with links to the order, study, queue or deliveries pages."""

from __future__ import annotations

from datetime import date

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from hub.console.web import is_htmx, page_by_key, person, problem, render
from hub.context import Hub
from hub.services import qc

router = APIRouter()
KEY = "qc"
TITLES = {
    "missing_studies": "Orders whose day passed without images",
    "attached_to_check": "Attached by patient and day, or by hand: double-check",
    "waiting_studies": "Studies waiting longer than {minutes:g} minutes",
    "failed_deliveries": "Failed deliveries",
    "shares_refused": "Share links opened after they stopped working",
    "shares_expired_unused": "Share links that expired unopened",
    "silent_devices": "Devices silent all day",
}


def load(hub: Hub, day: date) -> qc.QcReport:
    with hub.db.read_session() as s:
        return qc.report(
            s, day, tz=hub.settings.tz, waiting_minutes=hub.settings.qc_waiting_minutes
        )


@router.get("/console/qc")
async def qc_page(request: Request) -> Response:
    who = await person(request, KEY)
    if isinstance(who, Response):
        return who
    hub: Hub = request.app.state.hub
    today = qc.local_today(hub.settings.tz)
    asked = request.query_params.get("date", "").strip()
    try:
        day = date.fromisoformat(asked) if asked else today
    except ValueError:
        return problem(request, who, 400, "Not a date", "Choose a day as YYYY-MM-DD.")
    report = await run_in_threadpool(load, hub, day)
    titles = {k: v.format(minutes=report.waiting_minutes) for k, v in TITLES.items()}
    ctx = {
        "r": report,
        "day": day,
        "today": today,
        "titles": titles,
        "lists": [(name, titles[name], getattr(report, name)) for name in TITLES],
        "sees": {k: page_by_key(k).allows(who.role) for k in ("queue", "deliveries", "devices")},
    }
    template = "qc_live.html" if is_htmx(request) else "qc.html"
    return render(request, who, template, ctx, current=KEY)
