"""Received images and procedure steps: studies, series, instances, MPPS.

A study row carries its match to an order (``order_id`` + ``match_method``)
or, while it waits in the reconciliation queue, ``unmatched_reason`` and the
ranked ``candidates``. ``received`` keeps the patient attributes exactly as
the device sent them, so coercion and reconciliation can always be undone.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, ForeignKey, Index, Integer, text
from sqlmodel import Field, SQLModel

from hub.models.core import _ts


def _ref(target: str, *, nullable: bool = False) -> Any:
    return Field(
        default=None if nullable else ...,
        sa_column=Column(Integer, ForeignKey(target), nullable=nullable, index=True),
    )


class MatchMethod:
    ACCESSION = "accession"
    STUDY_UID = "study_uid"
    PATIENT_DAY = "patient_day"
    MANUAL = "manual"


class UnmatchedReason:
    NO_MATCH = "no_match"
    AMBIGUOUS = "ambiguous"
    CONFLICT = "conflict"


class Study(SQLModel, table=True):
    __tablename__ = "studies"
    __table_args__ = (
        Index("ix_studies_patient_id", "patient_id"),
        Index("ix_studies_accession_number", "accession_number"),
        # Date ranges, and the newest-first order of DICOMweb study searches.
        Index("ix_studies_study_date_time", "study_date", "study_time"),
        Index("ix_studies_modality", "modality"),
        # Case-insensitive name searches (migration 0016: byte order, "C" on PostgreSQL).
        Index("ix_studies_patient_name_folded", text("lower(patient_name)")),
    )

    id: int | None = Field(default=None, primary_key=True)
    study_instance_uid: str = Field(max_length=64, unique=True)
    # As received from the first instance (the queue and the API show these).
    patient_id: str = Field(default="", max_length=64)
    patient_name: str = Field(default="", max_length=200)
    accession_number: str = Field(default="", max_length=16)
    study_date: str = Field(default="", max_length=8)  # DICOM DA
    study_time: str = Field(default="", max_length=16)
    modality: str = Field(default="", max_length=16)
    study_description: str = Field(default="", max_length=64)
    calling_ae: str = Field(default="", max_length=16)
    received: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))

    order_id: int | None = _ref("orders.id", nullable=True)
    match_method: str | None = Field(default=None, max_length=16)
    unmatched_reason: str | None = Field(default=None, max_length=16, index=True)
    candidates: list[dict[str, Any]] | None = Field(default=None, sa_column=Column(JSON))
    # A person detached it: the automatic re-matching leaves it alone.
    held: bool = False

    created_at: datetime = _ts(nullable=False)
    last_received_at: datetime = _ts(nullable=False, index=True)


class Series(SQLModel, table=True):
    __tablename__ = "series"
    __table_args__ = (Index("ix_series_modality", "modality"),)

    id: int | None = Field(default=None, primary_key=True)
    study_id: int = _ref("studies.id")
    series_instance_uid: str = Field(max_length=64, unique=True)
    modality: str = Field(default="", max_length=16)
    series_number: str = Field(default="", max_length=12)
    series_description: str = Field(default="", max_length=64)
    created_at: datetime = _ts(nullable=False)


class Instance(SQLModel, table=True):
    __tablename__ = "instances"

    id: int | None = Field(default=None, primary_key=True)
    study_id: int = _ref("studies.id")
    series_id: int = _ref("series.id")
    sop_instance_uid: str = Field(max_length=64, unique=True)
    sop_class_uid: str = Field(max_length=64)
    transfer_syntax_uid: str = Field(max_length=64)
    path: str = Field(max_length=255)  # relative to settings.data_dir
    size: int = Field(sa_column=Column(BigInteger, nullable=False))  # files may pass 2 GB
    # SHA-256 of the bytes as received, to tell a faithful resend from a changed one.
    received_sha256: str = Field(max_length=64)
    coerced: bool = False
    calling_ae: str = Field(default="", max_length=16)
    received_at: datetime = _ts(nullable=False)
    # For DICOMweb search (QIDO-RS) answers; NULL on rows indexed before 0012.
    instance_number: int | None = None
    pixel_rows: int | None = None
    pixel_columns: int | None = None
    number_of_frames: int | None = None


class Mpps(SQLModel, table=True):
    """A Modality Performed Procedure Step as the device created and updated it."""

    __tablename__ = "mpps"

    id: int | None = Field(default=None, primary_key=True)
    sop_instance_uid: str = Field(max_length=64, unique=True)
    status: str = Field(max_length=16, index=True)  # IN PROGRESS / COMPLETED / DISCONTINUED
    attributes: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    order_id: int | None = _ref("orders.id", nullable=True)
    study_instance_uid: str | None = Field(default=None, max_length=64, index=True)
    calling_ae: str = Field(default="", max_length=16)
    created_at: datetime = _ts(nullable=False)
    updated_at: datetime = _ts(nullable=False)
