"""Step 1: undispatched outbox events become deliveries, one per subscribed kind.

Each kind declares the events it can express and whether it needs a study
(kinds.py); the source says which kinds and events it wants. An event nobody
wants is marked dispatched without loading its order. An event about the hub
itself (``HUB_EVENTS``: qc.daily) has no order and goes to every source
subscribed to it.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session
from sqlmodel import col

from hub.models import Delivery, Order, OutboxEvent, Source, utcnow
from hub.models.studies import Study
from hub.services import routes
from hub.services.deliveries.document import document, hub_document
from hub.services.deliveries.kinds import Registry
from hub.services.sources import HUB_EVENTS

log = logging.getLogger("hub.deliveries")


def dispatch(session: Session, public_url: str, kinds: Registry, limit: int = 200) -> int:
    """Turn up to ``limit`` undispatched outbox events into deliveries; returns how many."""
    rows = list(
        session.scalars(
            select(OutboxEvent)
            .where(col(OutboxEvent.dispatched_at).is_(None))
            .order_by(col(OutboxEvent.id))
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    )
    if not rows:
        return 0
    # Routing rules look at study events whoever ordered the study (or nobody).
    routes.route_events(session, rows)
    # Most events interest no practice system (no source registered, or not
    # subscribed to that kind): settle those from (order id, source) pairs alone
    # and load whole orders only for events that make a delivery.
    order_ids = {ev.order_id for ev in rows if ev.order_id is not None}
    source_of: dict[int, str] = {}
    known: dict[str, Source | None] = {}
    if order_ids:
        pairs = session.execute(
            select(col(Order.id), col(Order.source)).where(col(Order.id).in_(order_ids))
        )
        source_of = {order_id: source for order_id, source in pairs if order_id is not None}
        names = set(source_of.values())
        known = dict.fromkeys(names)
        known.update(
            {s.name: s for s in session.scalars(select(Source).where(col(Source.name).in_(names)))}
        )

    # Events about the hub (qc.daily) go to every source subscribed to them.
    hub_wide = any(ev.order_id is None and ev.kind in HUB_EVENTS for ev in rows)
    everyone = list(session.scalars(select(Source).order_by(col(Source.name)))) if hub_wide else []

    def wanted(ev: OutboxEvent) -> bool:
        if ev.order_id is None:
            return ev.kind in HUB_EVENTS and any(kinds.subscribed(s, ev.kind) for s in everyone)
        src = known.get(source_of.get(ev.order_id, ""))
        return src is not None and bool(kinds.subscribed(src, ev.kind))

    done: list[int] = []
    todo: list[OutboxEvent] = []
    for ev in rows:
        assert ev.id is not None  # read from the table
        if wanted(ev):
            todo.append(ev)
        else:
            done.append(ev.id)
    with_study: set[int] = set()
    if todo:
        ids = {ev.order_id for ev in todo}
        list(session.scalars(select(Order).where(col(Order.id).in_(ids))))  # into the identity map
        with_study = {
            order_id
            for order_id in session.scalars(
                select(col(Study.order_id)).where(col(Study.order_id).in_(ids))
            )
            if order_id is not None
        }
    for ev in todo:
        assert ev.id is not None
        try:
            if ev.order_id is None:
                made = hub_deliveries(ev, kinds, everyone)
            else:
                made = deliveries_for(session, ev, public_url, kinds, known, with_study)
        except Exception:
            # Leave it undispatched (it blocks only its own order's later deliveries)
            # rather than let one bad event stop every delivery.
            log.exception("cannot make deliveries for event", extra={"event_id": ev.id})
            continue
        session.add_all(made)
        done.append(ev.id)
    session.execute(
        update(OutboxEvent).where(col(OutboxEvent.id).in_(done)).values(dispatched_at=utcnow()),
        execution_options={"synchronize_session": False},
    )
    session.flush()
    return len(done)


def deliveries_for(
    session: Session,
    ev: OutboxEvent,
    public_url: str,
    kinds: Registry,
    known: dict[str, Source | None] | None = None,
    with_study: set[int] | None = None,
) -> list[Delivery]:
    """The deliveries one event causes (none when its order's source wants nothing)."""
    known = {} if known is None else known
    order = session.get(Order, ev.order_id) if ev.order_id is not None else None
    if order is None or ev.id is None:
        return []  # e.g. a study nobody ordered: there is no practice system to tell
    if order.source not in known:
        known[order.source] = session.get(Source, order.source)
    src = known[order.source]
    if src is None:
        return []
    wanted = kinds.subscribed(src, ev.kind)
    if not wanted:
        return []
    may_have_study = with_study is None or order.id in with_study or ev.study_instance_uid
    study = _study_for(session, ev, order) if may_have_study else None
    out = []
    for kind in wanted:
        if kind.needs_study and study is None:
            continue  # e.g. a result message without a study has nothing to point at
        delivery_id = str(uuid.uuid4())
        doc = document(ev, order, study, public_url, src.name, delivery_id, session)
        out.append(
            Delivery(
                uuid=delivery_id,
                source=src.name,
                kind=kind.name,
                event_kind=ev.kind,
                outbox_event_id=ev.id,
                order_id=order.id,
                study_instance_uid=study.study_instance_uid if study else ev.study_instance_uid,
                payload=doc,
                next_attempt_at=utcnow(),
            )
        )
    return out


def hub_deliveries(ev: OutboxEvent, kinds: Registry, everyone: list[Source]) -> list[Delivery]:
    """The deliveries of an event about the hub: one per subscribed source and kind
    (a kind that needs a study has nothing to say about it)."""
    assert ev.id is not None  # read from the table
    out = []
    for src in everyone:
        for kind in kinds.subscribed(src, ev.kind):
            if kind.needs_study:
                continue
            delivery_id = str(uuid.uuid4())
            out.append(
                Delivery(
                    uuid=delivery_id,
                    source=src.name,
                    kind=kind.name,
                    event_kind=ev.kind,
                    outbox_event_id=ev.id,
                    payload=hub_document(ev, src.name, delivery_id),
                    next_attempt_at=utcnow(),
                )
            )
    return out


def _study_for(session: Session, ev: OutboxEvent, order: Order) -> Study | None:
    if ev.study_instance_uid:
        found = session.scalar(
            select(Study).where(col(Study.study_instance_uid) == ev.study_instance_uid)
        )
        if found is not None or ev.kind.startswith("study."):
            return found
    return session.scalar(
        select(Study).where(col(Study.order_id) == order.id).order_by(col(Study.id).desc()).limit(1)
    )


def enqueue(
    session: Session,
    source: str,
    kind: str,
    event_kind: str,
    payload: dict[str, Any],
    *,
    order_id: int | None = None,
) -> Delivery:
    """A delivery no outbox event caused: an adapter's own durable job (a vendor
    fetch after its webhook, a vendor callback) that the worker sends, retries
    with backoff and shows in the deliveries view like any other (flushed).

    ``order_id`` orders it after that order's earlier deliveries to ``source``;
    ``payload["delivery_id"]`` is set to the delivery's uuid (the idempotency key).
    """
    delivery_id = str(uuid.uuid4())
    row = Delivery(
        uuid=delivery_id,
        source=source,
        kind=kind,
        event_kind=event_kind,
        outbox_event_id=0,
        order_id=order_id,
        payload=payload | {"delivery_id": delivery_id},
        next_attempt_at=utcnow(),
    )
    session.add(row)
    session.flush()
    return row
