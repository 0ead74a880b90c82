"""Routing rules (admin) and sending a study on by hand (tech, vet, admin)."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from hub.api.auth import Caller, require
from hub.models import Route, as_utc
from hub.schemas import AeTitle, UtcDateTime
from hub.services import routes

router = APIRouter(prefix="/api/v1", tags=["routes"])
ADMIN = require()
SEND = require("tech", "vet")


class RouteIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    destination: AeTitle = Field(description="a registered node's AE title (host and port set)")
    when: Literal["received", "completed"] = "received"
    filter: dict[str, Any] = Field(
        default_factory=dict,
        description="modality [...], site, source, station_ae_title, procedure_code [...]; "
        "every key optional, an empty filter matches every study",
    )
    enabled: bool = True


class RouteOut(BaseModel):
    name: str
    destination: str
    when: str
    filter: dict[str, Any]
    enabled: bool
    created_at: UtcDateTime
    updated_at: UtcDateTime


class SendIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    destination: AeTitle


class SendOut(BaseModel):
    id: int
    delivery_id: str
    kind: str
    destination: str
    study_instance_uid: str


def _out(r: Route) -> RouteOut:
    return RouteOut(
        name=r.name,
        destination=r.destination,
        when=r.when,
        filter=r.filter,
        enabled=r.enabled,
        created_at=as_utc(r.created_at) or r.created_at,
        updated_at=as_utc(r.updated_at) or r.updated_at,
    )


@router.get("/routes", response_model=list[RouteOut])
def list_routes(request: Request, who: Caller = Depends(ADMIN)) -> list[RouteOut]:
    with request.app.state.hub.db.read_session() as s:
        return [_out(r) for r in routes.list_all(s)]


@router.put("/routes/{name}", response_model=RouteOut)
def put_route(
    name: str, body: RouteIn, request: Request, response: Response, who: Caller = Depends(ADMIN)
) -> RouteOut:
    with request.app.state.hub.db.session() as s:
        row, created = routes.put(
            s,
            name,
            destination=body.destination,
            when=body.when,
            flt=body.filter,
            enabled=body.enabled,
            actor=who.actor,
        )
        response.status_code = 201 if created else 200
        return _out(row)


@router.delete("/routes/{name}", status_code=204)
def delete_route(name: str, request: Request, who: Caller = Depends(ADMIN)) -> Response:
    with request.app.state.hub.db.session() as s:
        routes.delete(s, name, actor=who.actor)
    return Response(status_code=204)


@router.post("/studies/{study_instance_uid}/send", status_code=201, response_model=SendOut)
def send_study(
    study_instance_uid: str, body: SendIn, request: Request, who: Caller = Depends(SEND)
) -> SendOut:
    """One durable ``dicom-forward`` delivery of the whole study (audited ``send``)."""
    with request.app.state.hub.db.session() as s:
        row = routes.send(s, study_instance_uid, body.destination, actor=who.actor)
        assert row.id is not None  # flushed
        return SendOut(
            id=row.id,
            delivery_id=row.uuid,
            kind=row.kind,
            destination=row.source,
            study_instance_uid=study_instance_uid,
        )
