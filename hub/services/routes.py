"""Routing rules: which studies go on to which registered node, and when.

A study matches a route when every key of the route's filter matches it:
``modality`` (the study's or any series', or its order's), ``site`` (its
order's, else the registered site of the device that sent it),
``source`` (its order's practice system), ``station_ae_title`` (the
device that sent it, else its order's station) and ``procedure_code`` (its
order's). A match becomes one ``dicom-forward`` delivery per study and
route (``when`` ``received``: on the study's first instance; ``completed``:
when its order completes). The delivery covers the whole study: each
attempt sends the instances the destination has not yet acknowledged, and a
late instance re-arms a delivered forward (``rearm``). One that lands while
an attempt is finishing is caught when the attempt settles (``recheck``):
either the instance is committed before the forward is settled delivered,
and ``recheck`` sees it, or after, and ``rearm`` sees the forward delivered.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Table, func, select, update
from sqlalchemy.orm import Session
from sqlmodel import SQLModel, col

from hub.errors import FieldError, Invalid, NotFound
from hub.models import (
    Delivery,
    DeliveryInstance,
    Modality,
    Order,
    OutboxEvent,
    Route,
    RouteWhen,
    Study,
    utcnow,
)
from hub.models.deliveries import DeliveryStatus as ST
from hub.models.studies import Instance, Series
from hub.services import events, sources

KIND = "dicom-forward"
FILTER_LISTS = ("modality", "procedure_code")
FILTER_TEXTS = ("site", "source", "station_ae_title")
# The outbox events that can start a route, by the route's ``when``.
EVENT_WHEN = {"study.received": RouteWhen.RECEIVED, "order.completed": RouteWhen.COMPLETED}
# A send by hand has no outbox event behind it.
MANUAL_EVENT = "study.send"

_DELIVERIES: Table = SQLModel.metadata.tables["deliveries"]


def check(
    session: Session, destination: Any, when: Any, flt: Any, field_prefix: str = ""
) -> dict[str, Any]:
    """The route's filter, normalised; ``Invalid`` naming each field at fault."""
    errors: list[FieldError] = []
    errors += destination_errors(session, destination)
    if when not in RouteWhen.ALL:
        errors.append(FieldError("when", f"must be one of {', '.join(RouteWhen.ALL)}"))
    out: dict[str, Any] = {}
    if not isinstance(flt, dict):
        errors.append(FieldError("filter", "must be an object"))
        flt = {}
    for key, value in flt.items():
        if key in FILTER_LISTS:
            items = [value] if isinstance(value, str) else value
            if not isinstance(items, list) or not all(
                isinstance(v, str) and v.strip() for v in items
            ):
                errors.append(FieldError(f"filter.{key}", "must be a list of non-empty strings"))
                continue
            out[key] = [v.strip() for v in items]
        elif key in FILTER_TEXTS:
            if not isinstance(value, str) or not value.strip():
                errors.append(FieldError(f"filter.{key}", "must be a non-empty string"))
                continue
            out[key] = value.strip()
        else:
            known = ", ".join(FILTER_LISTS + FILTER_TEXTS)
            errors.append(FieldError(f"filter.{key}", f"unknown filter key; use {known}"))
    if errors:
        raise Invalid(errors)
    return out


def destination_errors(session: Session, destination: Any) -> list[FieldError]:
    if not isinstance(destination, str) or not destination:
        return [FieldError("destination", "must be a registered node's AE title")]
    node = session.get(Modality, destination)
    if node is None:
        return [
            FieldError(
                "destination",
                f"{destination!r} is not registered; PUT /api/v1/modalities/{destination} "
                "with host and port first",
            )
        ]
    if not node.host or not node.port:
        return [FieldError("destination", f"{destination!r} is registered without host and port")]
    return []


def put(
    session: Session,
    name: str,
    *,
    destination: str,
    when: str,
    flt: dict[str, Any],
    enabled: bool,
    actor: str,
) -> tuple[Route, bool]:
    if not sources.valid_name(name):
        raise Invalid.one("name", "1-64 letters, digits, '.', '_' or '-', starting alphanumeric")
    clean = check(session, destination, when, flt)
    row = session.get(Route, name)
    created = row is None
    if row is None:
        row = Route(name=name, destination=destination)
        session.add(row)
    row.destination, row.when, row.filter, row.enabled = destination, when, clean, enabled
    row.updated_at = utcnow()
    session.flush()
    detail = {"destination": destination, "when": when, "filter": clean, "enabled": enabled}
    events.audit(session, actor, "route.put", "route", name, detail)
    return row, created


def list_all(session: Session) -> list[Route]:
    return list(session.scalars(select(Route).order_by(col(Route.name))))


def delete(session: Session, name: str, *, actor: str) -> None:
    row = session.get(Route, name)
    if row is None:
        raise NotFound(f"route {name!r} does not exist")
    session.delete(row)
    events.audit(session, actor, "route.delete", "route", name)


@dataclass(frozen=True)
class StudyFacts:
    """What a route's filter can look at, gathered once per study."""

    modalities: frozenset[str]
    site: str | None
    source: str | None
    stations: frozenset[str]
    procedure_code: str | None


def facts(session: Session, study: Study) -> StudyFacts:
    order = session.get(Order, study.order_id) if study.order_id is not None else None
    modalities = {study.modality} if study.modality else set()
    modalities.update(
        m
        for m in session.scalars(
            select(col(Series.modality)).where(col(Series.study_id) == study.id).distinct()
        )
        if m
    )
    if order is not None and order.modality:
        modalities.add(order.modality)
    device = session.get(Modality, study.calling_ae) if study.calling_ae else None
    site = (order.site if order else None) or (device.site if device else None)
    stations = {a for a in (study.calling_ae, order.station_ae_title if order else None) if a}
    return StudyFacts(
        modalities=frozenset(modalities),
        site=site,
        source=order.source if order else None,
        stations=frozenset(stations),
        procedure_code=order.procedure_code if order else None,
    )


def matches(flt: dict[str, Any], f: StudyFacts) -> bool:
    """Every key present must match; an empty filter matches every study."""
    if "modality" in flt and not f.modalities & set(flt["modality"]):
        return False
    if "procedure_code" in flt and f.procedure_code not in flt["procedure_code"]:
        return False
    if "site" in flt and f.site != flt["site"]:
        return False
    if "source" in flt and f.source != flt["source"]:
        return False
    return not ("station_ae_title" in flt and flt["station_ae_title"] not in f.stations)


def forward(
    session: Session,
    study: Study,
    destination: str,
    *,
    event_kind: str,
    outbox_event_id: int = 0,
    route: str | None = None,
) -> Delivery:
    """A new ``dicom-forward`` delivery of ``study`` to ``destination`` (flushed)."""
    delivery_id = str(uuid.uuid4())
    row = Delivery(
        uuid=delivery_id,
        source=destination,
        kind=KIND,
        event_kind=event_kind,
        outbox_event_id=outbox_event_id,
        order_id=None,  # a forward waits for no order's earlier deliveries
        study_instance_uid=study.study_instance_uid,
        payload={
            "delivery_id": delivery_id,
            "destination": destination,
            "route": route,
            "study_instance_uid": study.study_instance_uid,
            "progress": {"sent": 0, "total": None, "failed": []},
        },
        next_attempt_at=utcnow(),
    )
    session.add(row)
    session.flush()
    return row


def route_events(session: Session, evs: list[OutboxEvent]) -> int:
    """Make the forwards the routes ask for on these events; returns how many."""
    wanted = [ev for ev in evs if ev.kind in EVENT_WHEN]
    if not wanted:
        return 0
    active = list(session.scalars(select(Route).where(col(Route.enabled).is_(True))))
    if not active:
        return 0
    made = 0
    for ev in wanted:
        when = EVENT_WHEN[ev.kind]
        routes = [r for r in active if r.when == when]
        if not routes:
            continue
        if ev.kind == "study.received":
            found = session.scalar(
                select(Study).where(col(Study.study_instance_uid) == ev.study_instance_uid)
            )
            studies = [found] if found is not None else []
        else:
            studies = list(session.scalars(select(Study).where(col(Study.order_id) == ev.order_id)))
        for study in studies:
            f = facts(session, study)
            for r in routes:
                if matches(r.filter, f):
                    forward(
                        session,
                        study,
                        r.destination,
                        event_kind=ev.kind,
                        outbox_event_id=ev.id or 0,
                        route=r.name,
                    )
                    made += 1
    return made


def rearm(session: Session, study_instance_uid: str) -> None:
    """A new instance of a study: its delivered forwards go again (for that instance)."""
    t = _DELIVERIES
    # PostgreSQL: hold the study's forwards (in id order, as settling takes them)
    # until this instance is committed, so one settling now waits and then
    # sees it in ``recheck``. SQLite's single writer does the same.
    session.connection().execute(
        select(t.c.id)
        .where(t.c.study_instance_uid == study_instance_uid, t.c.kind == KIND)
        .order_by(t.c.id)
        .with_for_update()
    )
    session.connection().execute(
        update(t)
        .where(
            t.c.study_instance_uid == study_instance_uid,
            t.c.kind == KIND,
            t.c.status == ST.DELIVERED,
        )
        .values(status=ST.PENDING, next_attempt_at=utcnow(), delivered_at=None)
    )


def recheck(session: Session, delivery_ids: list[int]) -> None:
    """Forwards just settled delivered whose study has an instance they have not
    had acknowledged go back to pending (it landed after the attempt's last
    listing); run in the settling transaction."""
    if not delivery_ids:
        return
    t = _DELIVERIES
    acked = select(col(DeliveryInstance.sop_instance_uid)).where(
        col(DeliveryInstance.delivery_id) == t.c.id, col(DeliveryInstance.status) == "sent"
    )
    unsent = (
        select(col(Instance.id))
        .join(Study, col(Study.id) == col(Instance.study_id))
        .where(col(Study.study_instance_uid) == t.c.study_instance_uid)
        .where(col(Instance.sop_instance_uid).not_in(acked))
        .exists()
    )
    session.connection().execute(
        update(t)
        .where(t.c.id.in_(delivery_ids), t.c.kind == KIND, t.c.status == ST.DELIVERED, unsent)
        .values(status=ST.PENDING, next_attempt_at=utcnow(), delivered_at=None)
    )


@dataclass(frozen=True)
class ToSend:
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    path: str  # relative to the data directory


def pending(session: Session, delivery_id: int, study_instance_uid: str) -> list[ToSend]:
    """The study's instances this delivery has not had acknowledged, in series order."""
    acked = select(col(DeliveryInstance.sop_instance_uid)).where(
        col(DeliveryInstance.delivery_id) == delivery_id, col(DeliveryInstance.status) == "sent"
    )
    rows = session.execute(
        select(
            col(Instance.sop_instance_uid),
            col(Instance.sop_class_uid),
            col(Instance.transfer_syntax_uid),
            col(Instance.path),
        )
        .join(Study, col(Study.id) == col(Instance.study_id))
        .where(col(Study.study_instance_uid) == study_instance_uid)
        .where(col(Instance.sop_instance_uid).not_in(acked))
        .order_by(col(Instance.series_id), col(Instance.instance_number), col(Instance.id))
    )
    return [ToSend(*r) for r in rows]


def note(
    session: Session, delivery_id: int, sop_instance_uid: str, error: str | None = None
) -> None:
    """Write the destination's answer for one instance (``error`` None: acknowledged)."""
    row = session.scalar(
        select(DeliveryInstance).where(
            col(DeliveryInstance.delivery_id) == delivery_id,
            col(DeliveryInstance.sop_instance_uid) == sop_instance_uid,
        )
    )
    if row is None:
        row = DeliveryInstance(
            delivery_id=delivery_id, sop_instance_uid=sop_instance_uid, status=""
        )
        session.add(row)
    row.status = "sent" if error is None else "failed"
    row.error = error[:255] if error else None
    row.at = utcnow()
    session.flush()


def progress(session: Session, delivery_id: int, study_instance_uid: str) -> dict[str, Any]:
    """``{"sent", "total", "failed": [{"sop_instance_uid", "error"}]}`` for one forward."""
    total = session.scalar(
        select(func.count())
        .select_from(Instance)
        .join(Study, col(Study.id) == col(Instance.study_id))
        .where(col(Study.study_instance_uid) == study_instance_uid)
    )
    answers = list(
        session.scalars(
            select(DeliveryInstance).where(col(DeliveryInstance.delivery_id) == delivery_id)
        )
    )
    return {
        "sent": sum(1 for a in answers if a.status == "sent"),
        "total": total or 0,
        "failed": [
            {"sop_instance_uid": a.sop_instance_uid, "error": a.error}
            for a in answers
            if a.status == "failed"
        ],
    }


def save_progress(session: Session, delivery_id: int, study_instance_uid: str) -> None:
    """Copy the forward's progress into its payload (what ``GET /deliveries`` shows)."""
    row = session.get(Delivery, delivery_id)
    if row is not None:
        row.payload = {
            **row.payload,
            "progress": progress(session, delivery_id, study_instance_uid),
        }
        session.flush()


def send(session: Session, study_instance_uid: str, destination: str, *, actor: str) -> Delivery:
    """A send by hand: one forward of the study, audited (``send``)."""
    study = session.scalar(select(Study).where(col(Study.study_instance_uid) == study_instance_uid))
    if study is None:
        raise NotFound(f"study {study_instance_uid} does not exist")
    errors = destination_errors(session, destination)
    if errors:
        raise Invalid(errors)
    row = forward(session, study, destination, event_kind=MANUAL_EVENT)
    events.audit(
        session,
        actor,
        "send",
        "study",
        study_instance_uid,
        {"destination": destination, "delivery_id": row.uuid},
    )
    return row
