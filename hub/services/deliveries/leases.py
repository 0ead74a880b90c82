"""Steps 2 and 3: lease due deliveries, then write each attempt's outcome.

A lease is ``attempts + 1`` and ``next_attempt_at`` moved to the end of the
lease, committed before anything is sent; settling writes only where
``attempts`` is still the leased number, so a late answer never overwrites a
newer attempt or a manual retry. Any future background sender (DICOM
forwarding, upstream polling) claims and settles the same way.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Table, and_, bindparam, exists, or_, select, update
from sqlalchemy.orm import Session, aliased
from sqlmodel import SQLModel, col

from hub.models import Delivery, OutboxEvent, Source, utcnow
from hub.models.deliveries import DeliveryStatus as ST
from hub.services import routes
from hub.services.deliveries.kinds import Claim, Target
from hub.services.deliveries.policy import Policy

log = logging.getLogger("hub.deliveries")

_DELIVERIES: Table = SQLModel.metadata.tables["deliveries"]  # Delivery's table, for Core

# One attempt's result: the claim, the error (None: accepted), whether the
# error is final (no retry, however many attempts are left), and the seconds the
# receiver asked us to wait before the next attempt (None: the policy's backoff).
Outcome = tuple[Claim, str | None, bool, float | None]


def has_work(session: Session, now: datetime | None = None) -> bool:
    """A cheap read: is anything undispatched or due? (Spares idle hubs a write lock.)"""
    now = now or utcnow()
    undispatched = exists().where(col(OutboxEvent.dispatched_at).is_(None))
    due = exists().where(col(Delivery.status) == ST.PENDING, col(Delivery.next_attempt_at) <= now)
    return bool(session.scalar(select(or_(undispatched, due))))


def claim(session: Session, policy: Policy, now: datetime | None = None) -> list[Claim]:
    """Lease up to ``policy.batch`` due deliveries, oldest first, keeping per-order order."""
    now = now or utcnow()
    earlier = aliased(Delivery)
    blocked_by_delivery = exists().where(
        col(earlier.source) == col(Delivery.source),
        col(earlier.kind) == col(Delivery.kind),
        col(earlier.order_id) == col(Delivery.order_id),
        col(earlier.status) == ST.PENDING,
        or_(
            col(earlier.outbox_event_id) < col(Delivery.outbox_event_id),
            and_(
                col(earlier.outbox_event_id) == col(Delivery.outbox_event_id),
                col(earlier.id) < col(Delivery.id),
            ),
        ),
    )
    blocked_by_event = exists().where(
        col(OutboxEvent.order_id) == col(Delivery.order_id),
        col(OutboxEvent.dispatched_at).is_(None),
        col(OutboxEvent.id) < col(Delivery.outbox_event_id),
    )
    rows = list(
        session.scalars(
            select(Delivery)
            .where(
                col(Delivery.status) == ST.PENDING,
                col(Delivery.next_attempt_at) <= now,
                ~blocked_by_delivery,
                ~blocked_by_event,
            )
            .order_by(col(Delivery.next_attempt_at), col(Delivery.id))
            .limit(policy.batch)
            .with_for_update(skip_locked=True, of=Delivery)
        )
    )
    targets: dict[str, Target | None] = {}
    out = []
    for d in rows:
        assert d.id is not None  # read from the table
        d.attempts += 1
        d.next_attempt_at = now + policy.lease
        if d.source not in targets:
            src = session.get(Source, d.source)
            targets[d.source] = Target.of(src) if src else None
        out.append(
            Claim(
                id=d.id,
                uuid=d.uuid,
                kind=d.kind,
                event_kind=d.event_kind,
                attempts=d.attempts,
                payload=dict(d.payload),
                target=targets[d.source],
            )
        )
    session.flush()
    return out


def settle(
    session: Session,
    c: Claim,
    error: str | None,
    policy: Policy,
    final: bool = False,
    retry_after: float | None = None,
) -> str:
    """Write the outcome of one attempt; returns the new status."""
    return settle_many(session, [(c, error, final, retry_after)], policy)[0]


def settle_many(session: Session, outcomes: list[Outcome], policy: Policy) -> list[str]:
    """Write the outcomes of a batch in one statement; returns each new status.

    Only the holder of the current lease may settle (``attempts`` must still
    be the claimed number), so a late answer never overwrites a newer attempt
    or a manual retry.
    """
    if not outcomes:
        return []
    now = utcnow()
    rows: list[dict[str, Any]] = []
    out: list[str] = []
    for c, error, final, retry_after in outcomes:
        if error is None:
            status, nxt = ST.DELIVERED, now
        elif final or c.attempts >= policy.max_attempts:
            status, nxt = ST.FAILED, now
        elif retry_after is not None:
            status, nxt = ST.PENDING, now + timedelta(seconds=max(0.0, retry_after))
        else:
            status, nxt = ST.PENDING, now + policy.backoff(c.attempts)
        out.append(status)
        rows.append(
            {
                "b_id": c.id,
                "b_attempts": c.attempts,
                "b_status": status,
                "b_delivered": now if error is None else None,
                "b_error": error[:1024] if error else None,
                "b_next": nxt,
            }
        )
    rows.sort(key=lambda r: r["b_id"])  # rows locked in id order, as routes.rearm does
    t = _DELIVERIES
    stmt = (
        update(t)
        .where(
            t.c.id == bindparam("b_id"),
            t.c.attempts == bindparam("b_attempts"),
            t.c.status == ST.PENDING,
        )
        .values(
            status=bindparam("b_status"),
            delivered_at=bindparam("b_delivered"),
            last_error=bindparam("b_error"),
            next_attempt_at=bindparam("b_next"),
        )
    )
    result = session.connection().execute(stmt, rows)
    if result.rowcount >= 0 and result.rowcount < len(rows):
        log.warning(
            "delivery lease lost before settling",
            extra={"settled": result.rowcount, "expected": len(rows)},
        )
    routes.recheck(
        session, [c.id for c, error, *_ in outcomes if not error and c.kind == routes.KIND]
    )
    return out
