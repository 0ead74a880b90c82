"""Request and response shapes of the REST API (docs/interface.md "Orders").

These are the contract; ``hub/services/orders.py`` converts them to and from
the ``Order`` table. Limits follow the DICOM VRs the values end up in, so a
value accepted here always fits the worklist item.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    StringConstraints,
)
from pydantic.config import JsonDict

from hub.mappings import MODALITIES


def _utc(value: datetime) -> str:
    """ISO 8601 in UTC with an explicit offset. SQLite hands timestamps back naive
    (they hold UTC), PostgreSQL aware: both come out alike."""
    aware = value if value.tzinfo else value.replace(tzinfo=UTC)
    return aware.astimezone(UTC).isoformat()


# Every instant the API answers with: ``2026-11-29T11:20:11.075002+00:00`` (the
# fraction only when there is one). Wall-clock times of the clinic, such as an
# order's ``scheduled_start``, stay plain ``datetime`` (docs/interface.md).
UtcDateTime = Annotated[datetime, PlainSerializer(_utc, return_type=str, when_used="json")]

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_PN_FORBIDDEN = re.compile(r"[\^=\\]")


def _no_control(v: str) -> str:
    if _CONTROL.search(v):
        raise ValueError("must not contain control characters")
    return v


def _no_nul(v: str) -> str:
    """Free text may hold line breaks, never NUL (no database or DICOM text can)."""
    if "\x00" in v:
        raise ValueError("must not contain NUL characters")
    return v


def _no_pn_delimiters(v: str) -> str:
    if _PN_FORBIDDEN.search(v):
        raise ValueError("must not contain '^', '=' or '\\' (DICOM name delimiters)")
    return v


def _no_backslash(v: str) -> str:
    if "\\" in v:
        raise ValueError("must not contain '\\' (the DICOM value delimiter)")
    return v


# Free text and identifiers (DICOM LO, 64 characters) and names (a PN component).
Text64 = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=64),
    AfterValidator(_no_control),
    AfterValidator(_no_backslash),
]
Name64 = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=64),
    AfterValidator(_no_control),
    AfterValidator(_no_pn_delimiters),
]
Sh16 = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=16),
    AfterValidator(_no_control),
    AfterValidator(_no_backslash),
]
AeTitle = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=16, pattern=r"^[ -~]+$"),
    AfterValidator(_no_backslash),
]


def _modality(v: str) -> str:
    v = v.strip().upper()
    if v not in MODALITIES:
        raise ValueError(f"unknown DICOM modality {v!r} (e.g. DX, CR, US, CT, MR, IO)")
    return v


ModalityCode = Annotated[str, AfterValidator(_modality)]

_UID = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")


def _dicom_uid(v: str) -> str:
    """PS3.5 9.1: digits in dot-separated components, no leading zeros, at most 64 characters."""
    if len(v) > 64:
        raise ValueError("is not a DICOM UID: longer than 64 characters")
    if not _UID.fullmatch(v):
        raise ValueError(
            "is not a DICOM UID: only digits and dots, components without leading zeros"
        )
    return v


DicomUid = Annotated[str, StringConstraints(strip_whitespace=True), AfterValidator(_dicom_uid)]
Sex = Literal["male", "female", "unknown"]
Priority = Literal["routine", "stat"]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


PatientIdType = Literal["TEXT", "RFID", "BARCODE"]  # TypeOfPatientID (0010,0022)


class OtherIdIn(_In):
    """Another id of the animal (a tattoo, a registry or insurance number)."""

    id: Text64
    issuer: Text64 | None = None  # IssuerOfPatientID: who gave the number
    type: PatientIdType = "TEXT"


def _one_or_many(v: Any) -> Any:
    """``alerts`` may be one text or a list of them."""
    return [v] if isinstance(v, str) else v


class PatientIn(_In):
    id: Text64
    name: Name64
    species: Text64 | None = None
    breed: Text64 | None = None
    sex: Sex | None = None
    neutered: bool | None = None
    birth_date: date | None = None
    weight_kg: float | None = Field(default=None, gt=0, le=20000)
    # MedicalAlerts (0010,2000), one value each: "caution: bites".
    alerts: Annotated[list[Text64], BeforeValidator(_one_or_many), Field(max_length=8)] | None = (
        None
    )
    # The transponder number (ISO 11784: 15 digits, older chips 9-10 characters).
    microchip: Text64 | None = None
    other_ids: list[OtherIdIn] | None = Field(default=None, max_length=8)


class OwnerIn(_In):
    id: Text64 | None = None
    last_name: Name64 | None = None
    first_name: Name64 | None = None
    organization: Name64 | None = None


class ProcedureIn(_In):
    code: Text64 | None = None
    description: Text64 | None = None


# What /docs shows as a ready-to-send order: a thorax X-ray for Rex.
ORDER_EXAMPLE: JsonDict = {
    "source": "pims-main",
    "placer_order_number": "ORD-1001",
    "patient": {
        "id": "P-555",
        "name": "Rex",
        "species": "dog",
        "breed": "Labrador Retriever",
        "sex": "male",
        "neutered": True,
        "birth_date": "2019-04-02",
        "weight_kg": 31.5,
    },
    "owner": {"id": "C-77", "last_name": "Smith", "first_name": "Anna"},
    "procedure": {"code": "XR-THORAX"},
    "station_ae_title": "DX_ROOM1",
    "scheduled_start": "2026-11-27T14:30:00",
    "referring_vet": "Jane Doe",
}


class OrderIn(_In):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [ORDER_EXAMPLE]})

    source: Text64 = "default"
    placer_order_number: Text64
    accession_number: Sh16 | None = None
    # The sender's own identifiers (an RIS's IPC-3/IPC-2/IPC-4); generated when absent.
    study_instance_uid: DicomUid | None = None
    requested_procedure_id: Sh16 | None = None
    scheduled_step_id: Sh16 | None = None
    patient: PatientIn
    owner: OwnerIn = Field(default_factory=OwnerIn)
    procedure: ProcedureIn = Field(default_factory=ProcedureIn)
    modality: ModalityCode | None = None
    station_ae_title: AeTitle | None = None
    scheduled_start: datetime | None = None
    referring_vet: Name64 | None = None
    # ReasonForTheRequestedProcedure (0040,1002): "lameness left fore".
    reason: Text64 | None = None
    site: Text64 | None = None
    priority: Priority = "routine"
    notes: Annotated[str, StringConstraints(max_length=1024), AfterValidator(_no_nul)] | None = None


class OtherIdOut(BaseModel):
    id: str
    issuer: str | None
    type: PatientIdType


class PatientOut(BaseModel):
    id: str
    name: str
    species: str | None
    species_code: str | None
    breed: str | None
    sex: Sex | None
    neutered: bool | None
    birth_date: date | None
    weight_kg: float | None
    alerts: list[str] = Field(default_factory=list)
    microchip: str | None = None
    other_ids: list[OtherIdOut] = Field(default_factory=list)


class OwnerOut(BaseModel):
    id: str | None
    last_name: str | None
    first_name: str | None
    organization: str | None


class ProcedureOut(BaseModel):
    code: str | None
    description: str | None


OrderStatusName = Literal["scheduled", "in_progress", "completed", "cancelled", "discontinued"]


class OrderOut(BaseModel):
    id: int
    source: str
    placer_order_number: str
    accession_number: str
    study_instance_uid: str
    status: OrderStatusName
    patient: PatientOut
    owner: OwnerOut
    procedure: ProcedureOut
    modality: str | None
    station_ae_title: str | None
    scheduled_start: datetime
    referring_vet: str | None
    reason: str | None = None
    site: str | None
    priority: Priority
    notes: str | None
    requested_procedure_id: str
    scheduled_step_id: str
    created_at: UtcDateTime
    updated_at: UtcDateTime


class FieldWarning(BaseModel):
    field: str
    message: str


class OrderPlacedOut(OrderOut):
    """The answer to placing an order: the order, and what in it looks wrong."""

    warnings: list[FieldWarning] = Field(
        default_factory=list,
        description="Accepted, but probably a mistake: unknown species or procedure code, "
        "implausible weight for the species. Empty when nothing looks wrong.",
    )


T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = None


# -- studies (docs/interface.md "Studies and reconciliation") ----------------------


class ReconcileIn(_In):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"order_id": 42}]})

    order_id: int = Field(gt=0, le=2**63 - 1, description="the order the study belongs to")


class StudyCandidateOut(BaseModel):
    """An order a person may attach an unmatched study to, with why it was offered."""

    order_id: int
    score: int
    reasons: list[str]
    accession_number: str | None = None
    patient_id: str | None = None
    patient_name: str | None = None
    owner: str | None = None
    modality: str | None = None
    scheduled_start: datetime | None = None
    status: str | None = None


class StudyOut(BaseModel):
    study_instance_uid: str
    series_count: int
    instance_count: int
    order_id: int | None
    match_method: Literal["accession", "study_uid", "patient_day", "manual"] | None
    unmatched_reason: Literal["no_match", "ambiguous", "conflict"] | None
    # The patient attributes as the device sent them (headers may since be corrected).
    patient_id: str
    patient_name: str
    patient_birth_date: str | None
    patient_sex: str | None
    species: str | None
    breed: str | None
    responsible_person: str | None
    responsible_organization: str | None
    accession_number: str
    study_date: str | None
    study_time: str | None
    modality: str | None
    study_description: str | None
    calling_ae_title: str | None
    received: dict[str, Any]
    candidates: list[StudyCandidateOut]
    viewer_url: str
    created_at: UtcDateTime | None
    last_received_at: UtcDateTime | None
