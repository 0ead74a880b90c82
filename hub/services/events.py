"""Recording what happened, in the caller's transaction (the outbox)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from hub.models import AuditEvent, OutboxEvent


def record(
    session: Session,
    kind: str,
    *,
    order_id: int | None = None,
    study_instance_uid: str | None = None,
    payload: dict[str, Any] | None = None,
) -> OutboxEvent:
    event = OutboxEvent(
        kind=kind, order_id=order_id, study_instance_uid=study_instance_uid, payload=payload
    )
    session.add(event)
    return event


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
