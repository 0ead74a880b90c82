"""Practice systems (sources): what each wants back and where (admin)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Path, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from hub.api.auth import Caller, require
from hub.api.deliveries import delivery_kinds
from hub.errors import FieldError, Invalid
from hub.schemas import Page, UtcDateTime
from hub.services import sources
from hub.services.source_kinds import SourceKinds

router = APIRouter(prefix="/api/v1/sources", tags=["sources"])
ADMIN = require()
READ = require("integration")


class SourceIn(BaseModel):
    # Extra fields are allowed only as the settings object of the source's kind
    # ("upstream", "provet", ...): put_source refuses any other.
    model_config = ConfigDict(extra="allow")
    kind: str = Field(
        "hl7",
        max_length=16,
        description="hl7 (orders by HL7 v2 or REST), or a vendor adapter's kind whose "
        'settings object follows under its key, e.g. upstream-mwl + "upstream": {...}',
    )
    hl7_profile: str = Field("default", min_length=1, max_length=64)
    webhook_url: str | None = Field(None, max_length=1024)
    webhook_secret: str | None = Field(
        None,
        max_length=256,
        description="signs each webhook body (HMAC-SHA256); never returned. "
        "Omit it on an update to keep the stored one.",
    )
    hl7_host: str | None = Field(None, max_length=255)
    hl7_port: int | None = Field(None, ge=1, le=65535)
    tls: bool = Field(False, description="send HL7 to hl7_host:hl7_port over TLS")
    hl7_senders: list[dict[str, Any]] = Field(
        default_factory=list,
        max_length=100,
        description="who may send HL7 as this source: entries "
        '{"application": MSH-3, "facility": MSH-4, "address": "10.0.0.7" or "10.0.0.0/24"}, '
        "each part optional, at least one given",
    )
    results: list[str] = Field(
        default_factory=list,
        description="delivery kinds this system wants, e.g. webhook, hl7-oru, hl7-orm-status",
    )
    events: list[sources.EventName] = Field(
        default_factory=lambda: list(sources.DEFAULT_EVENTS),
        description="which events cause deliveries; default: study received, order "
        "completed, order cancelled, reconciliation changed",
    )


class SourceOut(BaseModel):
    # A vendor kind adds its settings object (secrets as "<name>_set") and "status".
    model_config = ConfigDict(extra="allow")
    name: str
    kind: str = "hl7"
    hl7_profile: str
    webhook_url: str | None
    webhook_secret_set: bool
    hl7_host: str | None
    hl7_port: int | None
    tls: bool
    hl7_senders: list[dict[str, str]]
    results: list[str]
    events: list[str]
    created_at: UtcDateTime
    updated_at: UtcDateTime


@router.put("/{name}", response_model=SourceOut)
def put_source(
    body: SourceIn,
    request: Request,
    response: Response,
    name: str = Path(..., max_length=64),
    who: Caller = Depends(ADMIN),
) -> SourceOut:
    new = sources.SourceSettings(
        hl7_profile=body.hl7_profile,
        webhook_url=body.webhook_url,
        webhook_secret=body.webhook_secret,
        hl7_host=body.hl7_host,
        hl7_port=body.hl7_port,
        hl7_senders=tuple(body.hl7_senders),
        tls=body.tls,
        results=tuple(body.results),
        events=tuple(body.events),
        kind=body.kind,
        kind_settings=_kind_settings(body, source_kinds(request)),
    )
    hub = request.app.state.hub
    profiles = sources.hl7_profiles(hub.mappings.root)
    with hub.db.session() as s:
        row, created = sources.put(
            s,
            name,
            new,
            delivery_kinds(request),
            profiles,
            actor=who.actor,
            source_kinds=source_kinds(request),
            secret_key=hub.settings.secret_key,
        )
        out = SourceOut(**sources.public(row, source_kinds(request), hub.settings))
    response.status_code = 201 if created else 200
    return out


@router.get("", response_model=Page[SourceOut])
def list_sources(request: Request, who: Caller = Depends(READ)) -> Page[SourceOut]:
    known = source_kinds(request)
    hub = request.app.state.hub
    with hub.db.read_session() as s:
        return Page[SourceOut](
            items=[SourceOut(**sources.public(r, known, hub.settings)) for r in sources.list_all(s)]
        )


@router.get("/{name}", response_model=SourceOut)
def get_source(name: str, request: Request, who: Caller = Depends(READ)) -> SourceOut:
    hub = request.app.state.hub
    with hub.db.read_session() as s:
        row = sources.get(s, name)
        return SourceOut(**sources.public(row, source_kinds(request), hub.settings))


def source_kinds(request: Request) -> SourceKinds:
    """The registry the composition root built (hub/serve.py ``build_app``)."""
    known: SourceKinds | None = getattr(request.app.state, "source_kinds", None)
    return known if known is not None else SourceKinds()


def _kind_settings(body: SourceIn, known: SourceKinds) -> dict[str, Any] | None:
    """The settings object of the body's kind; any other extra field is refused."""
    extra = dict(body.model_extra or {})
    kind = known.get(body.kind)
    key = kind.key if kind else None
    errors = [
        FieldError(name, "is not a field of a source" + (f" of kind {body.kind!r}" if key else ""))
        for name in extra
        if name != key
    ]
    value = extra.get(key) if key else None
    if key and value is not None and not isinstance(value, dict):
        errors.append(FieldError(key, "must be an object"))
    if errors:
        raise Invalid(errors)
    return value


@router.delete("/{name}", status_code=204)
def delete_source(name: str, request: Request, who: Caller = Depends(ADMIN)) -> Response:
    with request.app.state.hub.db.session() as s:
        sources.delete(s, name, actor=who.actor)
    return Response(status_code=204)
