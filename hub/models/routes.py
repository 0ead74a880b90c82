"""Routing rules, and what each DICOM forward has already handed over.

A route names a registered node (``modalities.ae_title``) and a filter over
the study and its order; a matching study becomes a ``dicom-forward``
delivery. ``DeliveryInstance`` keeps, per delivery, each instance the
destination acknowledged (or refused), so a retry or a restart sends only
what it has not yet accepted.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, Index
from sqlmodel import Field, SQLModel

from hub.models.core import _ts


class RouteWhen:
    RECEIVED = "received"
    COMPLETED = "completed"

    ALL = (RECEIVED, COMPLETED)


class Route(SQLModel, table=True):
    __tablename__ = "routes"

    name: str = Field(primary_key=True, max_length=64)
    destination: str = Field(max_length=16)  # a registered node's AE title
    when: str = Field(default=RouteWhen.RECEIVED, max_length=16)
    # {"modality": [...], "site": ..., "source": ..., "station_ae_title": ...,
    #  "procedure_code": [...]}; a missing key matches everything.
    filter: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    enabled: bool = True
    created_at: datetime = _ts(nullable=False)
    updated_at: datetime = _ts(nullable=False)


class DeliveryInstance(SQLModel, table=True):
    """One instance of a forwarded study, as the destination last answered it."""

    __tablename__ = "delivery_instances"
    __table_args__ = (
        Index("ux_delivery_instances", "delivery_id", "sop_instance_uid", unique=True),
    )

    id: int | None = Field(default=None, primary_key=True)
    delivery_id: int = Field(index=False)
    sop_instance_uid: str = Field(max_length=64)
    # "sent" (acknowledged: never sent again by this delivery) or "failed".
    status: str = Field(max_length=8)
    error: str | None = Field(default=None, max_length=255)
    at: datetime = _ts(nullable=False)
