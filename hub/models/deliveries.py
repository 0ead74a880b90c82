"""Practice systems (sources) and the deliveries queued for them.

A delivery is one message to one destination (a webhook, an HL7 ORU, an HL7
ORM status, ...) caused by one outbox event. Its ``payload`` is a snapshot
of the order and study taken when the event was dispatched, so every retry
sends the same content under the same ``uuid`` (the receiver's idempotency
key). Its ``kind`` names a delivery kind registered at start-up
(hub/services/deliveries/kinds.py); the table does not constrain it, so a
new kind needs no migration.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, DateTime, Index, Text
from sqlmodel import Field, SQLModel

from hub.models.core import _ts


class DeliveryStatus:
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"

    ALL = (PENDING, DELIVERED, FAILED)


class Source(SQLModel, table=True):
    """A practice system: how to reach it and what it wants back."""

    __tablename__ = "sources"

    name: str = Field(primary_key=True, max_length=64)
    hl7_profile: str = Field(default="default", max_length=64)
    webhook_url: str | None = Field(default=None, max_length=1024)
    # Needed in clear to sign each body; never returned by the API.
    webhook_secret: str | None = Field(default=None, max_length=256)
    hl7_host: str | None = Field(default=None, max_length=255)
    hl7_port: int | None = None
    # Outgoing HL7 to this source runs over TLS.
    tls: bool = False
    # Who may send HL7 as this source: [{"application", "facility", "address"}],
    # each part optional (address: an IP or a network such as 10.0.0.0/24).
    hl7_senders: list[dict[str, str]] = Field(
        default_factory=list, sa_column=Column(JSON, nullable=False)
    )
    results: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    events: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    # How the hub talks to it (hub/services/source_kinds.py): "hl7" (orders by
    # HL7/REST, results by the kinds above) or a vendor adapter's kind.
    kind: str = Field(default="hl7", max_length=16)
    # That kind's settings without its secrets, which are kept sealed
    # (hub/services/sealed.py) and never returned; and what its adapter last
    # did (e.g. an upstream worklist's last poll), shown by GET.
    kind_settings: dict[str, Any] = Field(
        default_factory=dict, sa_column=Column(JSON, nullable=False)
    )
    kind_secrets: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    kind_state: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_at: datetime = _ts(nullable=False)
    updated_at: datetime = _ts(nullable=False)


class Delivery(SQLModel, table=True):
    __tablename__ = "deliveries"
    __table_args__ = (
        # The sender's claim: due pending rows, oldest first.
        Index("ix_deliveries_status_due", "status", "next_attempt_at"),
        # Per-order ordering: is an earlier one for the same destination still pending?
        Index("ix_deliveries_channel", "source", "kind", "order_id", "status"),
        # A late instance re-arms the DICOM forwards of its study (0014).
        Index("ix_deliveries_study", "study_instance_uid"),
    )

    id: int | None = Field(default=None, primary_key=True)
    uuid: str = Field(max_length=36, unique=True)  # X-Vethub-Delivery
    source: str = Field(max_length=64)
    kind: str = Field(max_length=16)  # a registered delivery kind (kinds.MAX_NAME)
    event_kind: str = Field(max_length=48)
    outbox_event_id: int = Field(index=True)
    order_id: int | None = Field(default=None, index=True)
    study_instance_uid: str | None = Field(default=None, max_length=64)
    status: str = Field(default=DeliveryStatus.PENDING, max_length=16)
    attempts: int = 0
    # While an attempt is in flight this is the end of the sender's lease.
    next_attempt_at: datetime = _ts(nullable=False)
    last_error: str | None = Field(default=None, max_length=1024)
    payload: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_at: datetime = _ts(nullable=False)
    delivered_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
