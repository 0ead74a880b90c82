"""Who called a door without being registered: devices and HL7 senders seen.

A clinic's first run is open (anyone may call) so that the IT person can
register what actually turns up, from the console or
``GET /api/v1/modalities/unknown``; once something is registered, unknown
callers are refused and still listed here.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import UniqueConstraint
from sqlmodel import Field, SQLModel

from hub.models.core import _ts


class UnknownPeer(SQLModel, table=True):
    __tablename__ = "unknown_peers"
    __table_args__ = (
        UniqueConstraint("door", "name", "facility", "address", name="uq_unknown_peers"),
    )

    id: int | None = Field(default=None, primary_key=True)
    door: str = Field(max_length=8)  # "dicom" (calling AE title) or "hl7" (MSH-3/MSH-4)
    name: str = Field(max_length=64)
    facility: str = Field(default="", max_length=64)
    address: str = Field(max_length=64)
    first_seen: datetime = _ts(nullable=False)
    last_seen: datetime = _ts(nullable=False)
    count: int = 1
    # What the door did the last time: refused (closed mode) or let in (first run).
    refused: bool = False
