"""The HL7 message log: keep every inbound message, find resends, search for the integrator."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from hub.errors import NotFound
from hub.models import InboundMessage
from hub.services.orders import MAX_LIMIT, decode_cursor, encode_cursor


@dataclass(frozen=True)
class MessageFilter:
    sender: str | None = None
    type: str | None = None
    outcome: str | None = None
    date: date | None = None  # received on this day, in the hub's time zone
    patient_id: str | None = None
    source: str | None = None
    control_id: str | None = None
    order_id: int | None = None


def record(session: Session, row: InboundMessage) -> InboundMessage:
    session.add(row)
    session.flush()
    return row


def accepted_before(
    session: Session, sender: str, facility: str, control_id: str
) -> InboundMessage | None:
    """The first accepted (AA) message with this sender, facility and MSH-10, if any.

    Rejected messages changed nothing, so a resend of one is processed again.
    """
    if not control_id:
        return None
    stmt = (
        select(InboundMessage)
        .where(
            InboundMessage.sender == sender,
            InboundMessage.facility == facility,
            InboundMessage.control_id == control_id,
            InboundMessage.outcome == "AA",
            InboundMessage.duplicate_of.is_(None),  # type: ignore[union-attr]
        )
        .order_by(InboundMessage.id)
        .limit(1)
    )
    return session.scalars(stmt).first()


def get(session: Session, message_id: int) -> InboundMessage:
    row = session.get(InboundMessage, message_id)
    if row is None:
        raise NotFound(f"message {message_id} does not exist")
    return row


def find(
    session: Session,
    flt: MessageFilter,
    *,
    limit: int = 50,
    cursor: str | None = None,
    tz: ZoneInfo | None = None,
) -> tuple[list[InboundMessage], str | None]:
    """Newest first; the cursor continues below the last id seen."""
    stmt = select(InboundMessage).order_by(InboundMessage.id.desc())  # type: ignore[union-attr]
    for column in ("sender", "type", "outcome", "patient_id", "source", "control_id", "order_id"):
        value = getattr(flt, column)
        if value is not None:
            stmt = stmt.where(getattr(InboundMessage, column) == value)
    if flt.date is not None:
        start = datetime.combine(flt.date, time.min).replace(tzinfo=tz).astimezone()
        stmt = stmt.where(
            InboundMessage.received_at >= start,
            InboundMessage.received_at < start + timedelta(days=1),
        )
    if cursor:
        stmt = stmt.where(InboundMessage.id < decode_cursor(cursor))
    limit = max(1, min(limit, MAX_LIMIT))
    rows = list(session.scalars(stmt.limit(limit + 1)))
    next_cursor = encode_cursor(rows[limit - 1].id) if len(rows) > limit else None  # type: ignore[arg-type]
    return rows[:limit], next_cursor
