"""The versioned JSON document a delivery carries (docs/webhooks.md, schema version 1).

It is a snapshot taken at dispatch and stored with the delivery, so every
retry sends the same content; HL7 messages are rendered from it too.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session
from sqlmodel import col

from hub.models import Order, OrderStatus, OutboxEvent, as_utc
from hub.models.studies import Instance, Series, Study
from hub.services import links, orders

SCHEMA_VERSION = 1
STATUS_EVENTS = {f"order.{status}": status for status in OrderStatus.ALL}
# The order as the REST API shows it, so receivers learn one shape.
ORDER_FIELDS = {
    "id",
    "placer_order_number",
    "accession_number",
    "study_instance_uid",
    "patient",
    "owner",
    "procedure",
    "modality",
    "station_ae_title",
    "scheduled_start",
    "referring_vet",
    "site",
}


def document(
    ev: OutboxEvent,
    order: Order,
    study: Study | None,
    public_url: str,
    source: str,
    delivery_id: str,
    session: Session,
) -> dict[str, Any]:
    """The document for one delivery of ``ev`` to ``source``."""
    # A status event reports the status it is about, even if the order moved on since.
    status = STATUS_EVENTS.get(ev.kind, order.status)
    reason = (ev.payload or {}).get("reason") if isinstance(ev.payload, dict) else None
    shown = orders.to_out(order).model_dump(mode="json", include=ORDER_FIELDS)
    return {
        "version": SCHEMA_VERSION,
        "delivery_id": delivery_id,
        "event": ev.kind,
        "event_id": ev.id,
        "occurred_at": iso(ev.at),
        "source": source,
        "order": {
            **shown,
            "filler_order_number": order.accession_number,
            "status": status,
        },
        "study": study_doc(session, study) if study else None,
        "viewer_url": links.viewer_url(public_url, study.study_instance_uid) if study else None,
        "reason": reason,
    }


def hub_document(ev: OutboxEvent, source: str, delivery_id: str) -> dict[str, Any]:
    """The document of an event about the hub, not an order (``qc.daily``): the same
    envelope with ``order`` and ``study`` null, and the event's payload under the
    event's first word (``"qc"``)."""
    return {
        "version": SCHEMA_VERSION,
        "delivery_id": delivery_id,
        "event": ev.kind,
        "event_id": ev.id,
        "occurred_at": iso(ev.at),
        "source": source,
        "order": None,
        "study": None,
        "viewer_url": None,
        "reason": None,
        ev.kind.split(".", 1)[0]: ev.payload,
    }


def study_doc(session: Session, study: Study) -> dict[str, Any]:
    series_count = session.scalar(
        select(func.count()).select_from(Series).where(col(Series.study_id) == study.id)
    )
    instance_count = session.scalar(
        select(func.count()).select_from(Instance).where(col(Instance.study_id) == study.id)
    )
    modalities = sorted(
        m
        for m in session.scalars(
            select(col(Series.modality)).where(col(Series.study_id) == study.id).distinct()
        )
        if m
    ) or ([study.modality] if study.modality else [])
    date = study.study_date
    return {
        "study_instance_uid": study.study_instance_uid,
        "accession_number": study.accession_number or None,
        "modalities": modalities,
        "series_count": series_count or 0,
        "instance_count": instance_count or 0,
        "study_date": f"{date[:4]}-{date[4:6]}-{date[6:8]}" if len(date) == 8 else None,
        "study_time": study.study_time or None,
        "description": study.study_description or None,
        "match_method": study.match_method,
        "first_received_at": iso(study.created_at),
        "last_received_at": iso(study.last_received_at),
    }


def iso(value: datetime | None) -> str | None:
    v = as_utc(value)
    return v.isoformat() if v else None
