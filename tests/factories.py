"""Request bodies and objects several test modules build: one copy, imported from here."""

from __future__ import annotations

import copy

REX = {
    "source": "pims-main",
    "placer_order_number": "ORD-1001",
    "accession_number": "A1001",
    "patient": {
        "id": "P-555",
        "name": "Rex",
        "species": "canine",
        "breed": "Labrador Retriever",
        "sex": "male",
        "neutered": True,
        "birth_date": "2019-04-02",
        "weight_kg": 31.5,
    },
    "owner": {"id": "C-77", "last_name": "Smith", "first_name": "Anna", "organization": None},
    "procedure": {"code": "XR-THORAX", "description": "Thorax, 2 views"},
    "modality": "DX",
    "station_ae_title": "DX_ROOM1",
    "scheduled_start": "2026-11-27T14:30:00",
    "referring_vet": "Jane Doe",
    "site": "main",
    "priority": "routine",
    "notes": "Coughing 2 weeks",
}


def rex(**changes: object) -> dict:
    """A copy of REX with top-level fields replaced."""
    body = copy.deepcopy(REX)
    body.update(changes)
    return body
