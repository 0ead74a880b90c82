"""What one worklist announcement makes the hub read from Provet (howto_ris.html).

The documented sequence: the worklist (modality, requesting user, supervising
vet, patient/client, target areas), its referral (remarks, consultation,
appointment), the consultation with ``?expose_patients``, then the patient and
its client. Lookups (modality, target areas, vet, department) come from the
per-clinic cache (``ProvetApi.lookup``). A relation that is absent is None;
one that is present but unreadable fails the job (retried, visible).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from adapters.provet.api import Missing, ProvetApi
from adapters.provet.config import field_names
from hub.services.deliveries.kinds import DeliveryError

WORKLIST = "diagnosticimaging_worklist"
REFERRAL = "diagnosticimaging_referral"


@dataclass(frozen=True)
class Fetched:
    """The current state of one worklist item and what it points at."""

    worklist_id: str
    worklist: dict[str, Any]
    patient: dict[str, Any]
    client: dict[str, Any] | None = None
    referral: dict[str, Any] | None = None
    consultation: dict[str, Any] | None = None
    appointment: dict[str, Any] | None = None
    modality: dict[str, Any] | None = None
    target_areas: list[dict[str, Any]] = field(default_factory=list)
    supervising_vet: dict[str, Any] | None = None
    department: dict[str, Any] | None = None


def fetch(api: ProvetApi, worklist_id: str, cfg: Mapping[str, Any]) -> Fetched | None:
    """The worklist item's state, or None when Provet no longer has it (404)."""
    names = field_names(cfg)
    size = int(cfg.get("page_size") or 25)
    try:
        worklist = _object(api.get(api.url(worklist_id, WORKLIST)), "worklist")
    except Missing:
        return None
    referral = _related(api, worklist.get(names["worklist_referral"]), REFERRAL)
    consultation = None
    appointment = None
    if referral is not None:
        ref = referral.get(names["referral_consultation"])
        if ref is not None and not isinstance(ref, dict):
            # The documented call embeds the patients (expose_patients).
            url = api.url(ref, "consultation" if _is_id(ref) else None)
            consultation = _object(api.get(url + "?expose_patients"), "consultation")
        elif isinstance(ref, dict):
            consultation = ref
        appointment = _related(api, referral.get(names["referral_appointment"]), "appointment")
    patient = _patient(api, worklist.get(names["worklist_patient"]), consultation)
    client_ref = worklist.get(names["worklist_client"]) or patient.get("client")
    if client_ref is None and consultation is not None:
        client_ref = consultation.get("client")
    client = _related(api, client_ref, "client")
    modality = _lookup(api, worklist.get(names["worklist_modality"]), "modality", size)
    areas_ref = worklist.get(names["worklist_target_areas"]) or []
    areas = [
        a
        for ref in (areas_ref if isinstance(areas_ref, list) else [areas_ref])
        if (a := _lookup(api, ref, "targetarea", size)) is not None
    ]
    vet_ref = worklist.get(names["worklist_supervising_vet"])
    if vet_ref is None and consultation is not None:
        vet_ref = consultation.get("supervising_veterinarian")
    # Users and departments: one at a time (an organisation may have hundreds).
    vet = _lookup(api, vet_ref, "user", size, whole_list=False)
    dept_ref = consultation.get("department") if consultation else None
    department = _lookup(api, dept_ref, "department", size, whole_list=False)
    return Fetched(
        worklist_id=worklist_id,
        worklist=worklist,
        patient=patient,
        client=client,
        referral=referral,
        consultation=consultation,
        appointment=appointment,
        modality=modality,
        target_areas=areas,
        supervising_vet=vet,
        department=department,
    )


def _patient(api: ProvetApi, ref: Any, consultation: dict[str, Any] | None) -> dict[str, Any]:
    """The worklist's patient; the consultation's exposed one saves a request."""
    exposed = [p for p in (consultation or {}).get("patients") or [] if isinstance(p, dict)]
    if isinstance(ref, dict):
        return ref
    if ref is not None:
        url = api.url(ref, "patient" if _is_id(ref) else None)
        for p in exposed:
            if p.get("url") == url:
                return p
        found = _related(api, url, "patient")
        if found is not None:
            return found
    if len(exposed) == 1:
        return exposed[0]
    raise DeliveryError("the worklist names no patient the hub could read")


def _related(api: ProvetApi, ref: Any, resource: str) -> dict[str, Any] | None:
    """A relation (URL, id or exposed object) read in full; None when absent or gone."""
    if ref is None or ref == "":
        return None
    if isinstance(ref, dict):
        return ref
    try:
        return _object(api.get(api.url(ref, resource if _is_id(ref) else None)), resource)
    except Missing:
        return None


def _lookup(
    api: ProvetApi, ref: Any, resource: str, size: int, whole_list: bool = True
) -> dict[str, Any] | None:
    if ref is None or ref == "":
        return None
    if isinstance(ref, dict):
        return ref
    try:
        found = api.lookup(ref, resource, size, whole_list=whole_list)
    except Missing:
        return None
    return found if isinstance(found, dict) else None


def _object(body: Any, what: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise DeliveryError(f"Provet's {what} answer is not a JSON object")
    return body


def _is_id(ref: Any) -> bool:
    return isinstance(ref, int) or (isinstance(ref, str) and ref.isdigit())
