"""The HL7 message log: keep every inbound message, find resends, search for the integrator."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import date
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Table, insert, select
from sqlalchemy.orm import Session
from sqlmodel import SQLModel, col

from hub.errors import NotFound
from hub.models import InboundMessage
from hub.services import paging
from hub.services.clock import day_bounds


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


Key = tuple[str, str, str]  # sender (MSH-3), facility (MSH-4), control id (MSH-10)
_TABLE: Table = SQLModel.metadata.tables["hl7_messages"]  # InboundMessage's table
_INSERT = insert(_TABLE).returning(_TABLE.c.id)  # built once: compiled once, cached


@dataclass(frozen=True)
class Accepted:
    """What a resend of an accepted message is answered with."""

    id: int
    ack: str
    patient_id: str | None
    order_id: int | None
    digest: str  # ``resend_digest`` of its raw text


def resend_digest(raw: str) -> str:
    """SHA-256 of the message with MSH-7 blanked: what must match for a resend.

    Practice systems reset their MSH-10 counters, so the same control id can
    come back with a different order; only the same bytes (a resend may carry
    a fresh message time) are the same message.
    """
    start = raw.find("MSH")
    if 0 <= start <= 8 and len(raw) > start + 3:
        sep = raw[start + 3]
        ends = [k for k in (raw.find("\r", start), raw.find("\n", start)) if k >= 0]
        end = min(ends) if ends else len(raw)
        fields = raw[start:end].split(sep)
        if len(fields) > 6:  # fields[6] is MSH-7 (fields[1] is MSH-2)
            fields[6] = ""
            raw = raw[:start] + sep.join(fields) + raw[end:]
    return hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()


def record(session: Session, values: dict[str, Any]) -> int:
    """Insert one log row (a plain INSERT: this runs for every message); returns its id.

    Runs on the session's connection, in its transaction, without flushing
    the session's pending objects first (the row refers to none of them).
    """
    return int(session.connection().execute(_INSERT, values).scalar_one())


def accepted_among(session: Session, keys: set[Key]) -> dict[Key, list[Accepted]]:
    """The accepted (AA) messages for each (sender, facility, MSH-10), oldest first, in one query.

    Rejected messages changed nothing, so a resend of one is processed again.
    The raw text comes along (only for rows whose MSH-10 matches, which is
    rare) so that a reused MSH-10 with another body is told from a resend.
    """
    ids = {k[2] for k in keys if k[2]}
    if not ids:
        return {}
    t = _TABLE.c
    stmt = (
        select(t.id, t.sender, t.facility, t.control_id, t.ack, t.patient_id, t.order_id, t.raw)
        .where(t.control_id.in_(ids), t.outcome == "AA", t.duplicate_of.is_(None))
        .order_by(t.id)
    )
    found: dict[Key, list[Accepted]] = {}
    for row in session.execute(stmt):
        key = (row.sender, row.facility, row.control_id)
        if key in keys:
            found.setdefault(key, []).append(
                Accepted(row.id, row.ack, row.patient_id, row.order_id, resend_digest(row.raw))
            )
    return found


def resend_of(accepted: list[Accepted], digest: str) -> Accepted | None:
    """The first accepted message this one repeats (same digest), if any."""
    return next((a for a in accepted if a.digest == digest), None)


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
    stmt = select(InboundMessage)
    for column in ("sender", "type", "outcome", "patient_id", "source", "control_id", "order_id"):
        value = getattr(flt, column)
        if value is not None:
            stmt = stmt.where(col(getattr(InboundMessage, column)) == value)
    if flt.date is not None:
        start, end = day_bounds(flt.date, tz)  # UTC: SQLite compares wall times
        received = col(InboundMessage.received_at)
        stmt = stmt.where(received >= start, received < end)
    return paging.page(
        session, stmt, col(InboundMessage.id), limit=limit, cursor=cursor, newest_first=True
    )
