"""Storage tables. Request/response shapes live in ``hub/schemas.py``, not here.

An order carries a snapshot of its patient and owner: the worklist item a
device sees is exactly the order row, so the hot C-FIND query touches one
table through indexed columns.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any, overload

from sqlalchemy import JSON, Column, DateTime, Index, UniqueConstraint
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(UTC)


@overload
def as_utc(value: datetime) -> datetime: ...
@overload
def as_utc(value: None) -> None: ...
def as_utc(value: datetime | None) -> datetime | None:
    """A stored timestamp as an aware UTC time: SQLite hands ``timezone=True``
    columns back naive, PostgreSQL aware; both hold UTC."""
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _ts(**kw: Any) -> Any:
    return Field(default_factory=utcnow, sa_column=Column(DateTime(timezone=True), **kw))


class OrderStatus:
    SCHEDULED = "scheduled"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    DISCONTINUED = "discontinued"

    ALL = (SCHEDULED, IN_PROGRESS, COMPLETED, CANCELLED, DISCONTINUED)
    OPEN = (SCHEDULED, IN_PROGRESS)  # the ones the worklist shows


class Order(SQLModel, table=True):
    __tablename__ = "orders"
    __table_args__ = (
        UniqueConstraint("source", "placer_order_number", name="uq_orders_placer"),
        Index("ix_orders_station_date", "station_ae_title", "sps_start_date"),
        Index("ix_orders_status_date", "status", "sps_start_date"),
        Index("ix_orders_modality_date", "modality", "sps_start_date"),
    )

    id: int | None = Field(default=None, primary_key=True)
    source: str = Field(max_length=64, index=True)
    placer_order_number: str = Field(max_length=64)
    accession_number: str = Field(max_length=16, unique=True)
    study_instance_uid: str = Field(max_length=64, unique=True)
    requested_procedure_id: str = Field(max_length=16)
    scheduled_step_id: str = Field(max_length=16)
    status: str = Field(default=OrderStatus.SCHEDULED, max_length=16, index=True)

    patient_id: str = Field(max_length=64, index=True)
    patient_name: str = Field(max_length=64)
    patient_birth_date: date | None = None
    patient_sex: str | None = Field(default=None, max_length=8)  # male/female/unknown
    patient_neutered: bool | None = None
    patient_weight_kg: float | None = None
    species_input: str | None = Field(default=None, max_length=64)  # as the sender wrote it
    species_description: str | None = Field(default=None, max_length=64)
    species_code: str | None = Field(default=None, max_length=16)
    species_scheme: str | None = Field(default=None, max_length=16)
    species_meaning: str | None = Field(default=None, max_length=64)
    breed: str | None = Field(default=None, max_length=64)
    # MedicalAlerts values joined by "\\" (the DICOM value delimiter), e.g. "caution: bites".
    patient_alerts: str | None = Field(default=None, max_length=520)
    patient_microchip: str | None = Field(default=None, max_length=64)
    # Further ids: [{"id", "issuer", "type"}], the OtherPatientIDsSequence items.
    patient_other_ids: list[dict[str, Any]] | None = Field(default=None, sa_column=Column(JSON))

    owner_id: str | None = Field(default=None, max_length=64)
    owner_last_name: str | None = Field(default=None, max_length=64)
    owner_first_name: str | None = Field(default=None, max_length=64)
    owner_organization: str | None = Field(default=None, max_length=64)
    # Upper-case, accent-free "OWNER^ANIMAL" for PN wildcard matching in SQL.
    name_key: str = Field(max_length=130, index=True)

    procedure_code: str | None = Field(default=None, max_length=64)
    procedure_description: str | None = Field(default=None, max_length=64)
    body_part: str | None = Field(default=None, max_length=16)
    modality: str | None = Field(default=None, max_length=16)
    station_ae_title: str | None = Field(default=None, max_length=16)
    site: str | None = Field(default=None, max_length=64, index=True)

    # Naive, in the hub's local time: what the clinic's schedule says.
    scheduled_start: datetime = Field(sa_column=Column(DateTime(timezone=False), nullable=False))
    sps_start_date: str = Field(max_length=8)  # DICOM DA, for range matching
    sps_start_time: str = Field(max_length=6)  # DICOM TM (HHMMSS)

    referring_vet: str | None = Field(default=None, max_length=64)
    reason: str | None = Field(default=None, max_length=64)  # ReasonForTheRequestedProcedure
    priority: str = Field(default="routine", max_length=8)
    notes: str | None = Field(default=None, max_length=1024)

    request_hash: str = Field(max_length=64)
    # Bumped on every change, so cached worklist encodings know they are stale.
    version: int = 1
    created_at: datetime = _ts(nullable=False)
    updated_at: datetime = _ts(nullable=False)


class ApiKey(SQLModel, table=True):
    __tablename__ = "api_keys"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=64)
    role: str = Field(max_length=16)
    key_hash: str = Field(max_length=64, unique=True)
    prefix: str = Field(max_length=12)  # shown in listings so a key can be recognised
    # A key scoped to a source places and changes only that source's orders.
    source: str | None = Field(default=None, max_length=64)
    created_at: datetime = _ts(nullable=False)
    revoked_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))


class Modality(SQLModel, table=True):
    """A registered device, keyed by its calling AE title."""

    __tablename__ = "modalities"

    ae_title: str = Field(primary_key=True, max_length=16)
    site: str | None = Field(default=None, max_length=64)
    modality: str | None = Field(default=None, max_length=16)
    character_set: str = Field(default="ISO_IR 192", max_length=32)
    host: str | None = Field(default=None, max_length=255)
    port: int | None = None
    # Outgoing DICOM to this device (C-ECHO, sends) uses TLS.
    tls: bool = False
    description: str | None = Field(default=None, max_length=255)
    # Scoping applied when this device's query leaves the key empty.
    scope_station: bool = False
    scope_modality: bool = False
    scope_site: bool = False
    date_window_days: int | None = None
    last_query_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    last_store_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    last_report_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    created_at: datetime = _ts(nullable=False)
    updated_at: datetime = _ts(nullable=False)


class AuditEvent(SQLModel, table=True):
    __tablename__ = "audit_events"

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = _ts(nullable=False, index=True)
    actor: str = Field(max_length=128)  # "key:3:pims" / "dicom:DX_ROOM1" / "hl7:VETPMS"
    action: str = Field(max_length=32, index=True)  # view, share, reconcile, export, ...
    target_type: str = Field(max_length=32)
    target_id: str = Field(max_length=128, index=True)
    detail: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))


class OutboxEvent(SQLModel, table=True):
    """What happened, written in the same transaction as the change itself.

    Deliveries to practice software are made from these rows, never from
    in-memory callbacks, so a crash between change and delivery loses nothing.
    """

    __tablename__ = "outbox_events"

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = _ts(nullable=False)
    kind: str = Field(max_length=48, index=True)  # order.scheduled, order.updated, ...
    order_id: int | None = Field(default=None, index=True)
    study_instance_uid: str | None = Field(default=None, max_length=64)
    payload: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    dispatched_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), index=True)
    )
