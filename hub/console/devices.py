"""Devices and sources (``/console/devices``; tech and admin read, admin changes):
registered devices with when each last queried, stored and reported, and a
C-ECHO button (``POST /api/v1/modalities/{ae}/echo``, the DICOM side's route,
called by htmx with the session's CSRF header) for those with host and port;
unknown callers of the DICOM door (admin, with a form registering one); the
practice systems (sources) with their settings, secrets never shown."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError

from hub.api.admin import ModalityIn
from hub.console.web import ADMIN_ONLY, ECHO_ROLES, action, is_htmx, person, problem, render
from hub.context import Hub
from hub.models import Modality, UnknownPeer
from hub.services import modalities, peers, sources

router = APIRouter()
KEY = "devices"


@dataclass
class Devices:
    devices: list[Modality]
    unknown: list[UnknownPeer]
    sources: list[dict[str, Any]]
    senders: list[UnknownPeer]  # HL7 senders no source's hl7_senders allows


def load(hub: Hub, admin: bool) -> Devices:
    with hub.db.read_session() as s:
        devices = modalities.list_all(s)
        systems = sources.list_all(s)
        unknown, senders = [], []
        if admin:  # as GET /api/v1/modalities/unknown and /api/v1/sources/unknown
            unknown = peers.seen(s, "dicom", exclude=[d.ae_title for d in devices])
            entries = [e for src in systems for e in src.hl7_senders]
            senders = [
                r
                for r in peers.seen(s, "hl7")
                if not any(peers.sender_matches(e, r.name, r.facility, r.address) for e in entries)
            ]
        return Devices(devices, unknown, [sources.public(r) for r in systems], senders)


@router.get("/console/devices")
async def devices(request: Request) -> Response:
    who = await person(request, KEY)
    if isinstance(who, Response):
        return who
    admin = who.role == "admin"
    d = await run_in_threadpool(load, request.app.state.hub, admin)
    ctx = {
        "d": d,
        "admin": admin,
        "may_echo": who.role in ECHO_ROLES,
        "done": request.query_params.get("done", ""),
    }
    template = "devices_live.html" if is_htmx(request) else "devices.html"
    return render(request, who, template, ctx, current=KEY)


def _register(hub: Hub, ae_title: str, values: dict[str, object], actor: str) -> bool:
    with hub.db.session() as s:
        if modalities.get(s, ae_title) is not None:
            return False
        modalities.put(s, ae_title, values, actor=actor)
        return True


@router.post("/console/devices/register")
async def register(request: Request) -> Response:
    """Register a new device (as ``PUT /api/v1/modalities/{ae}``, which also changes one)."""
    got = await action(request, KEY, ADMIN_ONLY)
    if isinstance(got, Response):
        return got
    who, form = got
    ae_title = form.get("ae_title", "").strip()
    raw = {
        k: v.strip()
        for k, v in form.items()
        if k in ("site", "modality", "host", "port", "description") and v.strip()
    }
    try:
        if not ae_title or len(ae_title) > 16 or "\\" in ae_title or not ae_title.isprintable():
            raise ValueError("an AE title is 1 to 16 printable characters without a backslash")
        values = ModalityIn.model_validate({**raw, "tls": form.get("tls") == "on"}).model_dump()
    except (ValidationError, ValueError) as err:
        message = str(err)
        if isinstance(err, ValidationError):
            message = "; ".join(f"{e['loc'][0]}: {e['msg']}" for e in err.errors())
        return problem(request, who, 400, "Not registered", message)
    created = await run_in_threadpool(_register, request.app.state.hub, ae_title, values, who.actor)
    if not created:
        return problem(request, who, 409, "Not registered", f"{ae_title} is registered already.")
    return RedirectResponse("/console/devices?done=registered", status_code=303)


@router.post("/console/devices/{ae_title}/remove")
async def remove(request: Request, ae_title: str) -> Response:
    got = await action(request, KEY, ADMIN_ONLY)
    if isinstance(got, Response):
        return got
    who, _ = got

    def work() -> bool:
        with request.app.state.hub.db.session() as s:
            return modalities.delete(s, ae_title, actor=who.actor)

    if not await run_in_threadpool(work):
        return problem(request, who, 404, "Not found", f"{ae_title} is not registered.")
    return RedirectResponse("/console/devices?done=removed", status_code=303)
