"""Daily QC: what a person checks each morning while a clinic goes live.

The go-live advice is "daily checks for two weeks: missing studies, wrong
patient mapping, sharing errors". For one local day (the hub's zone) the
report lists orders whose day passed without images, studies attached by the
weaker rules (``patient_day``) or by hand, studies waiting too long, failed
deliveries, share links refused or left to expire unopened, and registered
devices that were silent.

The lists describe the hub as it is *now*, seen through that day: an order
whose images arrived later is no longer missing, a study matched since no
longer waits. Devices keep only their *last* query/store/report time, so a
device seen after the day is not reported silent for it. Each list is one
indexed query (two for attached studies and shares) and is capped at
``LIST_LIMIT`` rows; the counts are exact.

``write_daily`` turns yesterday's counts into one ``qc.daily`` outbox event,
once per day however many hub processes share the database.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import date, datetime, time, timedelta
from typing import Any, ClassVar, Generic, TypeVar
from zoneinfo import ZoneInfo

from sqlalchemy import Select, and_, exists, func, or_, select, text
from sqlalchemy.orm import Session
from sqlmodel import col

from hub.models import AuditEvent, Delivery, Modality, Order, OutboxEvent, Share, as_utc, utcnow
from hub.models.deliveries import DeliveryStatus
from hub.models.studies import MatchMethod, Study
from hub.services import events
from hub.services.clock import day_bounds, local_today

# The weaker match rules, whose attachments a person should double-check.
TO_CHECK = (MatchMethod.PATIENT_DAY, MatchMethod.MANUAL)
LIST_LIMIT = 500
# The daily event is written once the hub's local clock passes this time
# (not a setting yet: docs/interface.md "Daily QC").
DAILY_AT = time(7, 0)
DAILY_EVENT = "qc.daily"
# PostgreSQL advisory lock held while one process checks for and writes the
# day's event, so two hub processes never both write it ("vethub" + "qc").
DAILY_LOCK_KEY = 0x76657468_7163
# Audit action of a share link opened after it expired or was revoked (hub/api/viewer.py).
SHARE_REFUSED = "share.refused"

T = TypeVar("T")


@dataclass(frozen=True)
class MissingOrder:
    """A scheduled order whose day ended without a study."""

    order_id: int
    source: str
    placer_order_number: str
    accession_number: str
    patient_id: str
    patient_name: str
    modality: str | None
    station_ae_title: str | None
    scheduled_start: datetime  # naive, hub local time, as the order says


@dataclass(frozen=True)
class AttachedStudy:
    """A study attached by ``patient_day`` or by hand: received values beside the order's."""

    study_instance_uid: str
    match_method: str
    attached_at: datetime
    attached_by: str  # "arrival", or the actor of the reconcile ("user:3:tina", "hub:rematch")
    order_id: int
    accession_number: str
    order_patient_id: str
    order_patient_name: str
    received_patient_id: str
    received_patient_name: str
    modality: str
    study_date: str


@dataclass(frozen=True)
class WaitingStudy:
    study_instance_uid: str
    unmatched_reason: str | None
    held: bool  # a person detached it; the re-matching leaves it alone
    patient_id: str
    patient_name: str
    accession_number: str
    modality: str
    calling_ae: str
    received_at: datetime


@dataclass(frozen=True)
class FailedDelivery:
    id: int
    delivery_id: str
    source: str
    kind: str
    event: str
    order_id: int | None
    study_instance_uid: str | None
    attempts: int
    last_error: str | None
    failed_at: datetime


@dataclass(frozen=True)
class ShareProblem:
    """A share link opened after it stopped working, or one that expired unopened."""

    share_id: int | None
    study_instance_uid: str
    at: datetime  # when it was refused, or when it expired
    reason: str  # "expired" / "revoked" (refused), "expired_unused"
    created_by: str | None = None
    note: str | None = None


@dataclass(frozen=True)
class SilentDevice:
    ae_title: str
    modality: str | None
    site: str | None
    last_query_at: datetime | None
    last_store_at: datetime | None
    last_report_at: datetime | None


@dataclass(frozen=True)
class Listed(Generic[T]):
    items: list[T]
    count: int  # exact, even when ``items`` stops at LIST_LIMIT


@dataclass(frozen=True)
class QcReport:
    date: date
    start: datetime  # the day's bounds in UTC
    end: datetime
    generated_at: datetime
    waiting_minutes: float
    missing_studies: Listed[MissingOrder]
    attached_to_check: Listed[AttachedStudy]
    waiting_studies: Listed[WaitingStudy]
    failed_deliveries: Listed[FailedDelivery]
    shares_refused: Listed[ShareProblem]
    shares_expired_unused: Listed[ShareProblem]
    silent_devices: Listed[SilentDevice]

    # The lists, in the order the API and the daily event show them.
    LISTS: ClassVar[tuple[str, ...]] = (
        "missing_studies",
        "attached_to_check",
        "waiting_studies",
        "failed_deliveries",
        "shares_refused",
        "shares_expired_unused",
        "silent_devices",
    )

    def counts(self) -> dict[str, int]:
        return {name: getattr(self, name).count for name in self.LISTS}


def report(
    session: Session,
    day: date,
    *,
    tz: ZoneInfo | None,
    waiting_minutes: float,
    now: datetime | None = None,
) -> QcReport:
    """The QC lists for local ``day`` as the hub stands at ``now``."""
    now = now or utcnow()
    start, end = day_bounds(day, tz)
    cutoff = min(end, now)
    return QcReport(
        date=day,
        start=start,
        end=end,
        generated_at=now,
        waiting_minutes=waiting_minutes,
        missing_studies=missing_studies(session, day, local_today(tz, now)),
        attached_to_check=attached_to_check(session, start, end),
        waiting_studies=waiting_studies(session, cutoff - timedelta(minutes=waiting_minutes)),
        failed_deliveries=failed_deliveries(session, end),
        shares_refused=shares_refused(session, start, end),
        shares_expired_unused=shares_expired_unused(session, start, cutoff),
        silent_devices=silent_devices(session, start, end),
    )


def _capped(session: Session, stmt: Select[*tuple[Any, ...]]) -> tuple[list[Any], int]:
    """Up to LIST_LIMIT rows, and how many there are in all (counted only when capped)."""
    rows = list(session.execute(stmt.limit(LIST_LIMIT)))
    if len(rows) < LIST_LIMIT:
        return rows, len(rows)
    total = session.scalar(select(func.count()).select_from(stmt.order_by(None).subquery()))
    return rows, int(total or 0)


def missing_studies(session: Session, day: date, today: date) -> Listed[MissingOrder]:
    """Scheduled orders without a study whose day is over: up to ``day``, and before today
    (today's orders still have the rest of the day). Uses ix_orders_status_date."""
    through = min(day, today - timedelta(days=1)).strftime("%Y%m%d")
    has_study = exists().where(col(Study.order_id) == col(Order.id))
    stmt = (
        select(Order)
        .where(
            col(Order.status) == "scheduled",
            col(Order.sps_start_date) <= through,
            ~has_study,
        )
        .order_by(col(Order.sps_start_date).desc(), col(Order.sps_start_time), col(Order.id))
    )
    rows, total = _capped(session, stmt)
    items = [
        MissingOrder(
            order_id=_id(o.id),
            source=o.source,
            placer_order_number=o.placer_order_number,
            accession_number=o.accession_number,
            patient_id=o.patient_id,
            patient_name=o.patient_name,
            modality=o.modality,
            station_ae_title=o.station_ae_title,
            scheduled_start=o.scheduled_start,
        )
        for (o,) in rows
    ]
    return Listed(items, total)


def attached_to_check(session: Session, start: datetime, end: datetime) -> Listed[AttachedStudy]:
    """Studies attached in [start, end) by ``patient_day`` or by hand, still so attached.

    Attached on arrival: the study row was made then (ix_studies_last_received_at
    bounds the search). Attached later (a person, or the re-matching job): the
    ``reconcile`` audit entry of that day (ix_audit_events_at).
    """
    reconciled: dict[str, tuple[datetime, str]] = {}
    for uid, at, actor in session.execute(
        select(col(AuditEvent.target_id), col(AuditEvent.at), col(AuditEvent.actor))
        .where(
            col(AuditEvent.action) == "reconcile",
            col(AuditEvent.at) >= start,
            col(AuditEvent.at) < end,
        )
        .order_by(col(AuditEvent.id))
    ):
        reconciled[uid] = (as_utc(at), actor)  # the day's last reconcile wins
    on_arrival = (
        col(Study.last_received_at) >= start,
        col(Study.created_at) >= start,
        col(Study.created_at) < end,
        col(Study.match_method) == MatchMethod.PATIENT_DAY,
    )
    later = col(Study.study_instance_uid).in_(list(reconciled)) if reconciled else None
    conditions = [and_(*on_arrival)] + ([later] if later is not None else [])
    stmt = (
        select(Study, Order)
        .join(Order, col(Order.id) == col(Study.order_id))
        .where(col(Study.match_method).in_(TO_CHECK), or_(*conditions))
        .order_by(col(Study.id))
    )
    rows, total = _capped(session, stmt)
    items = []
    for study, order in rows:
        at, by = reconciled.get(study.study_instance_uid, (as_utc(study.created_at), "arrival"))
        items.append(
            AttachedStudy(
                study_instance_uid=study.study_instance_uid,
                match_method=study.match_method,
                attached_at=at,
                attached_by=by,
                order_id=_id(order.id),
                accession_number=order.accession_number,
                order_patient_id=order.patient_id,
                order_patient_name=order.patient_name,
                received_patient_id=study.patient_id,
                received_patient_name=study.patient_name,
                modality=study.modality,
                study_date=study.study_date,
            )
        )
    items.sort(key=lambda a: a.attached_at)
    return Listed(items, total)


def waiting_studies(session: Session, arrived_by: datetime) -> Listed[WaitingStudy]:
    """Studies still without an order that arrived at or before ``arrived_by`` (the
    day's end or now, less the QC waiting time). Uses ix_studies_unmatched_reason."""
    stmt = (
        select(Study)
        .where(
            col(Study.unmatched_reason).is_not(None),
            col(Study.order_id).is_(None),
            col(Study.created_at) <= arrived_by,
        )
        .order_by(col(Study.created_at), col(Study.id))
    )
    rows, total = _capped(session, stmt)
    items = [
        WaitingStudy(
            study_instance_uid=s.study_instance_uid,
            unmatched_reason=s.unmatched_reason,
            held=s.held,
            patient_id=s.patient_id,
            patient_name=s.patient_name,
            accession_number=s.accession_number,
            modality=s.modality,
            calling_ae=s.calling_ae,
            received_at=as_utc(s.created_at),
        )
        for (s,) in rows
    ]
    return Listed(items, total)


def failed_deliveries(session: Session, end: datetime) -> Listed[FailedDelivery]:
    """Deliveries given up before ``end`` and not resent since. A failed delivery's
    ``next_attempt_at`` is when it failed (leases.settle_many); ix_deliveries_status_due."""
    stmt = (
        select(Delivery)
        .where(
            col(Delivery.status) == DeliveryStatus.FAILED,
            col(Delivery.next_attempt_at) < end,
        )
        .order_by(col(Delivery.next_attempt_at).desc(), col(Delivery.id).desc())
    )
    rows, total = _capped(session, stmt)
    items = [
        FailedDelivery(
            id=_id(d.id),
            delivery_id=d.uuid,
            source=d.source,
            kind=d.kind,
            event=d.event_kind,
            order_id=d.order_id,
            study_instance_uid=d.study_instance_uid,
            attempts=d.attempts,
            last_error=d.last_error,
            failed_at=as_utc(d.next_attempt_at),
        )
        for (d,) in rows
    ]
    return Listed(items, total)


def shares_refused(session: Session, start: datetime, end: datetime) -> Listed[ShareProblem]:
    """Share links opened in [start, end) after they expired or were revoked (audited
    as ``share.refused`` by the share page; ix_audit_events_action)."""
    stmt = (
        select(AuditEvent)
        .where(
            col(AuditEvent.action) == SHARE_REFUSED,
            col(AuditEvent.at) >= start,
            col(AuditEvent.at) < end,
        )
        .order_by(col(AuditEvent.id))
    )
    rows, total = _capped(session, stmt)
    items = []
    for (ev,) in rows:
        detail = ev.detail or {}
        items.append(
            ShareProblem(
                share_id=detail.get("share_id"),
                study_instance_uid=ev.target_id,
                at=as_utc(ev.at),
                reason=str(detail.get("reason", "")),
            )
        )
    return Listed(items, total)


def shares_expired_unused(
    session: Session, start: datetime, until: datetime
) -> Listed[ShareProblem]:
    """Share links that expired in [start, until) without being revoked or opened once.

    The shares table is small (a few links a day) and has no index on
    ``expires_at``: scanning it is cheaper than a migration. Views are audit
    entries of the share's study (ix_audit_events_target_id) by ``share:<id>``.
    """
    expired = list(
        session.scalars(
            select(Share)
            .where(
                col(Share.expires_at) >= start,
                col(Share.expires_at) < until,
                col(Share.revoked_at).is_(None),
            )
            .order_by(col(Share.expires_at), col(Share.id))
        )
    )
    if not expired:
        return Listed([], 0)
    viewers = {f"share:{s.id}" for s in expired}
    opened = set(
        session.scalars(
            select(col(AuditEvent.actor))
            .where(
                col(AuditEvent.target_id).in_({s.study_instance_uid for s in expired}),
                col(AuditEvent.action) == "view",
                col(AuditEvent.actor).in_(viewers),
            )
            .distinct()
        )
    )
    unused = [s for s in expired if f"share:{s.id}" not in opened]
    items = [
        ShareProblem(
            share_id=s.id,
            study_instance_uid=s.study_instance_uid,
            at=as_utc(s.expires_at),
            reason="expired_unused",
            created_by=s.created_by,
            note=s.note,
        )
        for s in unused[:LIST_LIMIT]
    ]
    return Listed(items, len(unused))


def silent_devices(session: Session, start: datetime, end: datetime) -> Listed[SilentDevice]:
    """Devices registered before ``end`` that neither queried, stored nor reported from
    ``start`` on (the modalities table is one row per device)."""

    def quiet(column: Any) -> Any:
        return or_(column.is_(None), column < start)

    stmt = (
        select(Modality)
        .where(
            col(Modality.created_at) < end,
            quiet(col(Modality.last_query_at)),
            quiet(col(Modality.last_store_at)),
            quiet(col(Modality.last_report_at)),
        )
        .order_by(col(Modality.ae_title))
    )
    rows, total = _capped(session, stmt)
    items = [
        SilentDevice(
            ae_title=m.ae_title,
            modality=m.modality,
            site=m.site,
            last_query_at=as_utc(m.last_query_at),
            last_store_at=as_utc(m.last_store_at),
            last_report_at=as_utc(m.last_report_at),
        )
        for (m,) in rows
    ]
    return Listed(items, total)


def daily_due(tz: ZoneInfo | None, now: datetime | None = None, at: time = DAILY_AT) -> date | None:
    """The day whose ``qc.daily`` event is due at ``now``: yesterday, once the local
    clock has passed ``at`` (``VETHUB_QC_DAILY_AT``); None before that."""
    local = (now or utcnow()).astimezone(tz)
    if local.time() < at:
        return None
    return local.date() - timedelta(days=1)


def daily_written(session: Session, day: date) -> bool:
    """Whether ``day`` has its ``qc.daily`` event (the newest few, by ix_outbox_events_kind)."""
    recent = session.scalars(
        select(col(OutboxEvent.payload))
        .where(col(OutboxEvent.kind) == DAILY_EVENT)
        .order_by(col(OutboxEvent.id).desc())
        .limit(7)
    )
    return any(isinstance(p, dict) and p.get("date") == day.isoformat() for p in recent)


def write_daily(
    session: Session,
    *,
    tz: ZoneInfo | None,
    waiting_minutes: float,
    public_url: str,
    now: datetime | None = None,
    at: time = DAILY_AT,
) -> date | None:
    """Write the due day's ``qc.daily`` outbox event unless it exists; returns the day written.

    The check and the insert are one transaction that holds a lock: an advisory
    lock on PostgreSQL, and on SQLite the write lock every write session takes
    (``BEGIN IMMEDIATE``). So hub processes running this at once write one event.
    A hub that was down at DAILY_AT writes it when it comes back (days missed
    while it was down are not made up).
    """
    day = daily_due(tz, now, at)
    if day is None:
        return None
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": DAILY_LOCK_KEY})
    if daily_written(session, day):
        return None
    qc = report(session, day, tz=tz, waiting_minutes=waiting_minutes, now=now)
    events.record(session, DAILY_EVENT, payload=daily_payload(qc, public_url))
    return day


def daily_payload(qc: QcReport, public_url: str) -> dict[str, Any]:
    """What the event (and each webhook of it) carries: the counts and where the lists are."""
    day = qc.date.isoformat()
    return {
        "date": day,
        "start": qc.start.isoformat(),
        "end": qc.end.isoformat(),
        "waiting_minutes": qc.waiting_minutes,
        "counts": qc.counts(),
        "url": f"{public_url.rstrip('/')}/api/v1/qc?date={day}",
    }


def as_dict(qc: QcReport) -> dict[str, Any]:
    """The report as plain values (lists and counts), e.g. for JSON."""
    out: dict[str, Any] = {
        "date": qc.date,
        "start": qc.start,
        "end": qc.end,
        "generated_at": qc.generated_at,
        "waiting_minutes": qc.waiting_minutes,
        "counts": qc.counts(),
    }
    for name in qc.LISTS:
        out[name] = [asdict(item) for item in getattr(qc, name).items]
    return out


def _id(value: int | None) -> int:
    assert value is not None  # read from the table
    return value
