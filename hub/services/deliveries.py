"""Results back to practice software: outbox events become deliveries, deliveries get sent.

Three steps, each its own short transaction, so that a crash at any point
loses nothing and no database lock is held while a socket waits:

1. ``dispatch``: undispatched outbox rows become ``Delivery`` rows (one per
   result kind of the order's source that subscribes to the event) and are
   marked dispatched, in one transaction.
2. ``claim``: due pending deliveries are leased: ``attempts`` goes up and
   ``next_attempt_at`` moves to the end of the lease, so another process
   (or this one after a crash) retries only once the lease has run out.
3. ``settle``: the outcome is written: delivered, or pending again after an
   exponential backoff with jitter, or failed after the last attempt.

Several hub processes may share one PostgreSQL: both dispatch and claim
take rows with ``FOR UPDATE SKIP LOCKED``. On SQLite the single process
serialises writers with ``BEGIN IMMEDIATE`` (hub/db.py).

Per-order ordering: a delivery is not claimed while an earlier one for the
same source, result kind and order is still pending, nor while an earlier
outbox event of that order is still undispatched. The wire formats live in
``adapters/`` and are handed to the worker as ``senders``.
"""

from __future__ import annotations

import logging
import random
import threading
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, bindparam, exists, func, or_, select, update
from sqlalchemy.orm import Session, aliased

from hub.config import Settings
from hub.errors import NotFound
from hub.models import Delivery, Order, OrderStatus, OutboxEvent, Source, as_utc, utcnow
from hub.models.deliveries import DeliveryStatus
from hub.models.studies import Instance, Series, Study
from hub.services import events, links, orders, sources
from hub.services.paging import MAX_LIMIT, decode_cursor, encode_cursor

log = logging.getLogger("hub.deliveries")

SCHEMA_VERSION = 1
ST = DeliveryStatus
STATUS_EVENTS = {f"order.{status}": status for status in OrderStatus.ALL}


class DeliveryError(Exception):
    """A send did not succeed; the message says what the receiver did (or did not) answer."""


@dataclass(frozen=True)
class Target:
    """Where a source is reached; a copy, so no session is needed while sending."""

    name: str
    hl7_profile: str
    webhook_url: str | None
    webhook_secret: str | None
    hl7_host: str | None
    hl7_port: int | None


@dataclass(frozen=True)
class Claim:
    """One leased delivery, ready to send."""

    id: int
    uuid: str
    kind: str
    event_kind: str
    attempts: int
    payload: dict[str, Any]
    target: Target | None


Sender = Callable[[Target, Claim], None]


@dataclass(frozen=True)
class Policy:
    max_attempts: int = 20
    backoff_seconds: float = 5.0
    backoff_max_seconds: float = 900.0
    timeout_seconds: float = 10.0
    batch: int = 50
    concurrency: int = 8

    @classmethod
    def from_settings(cls, s: Settings) -> Policy:
        return cls(
            max_attempts=s.delivery_max_attempts,
            backoff_seconds=s.delivery_backoff_seconds,
            backoff_max_seconds=s.delivery_backoff_max_seconds,
            timeout_seconds=s.delivery_timeout_seconds,
            batch=s.delivery_batch,
            concurrency=s.delivery_concurrency,
        )

    @property
    def lease(self) -> timedelta:
        """Long enough for a whole claimed batch to be sent or time out.

        A send takes at most about 3 x timeout (connect, write, read); a batch
        is sent ``concurrency`` at a time.
        """
        waves = -(-self.batch // self.concurrency) + 1
        return timedelta(seconds=waves * 3 * self.timeout_seconds + 30)

    def backoff(self, attempts: int) -> timedelta:
        """Exponential, capped, with jitter over the upper half so retries spread out."""
        delay = min(self.backoff_max_seconds, self.backoff_seconds * 2 ** max(0, attempts - 1))
        return timedelta(seconds=delay / 2 + random.uniform(0, delay / 2))


# -- 1. dispatch ------------------------------------------------------------


def dispatch(session: Session, public_url: str, limit: int = 200) -> int:
    """Turn up to ``limit`` undispatched outbox events into deliveries; returns how many."""
    rows = list(
        session.scalars(
            select(OutboxEvent)
            .where(OutboxEvent.dispatched_at.is_(None))  # type: ignore[union-attr]
            .order_by(OutboxEvent.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    )
    if not rows:
        return 0
    # Most events interest no practice system (no source registered, or not
    # subscribed to that kind): settle those from (order id, source) pairs alone
    # and load whole orders only for events that make a delivery.
    order_ids = {ev.order_id for ev in rows if ev.order_id is not None}
    source_of: dict[int, str] = {}
    known: dict[str, Source | None] = {}
    if order_ids:
        source_of = dict(
            session.execute(select(Order.id, Order.source).where(Order.id.in_(order_ids))).all()  # type: ignore[union-attr,arg-type]
        )
        names = set(source_of.values())
        known = dict.fromkeys(names)
        known.update(
            {s.name: s for s in session.scalars(select(Source).where(Source.name.in_(names)))}  # type: ignore[attr-defined]
        )

    def wanted(ev: OutboxEvent) -> bool:
        src = known.get(source_of.get(ev.order_id, "")) if ev.order_id is not None else None
        return src is not None and bool(sources.subscriptions(src, ev.kind))

    done: list[int] = []
    todo: list[OutboxEvent] = []
    for ev in rows:
        if wanted(ev):
            todo.append(ev)
        else:
            done.append(ev.id)  # type: ignore[arg-type]
    with_study: set[int] = set()
    if todo:
        ids = {ev.order_id for ev in todo}
        list(session.scalars(select(Order).where(Order.id.in_(ids))))  # type: ignore[union-attr]
        with_study = set(
            session.scalars(select(Study.order_id).where(Study.order_id.in_(ids)))  # type: ignore[union-attr]
        )
    for ev in todo:
        try:
            made = deliveries_for(session, ev, public_url, known, with_study)
        except Exception:
            # Leave it undispatched (it blocks only its own order's later deliveries)
            # rather than let one bad event stop every delivery.
            log.exception("cannot make deliveries for event", extra={"event_id": ev.id})
            continue
        session.add_all(made)
        done.append(ev.id)
    session.execute(
        update(OutboxEvent)
        .where(OutboxEvent.id.in_(done))  # type: ignore[union-attr]
        .values(dispatched_at=utcnow()),
        execution_options={"synchronize_session": False},
    )
    session.flush()
    return len(done)


def deliveries_for(
    session: Session,
    ev: OutboxEvent,
    public_url: str,
    known: dict[str, Source | None] | None = None,
    with_study: set[int] | None = None,
) -> list[Delivery]:
    """The deliveries one event causes (none when its order's source wants nothing)."""
    known = {} if known is None else known
    order = session.get(Order, ev.order_id) if ev.order_id is not None else None
    if order is None:
        return []  # e.g. a study nobody ordered: there is no practice system to tell
    if order.source not in known:
        known[order.source] = session.get(Source, order.source)
    src = known[order.source]
    if src is None:
        return []
    kinds = sources.subscriptions(src, ev.kind)
    if not kinds:
        return []
    may_have_study = with_study is None or order.id in with_study or ev.study_instance_uid
    study = _study_for(session, ev, order) if may_have_study else None
    out = []
    for kind in kinds:
        if kind == "hl7-oru" and study is None:
            continue  # a result message without a study has nothing to point at
        delivery_id = str(uuid.uuid4())
        doc = document(ev, order, study, public_url, src.name, delivery_id, session)
        out.append(
            Delivery(
                uuid=delivery_id,
                source=src.name,
                kind=kind,
                event_kind=ev.kind,
                outbox_event_id=ev.id,  # type: ignore[arg-type]
                order_id=order.id,
                study_instance_uid=study.study_instance_uid if study else ev.study_instance_uid,
                payload=doc,
                next_attempt_at=utcnow(),
            )
        )
    return out


def _study_for(session: Session, ev: OutboxEvent, order: Order) -> Study | None:
    if ev.study_instance_uid:
        found = session.scalar(
            select(Study).where(Study.study_instance_uid == ev.study_instance_uid)
        )
        if found is not None or ev.kind.startswith("study."):
            return found
    return session.scalar(
        select(Study).where(Study.order_id == order.id).order_by(Study.id.desc()).limit(1)  # type: ignore[union-attr]
    )


def document(
    ev: OutboxEvent,
    order: Order,
    study: Study | None,
    public_url: str,
    source: str,
    delivery_id: str,
    session: Session,
) -> dict[str, Any]:
    """The versioned JSON document of docs/webhooks.md; HL7 messages are rendered from it too."""
    # A status event reports the status it is about, even if the order moved on since.
    status = STATUS_EVENTS.get(ev.kind, order.status)
    reason = (ev.payload or {}).get("reason") if isinstance(ev.payload, dict) else None
    study_doc = _study_doc(session, study) if study else None
    # The order as the REST API shows it, so receivers learn one shape.
    shown = orders.to_out(order).model_dump(
        mode="json",
        include={
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
        },
    )
    return {
        "version": SCHEMA_VERSION,
        "delivery_id": delivery_id,
        "event": ev.kind,
        "event_id": ev.id,
        "occurred_at": _iso(ev.at),
        "source": source,
        "order": {
            **shown,
            "filler_order_number": order.accession_number,
            "status": status,
        },
        "study": study_doc,
        "viewer_url": links.viewer_url(public_url, study.study_instance_uid) if study else None,
        "reason": reason,
    }


def _study_doc(session: Session, study: Study) -> dict[str, Any]:
    series_count = session.scalar(
        select(func.count()).select_from(Series).where(Series.study_id == study.id)
    )
    instance_count = session.scalar(
        select(func.count()).select_from(Instance).where(Instance.study_id == study.id)
    )
    modalities = sorted(
        m
        for m in session.scalars(
            select(Series.modality).where(Series.study_id == study.id).distinct()
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
        "first_received_at": _iso(study.created_at),
        "last_received_at": _iso(study.last_received_at),
    }


# -- 2. claim ---------------------------------------------------------------


def has_work(session: Session, now: datetime | None = None) -> bool:
    """A cheap read: is anything undispatched or due? (Spares idle hubs a write lock.)"""
    now = now or utcnow()
    undispatched = exists().where(OutboxEvent.dispatched_at.is_(None))  # type: ignore[union-attr]
    due = exists().where(Delivery.status == ST.PENDING, Delivery.next_attempt_at <= now)
    return bool(session.scalar(select(or_(undispatched, due))))


def claim(session: Session, policy: Policy, now: datetime | None = None) -> list[Claim]:
    """Lease up to ``policy.batch`` due deliveries, oldest first, keeping per-order order."""
    now = now or utcnow()
    earlier = aliased(Delivery)
    blocked_by_delivery = exists().where(
        earlier.source == Delivery.source,
        earlier.kind == Delivery.kind,
        earlier.order_id == Delivery.order_id,
        earlier.status == ST.PENDING,
        or_(
            earlier.outbox_event_id < Delivery.outbox_event_id,
            and_(earlier.outbox_event_id == Delivery.outbox_event_id, earlier.id < Delivery.id),
        ),
    )
    blocked_by_event = exists().where(
        OutboxEvent.order_id == Delivery.order_id,
        OutboxEvent.dispatched_at.is_(None),  # type: ignore[union-attr]
        OutboxEvent.id < Delivery.outbox_event_id,
    )
    rows = list(
        session.scalars(
            select(Delivery)
            .where(
                Delivery.status == ST.PENDING,
                Delivery.next_attempt_at <= now,
                ~blocked_by_delivery,
                ~blocked_by_event,
            )
            .order_by(Delivery.next_attempt_at, Delivery.id)
            .limit(policy.batch)
            .with_for_update(skip_locked=True, of=Delivery)
        )
    )
    targets: dict[str, Target | None] = {}
    out = []
    for d in rows:
        d.attempts += 1
        d.next_attempt_at = now + policy.lease
        if d.source not in targets:
            src = session.get(Source, d.source)
            targets[d.source] = (
                Target(
                    name=src.name,
                    hl7_profile=src.hl7_profile,
                    webhook_url=src.webhook_url,
                    webhook_secret=src.webhook_secret,
                    hl7_host=src.hl7_host,
                    hl7_port=src.hl7_port,
                )
                if src
                else None
            )
        out.append(
            Claim(
                id=d.id,  # type: ignore[arg-type]
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


# -- 3. settle --------------------------------------------------------------


def settle(
    session: Session, c: Claim, error: str | None, policy: Policy, final: bool = False
) -> str:
    """Write the outcome of one attempt; returns the new status."""
    return settle_many(session, [(c, error, final)], policy)[0]


def settle_many(
    session: Session, outcomes: list[tuple[Claim, str | None, bool]], policy: Policy
) -> list[str]:
    """Write the outcomes of a batch in one statement; returns each new status.

    An outcome is ``(claim, error or None, final)``. Only the holder of the
    current lease may settle (``attempts`` must still be the claimed number),
    so a late answer never overwrites a newer attempt or a manual retry.
    """
    if not outcomes:
        return []
    now = utcnow()
    rows, out = [], []
    for c, error, final in outcomes:
        if error is None:
            status, nxt = ST.DELIVERED, now
        elif final or c.attempts >= policy.max_attempts:
            status, nxt = ST.FAILED, now
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
    t = Delivery.__table__  # type: ignore[attr-defined]
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
    return out


# -- people: list and retry -------------------------------------------------


@dataclass(frozen=True)
class DeliveryFilter:
    source: str | None = None
    status: str | None = None
    order_id: int | None = None
    kind: str | None = None


def find(
    session: Session, flt: DeliveryFilter, *, limit: int = 50, cursor: str | None = None
) -> tuple[list[Delivery], str | None]:
    """Newest first (what an admin looks for is usually what just failed)."""
    stmt = select(Delivery).order_by(Delivery.id.desc())  # type: ignore[union-attr]
    for column in ("source", "status", "order_id", "kind"):
        value = getattr(flt, column)
        if value is not None:
            stmt = stmt.where(getattr(Delivery, column) == value)
    if cursor:
        stmt = stmt.where(Delivery.id < decode_cursor(cursor))
    limit = max(1, min(limit, MAX_LIMIT))
    rows = list(session.scalars(stmt.limit(limit + 1)))
    nxt = encode_cursor(rows[limit - 1].id) if len(rows) > limit else None  # type: ignore[arg-type]
    return rows[:limit], nxt


def get(session: Session, delivery_id: int) -> Delivery:
    row = session.get(Delivery, delivery_id)
    if row is None:
        raise NotFound(f"delivery {delivery_id} does not exist")
    return row


def retry(session: Session, delivery_id: int, actor: str) -> Delivery:
    """Send again now, under the same delivery id, with a fresh set of attempts."""
    row = session.scalar(select(Delivery).where(Delivery.id == delivery_id).with_for_update())
    if row is None:
        raise NotFound(f"delivery {delivery_id} does not exist")
    row.status = ST.PENDING
    row.attempts = 0
    row.next_attempt_at = utcnow()
    row.delivered_at = None
    session.flush()
    events.audit(session, actor, "delivery.retry", "delivery", delivery_id, {"uuid": row.uuid})
    return row


def to_out(row: Delivery) -> dict[str, Any]:
    return {
        "id": row.id,
        "delivery_id": row.uuid,
        "source": row.source,
        "kind": row.kind,
        "event": row.event_kind,
        "outbox_event_id": row.outbox_event_id,
        "order_id": row.order_id,
        "study_instance_uid": row.study_instance_uid,
        "status": row.status,
        "attempts": row.attempts,
        "next_attempt_at": as_utc(row.next_attempt_at) if row.status == ST.PENDING else None,
        "last_error": row.last_error,
        "created_at": as_utc(row.created_at),
        "delivered_at": as_utc(row.delivered_at),
        "payload": row.payload,
    }


def _iso(value: datetime | None) -> str | None:
    v = as_utc(value)
    return v.isoformat() if v else None


# -- the worker ---------------------------------------------------------------


@dataclass
class DeliveryWorker:
    """Dispatches and sends in a background thread of each ``vethub serve``.

    ``run_once`` does one round (dispatch everything due, then send leased
    batches until nothing is due) and returns how many deliveries it settled;
    ``start``/``stop`` run it every ``poll_seconds`` (and at once again when a
    round found work). Sends of one batch run in parallel: a batch never holds
    two deliveries of the same order and destination.
    """

    db: Any  # hub.db.Database
    settings: Settings
    senders: Mapping[str, Sender]
    policy: Policy = field(init=False)
    _stop: threading.Event = field(init=False, default_factory=threading.Event)
    _thread: threading.Thread | None = field(init=False, default=None)
    _pool: ThreadPoolExecutor = field(init=False)

    def __post_init__(self) -> None:
        self.policy = Policy.from_settings(self.settings)
        self._pool = ThreadPoolExecutor(
            self.settings.delivery_concurrency, thread_name_prefix="delivery-send"
        )

    def run_once(self, max_rounds: int = 20) -> int:
        settled = 0
        for _ in range(max_rounds):
            if self._stop.is_set():
                break
            with self.db.read_session() as s:
                if not has_work(s):
                    break
            while True:
                with self.db.session() as s:
                    if dispatch(s, self.settings.public_url, limit=500) == 0:
                        break
            with self.db.session() as s:
                batch = claim(s, self.policy)
            if not batch:
                break
            outcomes = list(self._pool.map(self._attempt, batch))
            results = [(c, e, f) for c, (e, f) in zip(batch, outcomes, strict=True)]
            with self.db.session() as s:
                statuses = settle_many(s, results, self.policy)
            for (c, error, _), status in zip(results, statuses, strict=True):
                if status != ST.DELIVERED:
                    log.warning(
                        "delivery attempt failed",
                        extra={
                            "delivery": c.uuid,
                            "kind": c.kind,
                            "attempt": c.attempts,
                            "status": status,
                            "error": error,
                        },
                    )
            settled += len(batch)
        return settled

    def _attempt(self, c: Claim) -> tuple[str | None, bool]:
        """Send one; ``(error or None, final)``. Never raises."""
        if self._stop.is_set():
            return "not sent: the hub was shutting down", False
        if c.target is None:
            return f"source {c.payload.get('source')!r} is no longer registered", True
        sender = self.senders.get(c.kind)
        if sender is None:
            return f"no sender for result kind {c.kind!r}", True
        try:
            sender(c.target, c)
        except DeliveryError as exc:
            return str(exc) or exc.__class__.__name__, False
        except Exception as exc:  # a bug or an unexpected library error: retry, visibly
            log.exception("delivery sender crashed", extra={"delivery": c.uuid})
            return f"internal error: {exc!r}", False
        return None, False

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                busy = self.run_once()
            except Exception:
                log.exception("delivery round failed; retrying")
                busy = 0
            if not busy:
                self._stop.wait(self.settings.delivery_poll_seconds)

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="deliveries", daemon=True)
            self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Finish the round in flight (sends are bounded by their timeouts), then return."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout if timeout is not None else 3 * self.policy.timeout_seconds)
            self._thread = None
        self._pool.shutdown(wait=False, cancel_futures=True)
