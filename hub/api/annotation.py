"""Saved measurements and notes of a study (``GET/PUT /api/v1/studies/{uid}/annotations``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from hub.api.auth import Caller, require
from hub.models import Annotation, as_utc
from hub.schemas import UtcDateTime
from hub.services import annotation, events, studies

router = APIRouter(prefix="/api/v1/studies", tags=["annotations"])
READ = require("vet", "tech")
WRITE = require("vet", "tech")


class AnnotationsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    annotations: list[dict[str, Any]] = Field(
        description="each with a `type` (length, angle, text, arrow, ellipse, rectangle, probe), "
        "the image it is on (`sop_instance_uid`, `frame`) and its points in image pixels"
    )
    base_version: int | None = Field(
        None, ge=0, description="the version this save started from; 409 if it is no longer current"
    )


class AnnotationsOut(BaseModel):
    study_instance_uid: str
    annotations: list[dict[str, Any]]
    version: int
    updated_by: str | None
    updated_at: UtcDateTime | None


def _out(study_instance_uid: str, row: Annotation | None) -> AnnotationsOut:
    if row is None:
        return AnnotationsOut(
            study_instance_uid=study_instance_uid,
            annotations=[],
            version=0,
            updated_by=None,
            updated_at=None,
        )
    return AnnotationsOut(
        study_instance_uid=study_instance_uid,
        annotations=row.document,
        version=row.version,
        updated_by=row.updated_by,
        updated_at=as_utc(row.updated_at),
    )


@router.get("/{study_instance_uid}/annotations", response_model=AnnotationsOut)
def get_annotations(
    study_instance_uid: str, request: Request, who: Caller = Depends(READ)
) -> AnnotationsOut:
    with request.app.state.hub.db.read_session() as s:
        studies.get(s, study_instance_uid)
        return _out(study_instance_uid, annotation.of_study(s, study_instance_uid))


@router.put("/{study_instance_uid}/annotations", response_model=AnnotationsOut)
def put_annotations(
    study_instance_uid: str, body: AnnotationsIn, request: Request, who: Caller = Depends(WRITE)
) -> AnnotationsOut:
    with request.app.state.hub.db.session() as s:
        studies.get(s, study_instance_uid)
        row = annotation.save(s, study_instance_uid, body.annotations, who.actor, body.base_version)
        events.audit(
            s,
            who.actor,
            "annotate",
            "study",
            study_instance_uid,
            {"version": row.version, "count": len(body.annotations)},
        )
        return _out(study_instance_uid, row)
