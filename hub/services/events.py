"""Recording what happened, in the caller's transaction (the outbox)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table, insert, or_, select
from sqlalchemy.orm import Session
from sqlmodel import SQLModel, col

from hub.models import AuditEvent, OutboxEvent, utcnow
from hub.services import paging

_OUTBOX: Table = SQLModel.metadata.tables[OutboxEvent.__tablename__]  # for a Core INSERT


def record(
    session: Session,
    kind: str,
    *,
    order_id: int | None = None,
    study_instance_uid: str | None = None,
    payload: dict[str, Any] | None = None,
) -> None:
    # A plain INSERT: nothing reads the row back in this transaction, and the
    # ORM unit of work for it cost a quarter of placing an order.
    session.connection().execute(
        insert(_OUTBOX),
        [
            {
                "at": utcnow(),
                "kind": kind,
                "order_id": order_id,
                "study_instance_uid": study_instance_uid,
                "payload": payload,
            }
        ],
    )


def audit(
    session: Session,
    actor: str,
    action: str,
    target_type: str,
    target_id: str | int,
    detail: dict[str, Any] | None = None,
) -> None:
    session.add(
        AuditEvent(
            actor=actor,
            action=action,
            target_type=target_type,
            target_id=str(target_id),
            detail=detail,
        )
    )


def audit_trail(
    session: Session,
    *,
    action: str | None = None,
    target_id: str | None = None,
    actor: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> tuple[list[AuditEvent], str | None]:
    """Newest first, optionally one action, one target, one actor.

    ``actor`` is a whole actor (``user:3:ada``) or its last part, the name
    (``ada`` finds ``user:3:ada`` and ``key:7:ada``).
    """
    stmt = select(AuditEvent)
    if action:
        stmt = stmt.where(col(AuditEvent.action) == action)
    if target_id:
        stmt = stmt.where(col(AuditEvent.target_id) == target_id)
    if actor:
        named = actor.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        stmt = stmt.where(
            or_(
                col(AuditEvent.actor) == actor,
                col(AuditEvent.actor).like(f"%:{named}", escape="\\"),
            )
        )
    return paging.page(
        session, stmt, col(AuditEvent.id), limit=limit, cursor=cursor, newest_first=True
    )
