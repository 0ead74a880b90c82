"""Every inbound HL7 message, kept with what the hub made of it and the ACK it sent.

Written in the same transaction as the change the message caused, so the
log never claims an order that was rolled back, and a resent message (same
sender, facility and MSH-10) is recognised and answered from here.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, DateTime, Index, Text
from sqlmodel import Field, SQLModel

from hub.models.core import utcnow


class InboundMessage(SQLModel, table=True):
    __tablename__ = "hl7_messages"
    __table_args__ = (Index("ix_hl7_messages_control_sender", "control_id", "sender", "facility"),)

    id: int | None = Field(default=None, primary_key=True)
    received_at: datetime = Field(
        default_factory=utcnow,
        sa_column=Column(DateTime(timezone=True), nullable=False, index=True),
    )
    sender: str = Field(default="", max_length=64, index=True)  # MSH-3.1
    facility: str = Field(default="", max_length=64)  # MSH-4.1
    control_id: str = Field(default="", max_length=64)  # MSH-10
    type: str = Field(default="", max_length=16, index=True)  # ORM^O01
    version: str = Field(default="", max_length=8)  # MSH-12
    charset: str = Field(default="", max_length=32)  # MSH-18 as sent
    source: str | None = Field(default=None, max_length=64)
    profile: str | None = Field(default=None, max_length=64)
    outcome: str = Field(max_length=2, index=True)  # AA / AE / AR
    error: str | None = Field(default=None, max_length=1024)
    error_location: str | None = Field(default=None, max_length=64)
    error_code: int | None = None  # HL7 table 0357
    patient_id: str | None = Field(default=None, max_length=64, index=True)
    order_id: int | None = Field(default=None, index=True)
    raw: str = Field(sa_column=Column(Text, nullable=False))
    ack: str = Field(sa_column=Column(Text, nullable=False))
    duplicate_of: int | None = None  # an earlier accepted message with the same MSH-10
    reprocess_of: int | None = None  # the message this row re-ran
