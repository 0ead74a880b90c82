"""Correcting a stored header's patient and order attributes from its order.

Devices truncate or transliterate names, drop species and breed, and images
keyed in by hand carry whatever the operator typed. Once a study belongs to
an order, its headers are corrected from the order (IHE Scheduled Workflow
practice); what the device sent stays on the study, so the audit trail
keeps it and a detach puts it back when a wrong attachment is undone.
This module decides, over plain values; ``hub.archive.coercion`` writes the
decisions into data sets.

On arrival only identity (PatientName, PatientID, AccessionNumber) is
overwritten and missing veterinary attributes are filled; a reconciliation
by a person overwrites everything the order knows.
"""

from __future__ import annotations

from typing import Any

from hub import names
from hub.models import Order

IDENTITY = ("PatientName", "PatientID", "AccessionNumber")
VETERINARY = (
    "PatientBirthDate",
    "PatientSex",
    "PatientSpeciesDescription",
    "PatientSpeciesCodeSequence",
    "PatientBreedDescription",
    "PatientSexNeutered",
    "ResponsiblePerson",
    "ResponsiblePersonRole",
    "ResponsibleOrganization",
)
KEYWORDS = IDENTITY + VETERINARY
_SEX = {"male": "M", "female": "F", "unknown": "O"}
Value = str | list[dict[str, str]] | None


def target(order: Order) -> dict[str, Value]:
    """The attribute values the order says the images should carry (None: unknown)."""
    owner = order.owner_last_name or order.owner_organization
    code: Value = None
    if order.species_code:
        code = [
            {
                "CodeValue": order.species_code,
                "CodingSchemeDesignator": order.species_scheme or "SCT",
                "CodeMeaning": order.species_meaning or order.species_description or "",
            }
        ]
    neutered = {True: "ALTERED", False: "UNALTERED"}.get(order.patient_neutered)  # type: ignore[arg-type]
    return {
        "PatientName": names.animal_patient_name(owner, order.patient_name),
        "PatientID": order.patient_id,
        "AccessionNumber": order.accession_number,
        "PatientBirthDate": order.patient_birth_date.strftime("%Y%m%d")
        if order.patient_birth_date
        else None,
        "PatientSex": _SEX.get(order.patient_sex or ""),
        "PatientSpeciesDescription": order.species_description or order.species_input,
        "PatientSpeciesCodeSequence": code,
        "PatientBreedDescription": order.breed,
        "PatientSexNeutered": neutered,
        "ResponsiblePerson": names.person_name(order.owner_last_name, order.owner_first_name)
        if order.owner_last_name
        else None,
        "ResponsiblePersonRole": "OWNER" if order.owner_last_name else None,
        "ResponsibleOrganization": order.owner_organization,
    }


def corrections(
    want: dict[str, Value], have: dict[str, Value], *, overwrite: bool
) -> dict[str, dict[str, Value]]:
    """``{keyword: {"from": old, "to": new}}`` for every attribute to change."""
    out: dict[str, dict[str, Value]] = {}
    for kw in KEYWORDS:
        new, old = want.get(kw), have.get(kw)
        if new is None or new == "" or new == []:
            continue
        if kw in IDENTITY or overwrite:
            if _norm(old) != _norm(new):
                out[kw] = {"from": old, "to": new}
        elif _empty(old):
            out[kw] = {"from": old, "to": new}
    return out


def _norm(value: Value) -> Any:
    if isinstance(value, str):
        return value.rstrip(" ^")
    return value


def _empty(value: Value) -> bool:
    return value is None or value == "" or value == []
