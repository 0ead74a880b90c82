"""Admin-only resources: API keys, registered modalities, the audit log."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from hub.api.auth import Caller, forget_keys, require
from hub.api.params import RowId
from hub.errors import NotFound
from hub.models import Modality
from hub.schemas import AeTitle, ModalityCode, Page, UtcDateTime
from hub.services import events, keys, modalities
from hub.services.paging import MAX_LIMIT

router = APIRouter(prefix="/api/v1", tags=["admin"])
ADMIN = require()
SEE_DEVICES = require("tech", "frontdesk", "integration")


class KeyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=64)
    role: Literal["integration", "frontdesk", "tech", "vet", "admin"]
    source: str | None = Field(
        None, max_length=64, description="only this source's orders may be placed and changed"
    )


class KeyOut(BaseModel):
    id: int
    name: str
    role: str
    source: str | None
    prefix: str
    created_at: UtcDateTime
    revoked_at: UtcDateTime | None


class KeyCreated(BaseModel):
    id: int
    name: str
    role: str
    source: str | None
    key: str


@router.post("/keys", status_code=201, response_model=KeyCreated)
def create_key(body: KeyIn, request: Request, who: Caller = Depends(ADMIN)) -> KeyCreated:
    with request.app.state.hub.db.session() as s:
        row, plain = keys.create(s, body.name, body.role, actor=who.actor, source=body.source)
        assert row.id is not None
        out = KeyCreated(id=row.id, name=row.name, role=row.role, source=row.source, key=plain)
    forget_keys()  # a cached "unknown key" answer must not outlive its creation
    return out


@router.get("/keys", response_model=list[KeyOut])
def list_keys(request: Request, who: Caller = Depends(ADMIN)) -> list[KeyOut]:
    with request.app.state.hub.db.read_session() as s:
        return [KeyOut.model_validate(k, from_attributes=True) for k in keys.list_all(s)]


@router.delete("/keys/{key_id}", status_code=204)
def revoke_key(key_id: RowId, request: Request, who: Caller = Depends(ADMIN)) -> Response:
    with request.app.state.hub.db.session() as s:
        keys.revoke(s, key_id, actor=who.actor)
    forget_keys()
    return Response(status_code=204)


class ModalityIn(BaseModel):
    """A device as the clinic's IT person registers it (docs/interface.md)."""

    model_config = ConfigDict(extra="forbid")
    site: str | None = Field(None, max_length=64)
    modality: ModalityCode | None = None
    character_set: Literal["ISO_IR 192", "ISO_IR 100", "ASCII"] = "ISO_IR 192"
    host: str | None = Field(None, max_length=255)
    port: int | None = Field(None, ge=1, le=65535)
    tls: bool = Field(False, description="outgoing DICOM to this device uses TLS")
    description: str | None = Field(None, max_length=255)
    scope_station: bool = Field(
        False, description="empty ScheduledStationAETitle means this device's own AE title"
    )
    scope_modality: bool = Field(False, description="empty Modality means this device's modality")
    scope_site: bool = Field(False, description="only items of this device's site")
    date_window_days: int | None = Field(
        None, ge=0, le=365, description="empty SPS start date means today ± this many days"
    )


class ModalityOut(ModalityIn):
    model_config = ConfigDict(extra="ignore")
    ae_title: str
    last_query_at: UtcDateTime | None
    last_store_at: UtcDateTime | None
    last_report_at: UtcDateTime | None
    created_at: UtcDateTime
    updated_at: UtcDateTime


def _modality_out(row: Modality) -> ModalityOut:
    return ModalityOut.model_validate(row, from_attributes=True)


@router.put("/modalities/{ae_title}", response_model=ModalityOut)
def put_modality(
    ae_title: AeTitle,
    body: ModalityIn,
    request: Request,
    response: Response,
    who: Caller = Depends(ADMIN),
) -> ModalityOut:
    with request.app.state.hub.db.session() as s:
        row, created = modalities.put(s, ae_title, body.model_dump(), actor=who.actor)
        out = _modality_out(row)
    response.status_code = 201 if created else 200
    return out


@router.get("/modalities", response_model=Page[ModalityOut])
def list_modalities(request: Request, who: Caller = Depends(SEE_DEVICES)) -> Page[ModalityOut]:
    with request.app.state.hub.db.read_session() as s:
        return Page[ModalityOut](items=[_modality_out(m) for m in modalities.list_all(s)])


@router.get("/modalities/{ae_title}", response_model=ModalityOut)
def get_modality(
    ae_title: str, request: Request, who: Caller = Depends(SEE_DEVICES)
) -> ModalityOut:
    with request.app.state.hub.db.read_session() as s:
        row = modalities.get(s, ae_title)
        if row is None:
            raise NotFound(f"modality {ae_title!r} is not registered")
        return _modality_out(row)


@router.delete("/modalities/{ae_title}", status_code=204)
def delete_modality(ae_title: str, request: Request, who: Caller = Depends(ADMIN)) -> Response:
    with request.app.state.hub.db.session() as s:
        if not modalities.delete(s, ae_title, actor=who.actor):
            raise NotFound(f"modality {ae_title!r} is not registered")
    return Response(status_code=204)


class AuditOut(BaseModel):
    id: int
    at: UtcDateTime
    actor: str
    action: str
    target_type: str
    target_id: str
    detail: dict | None


@router.get("/audit", response_model=Page[AuditOut])
def list_audit(
    request: Request,
    action: str | None = None,
    target_id: str | None = None,
    limit: int = Query(50, ge=1, le=MAX_LIMIT),
    cursor: str | None = None,
    who: Caller = Depends(ADMIN),
) -> Page[AuditOut]:
    with request.app.state.hub.db.read_session() as s:
        rows, nxt = events.audit_trail(
            s, action=action, target_id=target_id, limit=limit, cursor=cursor
        )
    return Page[AuditOut](
        items=[AuditOut.model_validate(r, from_attributes=True) for r in rows],
        next_cursor=nxt,
    )
