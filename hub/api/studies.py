"""REST studies: the list, one study, reconcile and detach (docs/interface.md "Studies")."""

from __future__ import annotations

from datetime import date
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import Field
from sqlalchemy.orm import Session

from hub.api.auth import Caller, require
from hub.archive import rewrite
from hub.context import Hub
from hub.models import Order, Study, as_utc
from hub.schemas import Page, ReconcileIn, StudyOut
from hub.services import candidates, orders, paging, studies

router = APIRouter(prefix="/api/v1/studies", tags=["studies"])

READ = require("integration", "vet", "tech")
RECONCILE = require("tech")


class ReconciledOut(StudyOut):
    """The study after reconcile/detach, and the files whose headers could not be
    corrected (empty when all were; the failure is in the audit log too)."""

    files_not_corrected: list[str] = Field(default_factory=list)


def study_out(
    study: Study,
    counts: tuple[int, int],
    public_url: str,
    orders_by_id: dict[int, Order],
    ranked: list[dict[str, Any]],
) -> dict[str, Any]:
    received = study.received or {}
    shown = []
    for c in ranked:
        o = orders_by_id.get(c["order_id"])
        entry = dict(c)
        if o is not None:
            entry.update(
                accession_number=o.accession_number,
                patient_id=o.patient_id,
                patient_name=o.patient_name,
                owner=o.owner_last_name or o.owner_organization,
                modality=o.modality,
                scheduled_start=o.scheduled_start.isoformat(),
                status=o.status,
            )
        shown.append(entry)
    return {
        "study_instance_uid": study.study_instance_uid,
        "series_count": counts[0],
        "instance_count": counts[1],
        "order_id": study.order_id,
        "match_method": study.match_method,
        "unmatched_reason": study.unmatched_reason,
        "patient_id": study.patient_id,
        "patient_name": study.patient_name,
        "patient_birth_date": received.get("PatientBirthDate") or None,
        "patient_sex": received.get("PatientSex") or None,
        "species": received.get("PatientSpeciesDescription") or None,
        "breed": received.get("PatientBreedDescription") or None,
        "responsible_person": received.get("ResponsiblePerson") or None,
        "responsible_organization": received.get("ResponsibleOrganization") or None,
        "accession_number": study.accession_number,
        "study_date": study.study_date or None,
        "study_time": study.study_time or None,
        "modality": study.modality or None,
        "study_description": study.study_description or None,
        "calling_ae_title": study.calling_ae or None,
        "received": received,
        "candidates": shown,
        "viewer_url": f"{public_url.rstrip('/')}/viewer/studies/{study.study_instance_uid}",
        "created_at": as_utc(study.created_at),
        "last_received_at": as_utc(study.last_received_at),
    }


def _render(request: Request, s: Session, rows: list[Study]) -> list[dict[str, Any]]:
    """Studies as the API shows them; a waiting study's candidates are ranked now."""
    hub: Hub = request.app.state.hub
    by_study = studies.counts(s, [r.id for r in rows if r.id is not None])
    ranked = [candidates.current(s, r) for r in rows]
    ids = {c["order_id"] for cands in ranked for c in cands}
    found = orders.by_ids(s, ids)
    return [
        study_out(r, by_study.get(r.id or 0, (0, 0)), hub.settings.public_url, found, cands)
        for r, cands in zip(rows, ranked, strict=True)
    ]


@router.get("", response_model=Page[StudyOut])
def list_studies(
    request: Request,
    matched: bool | None = None,
    patient_id: str | None = None,
    accession_number: str | None = None,
    date: date | None = Query(None, description="study date, YYYY-MM-DD"),
    modality: str | None = None,
    limit: int = Query(50, ge=1, le=paging.MAX_LIMIT),
    cursor: str | None = None,
    who: Caller = Depends(READ),
) -> dict[str, Any]:
    flt = studies.StudyFilter(
        matched=matched,
        patient_id=patient_id,
        accession_number=accession_number,
        date=date,
        modality=modality,
    )
    with request.app.state.hub.db.read_session() as s:
        rows, nxt = studies.find(s, flt, limit=limit, cursor=cursor)
        return {"items": _render(request, s, rows), "next_cursor": nxt}


@router.get("/{study_instance_uid}", response_model=StudyOut)
def get_study(study_instance_uid: str, request: Request, who: Caller = Depends(READ)) -> dict:
    with request.app.state.hub.db.read_session() as s:
        return _render(request, s, [studies.get(s, study_instance_uid)])[0]


@router.post("/{study_instance_uid}/reconcile", response_model=ReconciledOut)
def reconcile_study(
    study_instance_uid: str, body: ReconcileIn, request: Request, who: Caller = Depends(RECONCILE)
) -> dict:
    hub: Hub = request.app.state.hub
    not_corrected = rewrite.reconcile_study(hub, study_instance_uid, body.order_id, who.actor)
    with hub.db.read_session() as s:
        out = _render(request, s, [studies.get(s, study_instance_uid)])[0]
    return {**out, "files_not_corrected": not_corrected}


@router.post("/{study_instance_uid}/detach", response_model=ReconciledOut)
def detach_study(
    study_instance_uid: str, request: Request, who: Caller = Depends(RECONCILE)
) -> dict:
    hub: Hub = request.app.state.hub
    not_corrected = rewrite.detach_study(hub, study_instance_uid, who.actor)
    with hub.db.read_session() as s:
        out = _render(request, s, [studies.get(s, study_instance_uid)])[0]
    return {**out, "files_not_corrected": not_corrected}
