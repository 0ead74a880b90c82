"""The HL7 message log over REST: search every inbound message, show one.

Re-running a message (``POST .../{id}/reprocess``) needs the HL7 adapter, so
that route is the adapter's own (``adapters/hl7/rest.py``).
"""

from __future__ import annotations

from datetime import date
from typing import Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel

from hub.api.auth import Caller, require
from hub.api.params import RowId, RowIdFilter
from hub.context import Hub
from hub.models import InboundMessage
from hub.schemas import Page, UtcDateTime
from hub.services import messages
from hub.services.paging import MAX_LIMIT

router = APIRouter(prefix="/api/v1/messages", tags=["hl7 messages"])

READ = require("integration")


class MessageOut(BaseModel):
    id: int
    received_at: UtcDateTime
    sender: str
    facility: str
    control_id: str
    type: str
    version: str
    charset: str
    source: str | None
    profile: str | None
    outcome: str
    error: str | None
    error_location: str | None
    error_code: int | None
    patient_id: str | None
    order_id: int | None
    duplicate_of: int | None
    reprocess_of: int | None
    raw: str
    ack: str


def to_out(row: InboundMessage) -> MessageOut:
    return MessageOut.model_validate(row, from_attributes=True)


@router.get("", response_model=Page[MessageOut])
def list_messages(
    request: Request,
    sender: str | None = Query(None, description="MSH-3 sending application"),
    type: str | None = Query(None, description="message type and trigger, e.g. ORM^O01"),
    outcome: Literal["AA", "AE", "AR"] | None = None,
    date: date | None = Query(None, description="day received (hub time zone), YYYY-MM-DD"),
    patient_id: str | None = None,
    source: str | None = None,
    control_id: str | None = Query(None, description="MSH-10"),
    order_id: RowIdFilter = None,
    limit: int = Query(50, ge=1, le=MAX_LIMIT),
    cursor: str | None = None,
    who: Caller = Depends(READ),
) -> Page[MessageOut]:
    hub: Hub = request.app.state.hub
    flt = messages.MessageFilter(
        sender=sender,
        type=type.upper() if type else None,
        outcome=outcome,
        date=date,
        patient_id=patient_id,
        source=source,
        control_id=control_id,
        order_id=order_id,
    )
    with hub.db.read_session() as s:
        rows, next_cursor = messages.find(s, flt, limit=limit, cursor=cursor, tz=hub.settings.tz)
        return Page[MessageOut](items=[to_out(r) for r in rows], next_cursor=next_cursor)


@router.get("/{message_id}", response_model=MessageOut)
def get_message(message_id: RowId, request: Request, who: Caller = Depends(READ)) -> MessageOut:
    hub: Hub = request.app.state.hub
    with hub.db.read_session() as s:
        return to_out(messages.get(s, message_id))
