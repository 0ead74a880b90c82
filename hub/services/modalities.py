"""Registered devices (by calling AE title) and what the hub last saw of them."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from sqlalchemy import select, update
from sqlalchemy.orm import Session
from sqlmodel import col

from hub.models import Modality, utcnow
from hub.services import events

CHARACTER_SETS = ("ISO_IR 192", "ISO_IR 100", "ASCII")
Activity = Literal["query", "store", "report"]


def get(session: Session, ae_title: str) -> Modality | None:
    return session.get(Modality, ae_title)


def put(
    session: Session, ae_title: str, values: dict[str, object], *, actor: str
) -> tuple[Modality, bool]:
    """Register or change a device, audited."""
    row = session.get(Modality, ae_title)
    created = row is None
    if row is None:
        row = Modality(ae_title=ae_title)
        session.add(row)
    for key, value in values.items():
        setattr(row, key, value)
    row.updated_at = utcnow()
    session.flush()
    events.audit(session, actor, "modality.put", "modality", ae_title, dict(values))
    return row, created


def list_all(session: Session) -> list[Modality]:
    return list(session.scalars(select(Modality).order_by(col(Modality.ae_title))))


def ae_titles(session: Session) -> list[str]:
    """The calling AE titles of every registered device."""
    return list(session.scalars(select(col(Modality.ae_title))))


def delete(session: Session, ae_title: str, *, actor: str) -> bool:
    row = session.get(Modality, ae_title)
    if row is None:
        return False
    session.delete(row)
    events.audit(session, actor, "modality.delete", "modality", ae_title)
    return True


def touch(session: Session, ae_title: str, activity: Activity, at: datetime | None = None) -> None:
    """Note that a registered device queried, stored or reported (no-op for unknown AEs)."""
    column = {"query": "last_query_at", "store": "last_store_at", "report": "last_report_at"}
    session.execute(
        update(Modality)
        .where(col(Modality.ae_title) == ae_title)
        .values({column[activity]: at or utcnow()})
    )
