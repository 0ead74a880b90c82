"""Devices and sources (``/console/devices``; tech and admin read, admin changes):
registered devices with when each last queried, stored and reported, and a
C-ECHO button (``POST /api/v1/modalities/{ae}/echo``, the DICOM side's route,
called by htmx with the session's CSRF header) for those with host and port;
unknown callers of the DICOM door (admin, with a form registering one); the
practice systems (sources) with their settings, secrets never shown, and a
vendor source's kind and what its adapter last did (hub/console/source_view.py);
an admin registers one and edits one (``/console/devices/sources/{name}``)
through the API's ``SourceIn`` and ``sources.put``, as ``PUT
/api/v1/sources/{name}``: a vendor source keeps its kind, and its settings
object is edited as the API's JSON."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError

from hub.api.admin import ModalityIn
from hub.api.auth import Caller
from hub.api.deliveries import delivery_kinds
from hub.api.sources import SourceIn, source_kinds
from hub.console import source_view
from hub.console.web import (
    ADMIN_ONLY,
    ECHO_ROLES,
    action,
    forbidden,
    is_htmx,
    person,
    problem,
    render,
)
from hub.context import Hub
from hub.errors import FieldError, Invalid, NotFound
from hub.models import Modality, Source, UnknownPeer
from hub.services import modalities, peers, sources
from hub.services.source_kinds import HL7, SourceKinds

router = APIRouter()
KEY = "devices"


@dataclass
class Devices:
    devices: list[Modality]
    unknown: list[UnknownPeer]
    sources: list[dict[str, Any]]
    senders: list[UnknownPeer]  # HL7 senders no source's hl7_senders allows


def shown(hub: Hub, row: Source, known: SourceKinds, admin: bool) -> dict[str, Any]:
    """The source as the API shows it, and a vendor source's view under ``vendor``.

    Only an admin gets the kind's additions (provet's webhook URL carries its
    token) and the settings; other roles see the kind and what it last did."""
    out = sources.public(row, known, hub.settings if admin else None)
    kind = known.get(row.kind) if row.kind and row.kind != HL7 else None
    out["vendor"] = source_view.describe(out, kind, hub.settings.tz, admin) if kind else None
    return out


def load(hub: Hub, admin: bool, known: SourceKinds) -> Devices:
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
        return Devices(devices, unknown, [shown(hub, r, known, admin) for r in systems], senders)


@router.get("/console/devices")
async def devices(request: Request) -> Response:
    who = await person(request, KEY)
    if isinstance(who, Response):
        return who
    admin = who.role == "admin"
    d = await run_in_threadpool(load, request.app.state.hub, admin, source_kinds(request))
    ctx = {
        "d": d,
        "admin": admin,
        "may_echo": who.role in ECHO_ROLES,
        "done": request.query_params.get("done", ""),
    }
    if admin:  # the "Register a source" form
        ctx |= {"f": SourceForm("", True, _blank()), "kinds": offered(request, HL7)}
        ctx["events"] = sources.EVENTS
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


# Practice systems (sources): register one, edit one (admin). The form is checked
# by the API's ``SourceIn`` and saved by ``sources.put``, as PUT /api/v1/sources/{name}.
SOURCE_TEXT = ("hl7_profile", "webhook_url", "webhook_secret", "hl7_host", "hl7_port")
SENDER_PARTS = ("application", "facility", "address")


@dataclass
class SourceForm:
    """What the source form shows: the values (never a secret) and each field's error."""

    name: str
    new: bool
    values: dict[str, Any]
    secret_set: bool = False
    errors: dict[str, list[str]] | None = None
    kind: str = HL7
    vendor: source_view.VendorView | None = None  # a vendor source's settings and status
    key: str | None = None  # the kind's settings key (its JSON box is named after it)


def offered(request: Request, kind: str) -> list[str]:
    """Result kinds a source of ``kind`` may subscribe to (as ``Registry.check``
    accepts): no node routes, no adapter's own jobs, no other vendor's callbacks."""
    return [
        k.name
        for k in delivery_kinds(request)
        if not k.to_node and k.events and k.source_kind in (None, kind)
    ]


def _form_values(row: dict[str, Any]) -> dict[str, Any]:
    senders = "\n".join(
        ", ".join(e.get(k, "") for k in SENDER_PARTS) for e in row.get("hl7_senders", [])
    )
    return {
        "hl7_profile": row.get("hl7_profile") or "",
        "webhook_url": row.get("webhook_url") or "",
        "hl7_host": row.get("hl7_host") or "",
        "hl7_port": "" if row.get("hl7_port") is None else str(row["hl7_port"]),
        "tls": bool(row.get("tls")),
        "results": list(row.get("results") or []),
        "events": list(row.get("events") or []),
        "hl7_senders": senders,
        "kind_settings": "",
    }


def _blank() -> dict[str, Any]:
    defaults = SourceIn()
    return _form_values({"hl7_profile": defaults.hl7_profile, "events": defaults.events})


def _senders(text: str) -> list[dict[str, str]]:
    """``application, facility, address`` a line; the service judges each entry."""
    entries = []
    for line in text.splitlines():
        if line.strip():
            parts = [p.strip() for p in line.split(",", 2)] + ["", ""]
            entries.append(dict(zip(SENDER_PARTS, parts, strict=False)))
    return entries


async def _posted(request: Request, form: dict[str, str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The typed values (to show again, secret left out) and the body for ``SourceIn``."""
    multi = parse_qs((await request.body()).decode("utf-8", "replace"))
    typed: dict[str, Any] = {
        k: form.get(k, "").strip() for k in SOURCE_TEXT if k != "webhook_secret"
    }
    typed |= {
        "tls": form.get("tls") == "on",
        "results": multi.get("results", []),
        "events": multi.get("events", []),
        "hl7_senders": form.get("hl7_senders", ""),
        "kind_settings": form.get("kind_settings", ""),
    }
    body: dict[str, Any] = {k: v for k, v in typed.items() if k in SOURCE_TEXT and v}
    secret = form.get("webhook_secret", "")
    if secret:  # empty keeps the stored secret
        body["webhook_secret"] = secret
    body |= {k: typed[k] for k in ("tls", "results", "events")}
    body["hl7_senders"] = _senders(typed["hl7_senders"])
    return typed, body


def _field(where: object) -> str:
    """``hl7_senders[1].address`` -> ``hl7_senders``: the form field to show the error at."""
    return str(where).split("[", 1)[0].split(".", 1)[0]


def _message(e: FieldError) -> str:
    """The error as shown beside its field; a sender's names which one (blank lines not
    counted), a kind's setting (``upstream.port``, shown at the settings box) its name."""
    found = re.match(r"hl7_senders\[(\d+)\]\.?(\w*)", e.field)
    if found is None:
        inner = e.field.split(".", 1)[1] if "." in e.field else ""
        return f"{inner}: {e.message}" if inner else e.message
    part = f" ({found[2]})" if found[2] else ""
    return f"sender {int(found[1]) + 1}{part}: {e.message}"


def _kind_settings(row: Source, key: str, text: str) -> dict[str, Any]:
    """The settings object typed in the box (as the API's ``"<key>": {...}``);
    an empty box keeps the stored settings. Secrets left out are kept."""
    if not text.strip():
        return {k: v for k, v in (row.kind_settings or {}).items() if k != sources.SECRETS_SET}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise Invalid.one(key, f"is not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(value, dict):
        raise Invalid.one(key, 'must be a JSON object: {"name": value, ...}')
    return value


def _save(
    request: Request, name: str, body: dict[str, Any], text: str, actor: str, new: bool
) -> None:
    """``SourceIn`` then ``sources.put``, as ``put_source``; raises ``Invalid``.
    A stored source keeps its kind; ``text`` is a vendor source's settings box."""
    try:
        checked = SourceIn.model_validate(body)
    except ValidationError as err:
        raise Invalid(
            [FieldError(_field(e["loc"][0] if e["loc"] else ""), e["msg"]) for e in err.errors()]
        ) from None
    # The same fields by the same names; lists become the settings' tuples.
    fields: dict[str, Any] = {
        k: tuple(v) if isinstance(v, list) else v for k, v in checked.model_dump().items()
    }
    hub: Hub = request.app.state.hub
    known = source_kinds(request)
    profiles = sources.hl7_profiles(hub.mappings.root)
    with hub.db.session() as s:
        row = s.get(Source, name)
        if new and row is not None:
            raise Invalid.one("name", "is registered already; edit it from the list")
        if not new and row is None:  # removed over the API meanwhile
            raise NotFound(name)
        if row is not None and row.kind and row.kind != HL7:
            kind = known.get(row.kind)
            if kind is None:
                raise Invalid.one("kind", f"{row.kind!r} is not a kind this hub knows")
            fields |= {"kind": kind.name, "kind_settings": _kind_settings(row, kind.key, text)}
        sources.put(
            s,
            name,
            sources.SourceSettings(**fields),
            delivery_kinds(request),
            profiles,
            actor=actor,
            source_kinds=known,
            secret_key=hub.settings.secret_key,
        )


def _render_source(request: Request, who: Caller, form: SourceForm, status: int = 200) -> Response:
    ctx = {"f": form, "kinds": offered(request, form.kind), "events": sources.EVENTS}
    return render(request, who, "source.html", ctx, status=status, current=KEY)


async def _admin(request: Request) -> Caller | Response:
    who = await person(request, KEY)
    if isinstance(who, Response) or who.role in ADMIN_ONLY:
        return who
    return forbidden(request, who, f"A {who.role} account may not change sources.")


def _stored(hub: Hub, name: str, known: SourceKinds) -> dict[str, Any] | None:
    with hub.db.read_session() as s:
        row = s.get(Source, name)
        return shown(hub, row, known, admin=True) if row is not None else None


def _stored_form(stored: dict[str, Any], known: SourceKinds, form: SourceForm) -> SourceForm:
    """``form`` with what the stored source adds: its secret flag, kind and view."""
    form.secret_set = stored["webhook_secret_set"]
    form.kind, form.vendor = stored["kind"], stored["vendor"]
    kind = known.get(form.kind) if form.vendor else None
    if kind is not None:
        form.key = kind.key
        if not form.values.get("kind_settings"):
            form.values["kind_settings"] = source_view.editable(stored.get(kind.key) or {}, kind)
    return form


@router.get("/console/devices/sources/{name}")
async def source_page(request: Request, name: str) -> Response:
    who = await _admin(request)
    if isinstance(who, Response):
        return who
    known = source_kinds(request)
    stored = await run_in_threadpool(_stored, request.app.state.hub, name, known)
    if stored is None:
        return problem(request, who, 404, "Not found", f"{name} is not a registered source.")
    form = _stored_form(stored, known, SourceForm(name, False, _form_values(stored)))
    return _render_source(request, who, form)


async def _submit(request: Request, name: str | None) -> Response:
    got = await action(request, KEY, ADMIN_ONLY)
    if isinstance(got, Response):
        return got
    who, form = got
    new = name is None
    name = form.get("name", "").strip() if name is None else name
    typed, body = await _posted(request, form)
    try:
        text = typed["kind_settings"]
        await run_in_threadpool(_save, request, name, body, text, who.actor, new)
    except Invalid as err:
        errors: dict[str, list[str]] = {}
        for e in err.errors:
            errors.setdefault(_field(e.field), []).append(_message(e))
        known = source_kinds(request)
        hub = request.app.state.hub
        stored = None if new else await run_in_threadpool(_stored, hub, name, known)
        again = SourceForm(name, new, typed, errors=errors)
        if stored is not None:
            again = _stored_form(stored, known, again)
        return _render_source(request, who, again, 422)
    except NotFound:  # removed over the API meanwhile
        return problem(request, who, 404, "Not found", f"{name} is not a registered source.")
    done = "source-registered" if new else "source-saved"
    return RedirectResponse(f"/console/devices?done={done}", status_code=303)


@router.post("/console/devices/sources")
async def register_source(request: Request) -> Response:
    """Register a new practice system (``PUT /api/v1/sources/{name}`` also changes one)."""
    return await _submit(request, None)


@router.post("/console/devices/sources/{name}")
async def edit_source(request: Request, name: str) -> Response:
    return await _submit(request, name)


# After the source routes: a source named "remove" is not a device called "sources".
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
