"""Orders: place, change, cancel, find. Every edge (REST, HL7, ...) calls these.

An order is one requested procedure with one scheduled procedure step; its
row is the worklist item. Status changes follow ``TRANSITIONS`` and nothing
else.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import ValidationError
from sqlalchemy import ColumnElement, Table, and_, insert, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlmodel import SQLModel, col

from hub import names
from hub.errors import Conflict, FieldError, Invalid, NotFound
from hub.mappings import Mappings
from hub.models import Order, OrderStatus, as_utc, utcnow
from hub.schemas import OrderIn, OrderOut, OtherIdOut, OwnerOut, PatientOut, ProcedureOut
from hub.services import events, paging
from hub.uids import new_uid

S = OrderStatus
TRANSITIONS: dict[str, frozenset[str]] = {
    S.SCHEDULED: frozenset({S.IN_PROGRESS, S.COMPLETED, S.CANCELLED, S.DISCONTINUED}),
    S.IN_PROGRESS: frozenset({S.COMPLETED, S.DISCONTINUED}),
    S.COMPLETED: frozenset(),
    S.CANCELLED: frozenset(),
    S.DISCONTINUED: frozenset(),
}
# Fields fixed once an order exists: they are how other systems find it.
IMMUTABLE = ("source", "placer_order_number")
# Identifiers the sender may give (docs/interface.md "HL7 identifiers from the sender");
# the hub makes its own when they are absent, and none can be removed later.
SENDER_IDS = (
    "accession_number",
    "study_instance_uid",
    "requested_procedure_id",
    "scheduled_step_id",
)
_SINCE_V11 = ("study_instance_uid", "requested_procedure_id", "scheduled_step_id")
# Order details added later (docs/interface.md "Orders"), left out of the hash when absent too.
_SINCE_V12 = ("reason",)
_PATIENT_SINCE_V12 = ("alerts", "microchip", "other_ids")
_ACCESSION_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I look-alikes
_ORDERS: Table = SQLModel.metadata.tables["orders"]  # Order's table, for Core statements


@dataclass(frozen=True)
class OrderContext:
    """What placing an order needs beyond the request: vocabularies and the clock's zone."""

    mappings: Mappings
    tz: ZoneInfo | None = None

    def now(self) -> datetime:
        return datetime.now(self.tz).replace(tzinfo=None, microsecond=0)

    def local(self, value: datetime | None) -> datetime:
        """Naive local time: aware times are converted, naive ones are already local."""
        if value is None:
            return self.now()
        if value.tzinfo is not None:
            value = value.astimezone(self.tz).replace(tzinfo=None)
        return value


@dataclass(frozen=True)
class OrderFilter:
    status: str | None = None
    date: date | None = None
    patient_id: str | None = None
    accession_number: str | None = None
    modality: str | None = None
    station_ae_title: str | None = None
    site: str | None = None
    source: str | None = None
    placer_order_number: str | None = None
    # A person's search box: the patient id, or part of the animal's or owner's name.
    patient_text: str | None = None


def request_hash(req: OrderIn) -> str:
    """What "the same order again" means. Fields a request may carry since v1.1 (ids)
    or issue #12 (details) are left out when absent, so an order stored before still
    matches its resend."""
    absent: dict[str, Any] = {
        name: True for name in _SINCE_V11 + _SINCE_V12 if getattr(req, name) is None
    }
    patient_absent = {name for name in _PATIENT_SINCE_V12 if getattr(req.patient, name) is None}
    if patient_absent:
        absent["patient"] = patient_absent
    return hashlib.sha256(req.model_dump_json(exclude=absent).encode()).hexdigest()


def new_accession() -> str:
    return "VH" + "".join(secrets.choice(_ACCESSION_ALPHABET) for _ in range(8))


def place(session: Session, req: OrderIn, ctx: OrderContext) -> tuple[Order, bool]:
    """Store a new order, or return the identical one already placed.

    Returns ``(order, created)``. A different body under a placer number
    already used by the same source is a conflict, never an overwrite.
    """
    digest = request_hash(req)
    values = _values(req, ctx)
    accession = values.setdefault("accession_number", new_accession())
    taken = _taken(session, req.source, req.placer_order_number, accession, req.study_instance_uid)
    if taken.placed is not None:
        return _same_or_conflict(session.get_one(Order, taken.placed), digest), False
    if taken.accession:
        if not req.accession_number:  # a generated one clashed (1 in 32**8): draw again
            return place(session, req, ctx)
        raise _accession_conflict(accession)
    if taken.study_uid:
        raise _study_uid_conflict(req.study_instance_uid)
    now = utcnow()
    row = {
        **values,
        "source": req.source,
        "placer_order_number": req.placer_order_number,
        "study_instance_uid": req.study_instance_uid or new_uid(),
        "requested_procedure_id": req.requested_procedure_id or accession,
        "scheduled_step_id": req.scheduled_step_id or accession,
        "status": S.SCHEDULED,
        "version": 1,
        "request_hash": digest,
        "created_at": now,
        "updated_at": now,
    }
    stmt = insert(_ORDERS).returning(_ORDERS.c.id)
    # A Core INSERT, then the row loaded by key: building the ORM object and
    # flushing it cost half of placing an order.
    if session.get_bind().dialect.name == "sqlite":
        # Writers are serialised (BEGIN IMMEDIATE, hub/db.py), so the checks
        # above cannot race with another insert: no savepoint needed.
        new_id = session.connection().execute(stmt, [row]).scalar_one()
    else:
        try:
            with session.begin_nested():
                new_id = session.connection().execute(stmt, [row]).scalar_one()
        except IntegrityError:
            # Another connection inserted the same placer number, accession or study
            # UID between our checks and this insert: answer as if it had come first.
            existing = _by_placer(session, req.source, req.placer_order_number)
            if existing is not None:
                return _same_or_conflict(existing, digest), False
            again = _taken(
                session, req.source, req.placer_order_number, accession, req.study_instance_uid
            )
            if again.study_uid and not again.accession:
                raise _study_uid_conflict(req.study_instance_uid) from None
            raise _accession_conflict(accession) from None
    order = session.get_one(Order, new_id)
    events.record(session, "order.scheduled", order_id=order.id)
    from hub.services.reconcile import rematch_for_order  # studies that came first

    rematch_for_order(session, order)
    return order, True


def warnings(req: OrderIn, mappings: Mappings) -> list[FieldError]:
    """What in an accepted order is probably a mistake at the sender's end: a species or
    procedure code the vocabularies do not know (the order keeps the text, without a
    code or defaults), a weight outside the species' plausible range (a unit slip).
    The order is placed all the same; the caller passes these on."""
    found: list[FieldError] = []
    p = req.patient
    species = mappings.species.catalogued(p.species)
    if p.species and species is None:
        found.append(
            FieldError(
                "patient.species",
                f"unknown species {p.species!r}: kept as text, without a SNOMED CT code "
                "(mappings/species.yaml lists the known names)",
            )
        )
    code = req.procedure.code
    if code and mappings.procedures.get(code) is None:
        found.append(
            FieldError(
                "procedure.code",
                f"unknown procedure code {code!r}: no modality, station or body part "
                "filled in from mappings/procedures.yaml",
            )
        )
    if species is not None and species.weight_kg and p.weight_kg is not None:
        low, high = species.weight_kg
        if not low <= p.weight_kg <= high:
            found.append(
                FieldError(
                    "patient.weight_kg",
                    f"{p.weight_kg:g} kg is implausible for {species.description} "
                    f"(expected {low:g} to {high:g} kg); check the unit",
                )
            )
    return found


def get(session: Session, order_id: int) -> Order:
    order = session.get(Order, order_id)
    if order is None:
        raise NotFound(f"order {order_id} does not exist")
    return order


def by_ids(session: Session, order_ids: set[int]) -> dict[int, Order]:
    """The orders among ``order_ids`` that exist, by id (one query)."""
    if not order_ids:
        return {}
    rows = session.scalars(select(Order).where(col(Order.id).in_(order_ids)))
    return {o.id: o for o in rows if o.id is not None}


def find_by_placer(session: Session, source: str, placer_order_number: str) -> Order:
    order = _by_placer(session, source, placer_order_number)
    if order is None:
        raise NotFound(f"no order {placer_order_number!r} from source {source!r}")
    return order


def find(
    session: Session,
    flt: OrderFilter,
    *,
    limit: int = 50,
    cursor: str | None = None,
    newest_first: bool = False,
) -> tuple[list[Order], str | None]:
    stmt = select(Order)
    for column in (
        "status",
        "patient_id",
        "accession_number",
        "modality",
        "station_ae_title",
        "site",
        "source",
        "placer_order_number",
    ):
        value = getattr(flt, column)
        if value is not None:
            stmt = stmt.where(col(getattr(Order, column)) == value)
    if flt.date is not None:
        stmt = stmt.where(col(Order.sps_start_date) == flt.date.strftime("%Y%m%d"))
    if flt.patient_text and flt.patient_text.strip():
        text = flt.patient_text.strip()
        stmt = stmt.where(
            or_(
                col(Order.patient_id) == text,
                col(Order.name_key).contains(names.fold(text), autoescape=True),
            )
        )
    return paging.page(
        session, stmt, col(Order.id), limit=limit, cursor=cursor, newest_first=newest_first
    )


def on_worklist(now: datetime, max_age_days: float) -> list[ColumnElement[bool]]:
    """What puts an order on the Modality Worklist before any device's keys: open, and
    not older than ``VETHUB_WORKLIST_MAX_AGE_DAYS``. The worklist's query starts from
    these (worklist/query.py ``statement``), and /metrics counts with them."""
    clauses: list[ColumnElement[bool]] = [col(Order.status).in_(OrderStatus.OPEN)]
    if max_age_days > 0:
        cutoff = now - timedelta(days=max_age_days)
        clauses.append(col(Order.sps_start_date) >= cutoff.strftime("%Y%m%d"))
        clauses.append(col(Order.scheduled_start) >= cutoff)
    return clauses


def day_sheet(session: Session, day: date, *, limit: int = 500) -> list[Order]:
    """The orders scheduled on ``day`` (any status), by site, station and start time:
    a clinic's day at a glance (the console's Today page)."""
    stmt = (
        select(Order)
        .where(col(Order.sps_start_date) == day.strftime("%Y%m%d"))
        .order_by(
            col(Order.site), col(Order.station_ae_title), col(Order.scheduled_start), col(Order.id)
        )
        .limit(limit)
    )
    return list(session.scalars(stmt))


def update(session: Session, order_id: int, patch: dict[str, Any], ctx: OrderContext) -> Order:
    """Apply an RFC 7396 merge patch to the order's request shape."""
    order = get(session, order_id)
    if order.status not in S.OPEN:
        raise Conflict(f"order {order_id} is {order.status} and can no longer change", "status")
    current = as_request(order)
    merged = merge_patch(current, patch)
    for name in IMMUTABLE:
        if merged.get(name) != current.get(name):
            raise Invalid.one(name, "cannot be changed once the order exists")
    try:
        req = OrderIn.model_validate(merged)
    except ValidationError as exc:
        raise invalid_from(exc) from None
    for name in SENDER_IDS:
        if getattr(req, name) is None:
            raise Invalid.one(name, "cannot be removed")
    changed_accession = (
        req.accession_number if req.accession_number != order.accession_number else None
    )
    changed_uid = (
        req.study_instance_uid if req.study_instance_uid != order.study_instance_uid else None
    )
    if changed_accession or changed_uid:
        taken = _taken(
            session, order.source, order.placer_order_number, changed_accession, changed_uid
        )
        if taken.accession:
            raise _accession_conflict(changed_accession)
        if taken.study_uid:
            raise _study_uid_conflict(changed_uid)
    if req == OrderIn.model_validate(current):
        return order
    _apply(order, req, ctx)
    order.version += 1
    order.updated_at = utcnow()
    session.flush()
    events.record(session, "order.updated", order_id=order.id)
    from hub.services.reconcile import rematch_for_order  # studies that came first

    rematch_for_order(session, order)
    return order


def transition(session: Session, order: Order, new_status: str, *, reason: str = "") -> bool:
    """Move an order to ``new_status``; False when it is there already."""
    if order.status == new_status:
        return False
    if new_status not in TRANSITIONS[order.status]:
        raise Conflict(
            f"order {order.id} is {order.status}; it cannot become {new_status}", field="status"
        )
    order.status = new_status
    order.version += 1
    order.updated_at = utcnow()
    session.flush()
    events.record(
        session,
        f"order.{new_status}",
        order_id=order.id,
        payload={"reason": reason} if reason else None,
    )
    return True


def cancel(session: Session, order_id: int, *, reason: str = "") -> Order:
    order = get(session, order_id)
    if order.status == S.IN_PROGRESS:
        raise Conflict(
            f"order {order_id} is in progress; discontinue it instead of cancelling",
            field="status",
        )
    transition(session, order, S.CANCELLED, reason=reason)
    return order


def discontinue(session: Session, order_id: int, *, reason: str = "") -> Order:
    order = get(session, order_id)
    transition(session, order, S.DISCONTINUED, reason=reason)
    return order


# -- commands by the sender's placer number ---------------------------------
# Practice systems (HL7 ORC-1 XO/CA/DC, vendor APIs) name an order by their own
# number, never by ours; these find it and then act exactly like the id forms.


def update_by_placer(
    session: Session,
    source: str,
    placer_order_number: str,
    patch: dict[str, Any],
    ctx: OrderContext,
) -> Order:
    order = find_by_placer(session, source, placer_order_number)
    return update(session, _id(order), patch, ctx)


def cancel_by_placer(
    session: Session, source: str, placer_order_number: str, *, reason: str = ""
) -> Order:
    order = find_by_placer(session, source, placer_order_number)
    return cancel(session, _id(order), reason=reason)


def discontinue_by_placer(
    session: Session, source: str, placer_order_number: str, *, reason: str = ""
) -> Order:
    order = find_by_placer(session, source, placer_order_number)
    return discontinue(session, _id(order), reason=reason)


# -- shapes -----------------------------------------------------------------


def as_request(order: Order) -> dict[str, Any]:
    """The order in the request shape of docs/interface.md (for merge patches and resends)."""
    return {
        "source": order.source,
        "placer_order_number": order.placer_order_number,
        "accession_number": order.accession_number,
        "study_instance_uid": order.study_instance_uid,
        "requested_procedure_id": order.requested_procedure_id,
        "scheduled_step_id": order.scheduled_step_id,
        "patient": {
            "id": order.patient_id,
            "name": order.patient_name,
            "species": order.species_input,
            "breed": order.breed,
            "sex": order.patient_sex,
            "neutered": order.patient_neutered,
            "birth_date": order.patient_birth_date.isoformat()
            if order.patient_birth_date
            else None,
            "weight_kg": order.patient_weight_kg,
            "alerts": alerts(order) or None,
            "microchip": order.patient_microchip,
            "other_ids": order.patient_other_ids or None,
        },
        "owner": {
            "id": order.owner_id,
            "last_name": order.owner_last_name,
            "first_name": order.owner_first_name,
            "organization": order.owner_organization,
        },
        "procedure": {"code": order.procedure_code, "description": order.procedure_description},
        "modality": order.modality,
        "station_ae_title": order.station_ae_title,
        "scheduled_start": order.scheduled_start.isoformat(),
        "referring_vet": order.referring_vet,
        "reason": order.reason,
        "site": order.site,
        "priority": order.priority,
        "notes": order.notes,
    }


def alerts(order: Order) -> list[str]:
    """The order's MedicalAlerts values (stored joined by the DICOM delimiter)."""
    return order.patient_alerts.split("\\") if order.patient_alerts else []


def to_out(order: Order) -> OrderOut:
    return OrderOut(
        id=_id(order),
        source=order.source,
        placer_order_number=order.placer_order_number,
        accession_number=order.accession_number,
        study_instance_uid=order.study_instance_uid,
        status=order.status,
        patient=PatientOut(
            id=order.patient_id,
            name=order.patient_name,
            species=order.species_description,
            species_code=order.species_code,
            breed=order.breed,
            sex=order.patient_sex,
            neutered=order.patient_neutered,
            birth_date=order.patient_birth_date,
            weight_kg=order.patient_weight_kg,
            alerts=alerts(order),
            microchip=order.patient_microchip,
            other_ids=[OtherIdOut.model_validate(i) for i in order.patient_other_ids or ()],
        ),
        owner=OwnerOut(
            id=order.owner_id,
            last_name=order.owner_last_name,
            first_name=order.owner_first_name,
            organization=order.owner_organization,
        ),
        procedure=ProcedureOut(code=order.procedure_code, description=order.procedure_description),
        modality=order.modality,
        station_ae_title=order.station_ae_title,
        scheduled_start=order.scheduled_start,
        referring_vet=order.referring_vet,
        reason=order.reason,
        site=order.site,
        priority=order.priority,
        notes=order.notes,
        requested_procedure_id=order.requested_procedure_id,
        scheduled_step_id=order.scheduled_step_id,
        created_at=as_utc(order.created_at),
        updated_at=as_utc(order.updated_at),
    )


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396: objects merge recursively, ``null`` deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result[key] = None  # our shapes keep the key with an explicit null
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def invalid_from(exc: ValidationError) -> Invalid:
    return Invalid(
        [
            FieldError(".".join(str(p) for p in err["loc"]) or "body", err["msg"])
            for err in exc.errors()
        ]
    )


# -- internals --------------------------------------------------------------


def _apply(order: Order, req: OrderIn, ctx: OrderContext) -> None:
    """Copy a validated request onto an existing row."""
    for name, value in _values(req, ctx).items():
        setattr(order, name, value)


def _values(req: OrderIn, ctx: OrderContext) -> dict[str, Any]:
    """The row's columns for a validated request, vocabularies resolved."""
    owner = req.owner
    if not (owner.last_name or owner.organization):
        raise Invalid.one("owner", "either owner.last_name or owner.organization is required")
    if not (req.procedure.code or req.procedure.description):
        raise Invalid.one("procedure", "either procedure.code or procedure.description is required")
    proc = ctx.mappings.procedures.get(req.procedure.code)
    p = req.patient
    species = ctx.mappings.species.resolve(p.species)
    start = ctx.local(req.scheduled_start).replace(microsecond=0)
    values: dict[str, Any] = {
        "patient_id": p.id,
        "patient_name": p.name,
        "patient_birth_date": p.birth_date,
        "patient_sex": p.sex,
        "patient_neutered": p.neutered,
        "patient_weight_kg": p.weight_kg,
        "species_input": p.species,
        "species_description": species.description if species else None,
        "species_code": species.code if species else None,
        "species_scheme": species.scheme if species else None,
        "species_meaning": species.meaning if species else None,
        "breed": p.breed,
        "patient_alerts": "\\".join(p.alerts) if p.alerts else None,
        "patient_microchip": p.microchip,
        "patient_other_ids": [i.model_dump() for i in p.other_ids] if p.other_ids else None,
        "owner_id": owner.id,
        "owner_last_name": owner.last_name,
        "owner_first_name": owner.first_name,
        "owner_organization": owner.organization,
        "name_key": names.fold(
            names.animal_patient_name(owner.last_name or owner.organization, p.name)
        ),
        "procedure_code": req.procedure.code,
        "procedure_description": req.procedure.description or (proc.description if proc else None),
        "body_part": proc.body_part if proc else None,
        "modality": req.modality or (proc.modality if proc else None),
        "station_ae_title": req.station_ae_title or (proc.station_ae_title if proc else None),
        "site": req.site,
        "scheduled_start": start,
        "sps_start_date": start.strftime("%Y%m%d"),
        "sps_start_time": start.strftime("%H%M%S"),
        "referring_vet": req.referring_vet,
        "reason": req.reason,
        "priority": req.priority,
        "notes": req.notes,
    }
    for name in SENDER_IDS:
        if getattr(req, name):
            values[name] = getattr(req, name)
    return values


def _same_or_conflict(existing: Order, digest: str) -> Order:
    if existing.request_hash != digest:
        raise Conflict(
            f"placer_order_number {existing.placer_order_number!r} from source "
            f"{existing.source!r} is already used by an order with other content",
            field="placer_order_number",
        )
    return existing


def _by_placer(session: Session, source: str, placer: str) -> Order | None:
    stmt = select(Order).where(
        col(Order.source) == source, col(Order.placer_order_number) == placer
    )
    return session.scalars(stmt).first()


@dataclass(frozen=True)
class _Taken:
    placed: int | None  # the order already under the placer number
    accession: bool  # the accession belongs to an order
    study_uid: bool  # the study UID belongs to an order


def _taken(
    session: Session,
    source: str,
    placer: str,
    accession: str | None,
    study_uid: str | None = None,
) -> _Taken:
    """Which of the unique keys are in use: one Core query over their unique indexes."""
    t = _ORDERS.c
    wanted = [and_(t.source == source, t.placer_order_number == placer)]
    if accession:
        wanted.append(t.accession_number == accession)
    if study_uid:
        wanted.append(t.study_instance_uid == study_uid)
    stmt = select(t.id, t.source, t.placer_order_number, t.accession_number, t.study_instance_uid)
    placed, accession_taken, uid_taken = None, False, False
    for row in session.connection().execute(stmt.where(or_(*wanted))):
        if row.source == source and row.placer_order_number == placer:
            placed = row.id
        accession_taken = accession_taken or (bool(accession) and row.accession_number == accession)
        uid_taken = uid_taken or (bool(study_uid) and row.study_instance_uid == study_uid)
    return _Taken(placed, accession_taken, uid_taken)


def _accession_conflict(accession: str | None) -> Conflict:
    return Conflict(
        f"accession_number {accession!r} belongs to another order", field="accession_number"
    )


def _study_uid_conflict(uid: str | None) -> Conflict:
    return Conflict(
        f"study_instance_uid {uid!r} belongs to another order", field="study_instance_uid"
    )


def _id(order: Order) -> int:
    """A stored order's id (the column is optional only before the row is inserted)."""
    assert order.id is not None
    return order.id
