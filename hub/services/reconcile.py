"""Attaching studies to orders after arrival, and undoing a wrong attachment.

Three ways a waiting study gets its order: a person reconciles it, an order
for its patient is placed or changed (``rematch_for_order``, in the order's
own transaction), or the timed job finds one (``rematch_waiting``). The
automatic ways use the same rules as on arrival and never guess.

The index is the truth and commits first; each function returns the header
rewrites its files need (``Rewrite``), which ``hub.archive.rewrite`` performs
after the commit. A rewrite that fails is reported by the caller and
recorded with ``record_unwritten``; calling reconcile again redoes it.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import Select, Table, bindparam, event, or_, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session
from sqlmodel import SQLModel, col

from hub.errors import Conflict
from hub.models import Order, OrderStatus, Study, utcnow
from hub.services import candidates, coercion, events, orders
from hub.services.studies import get, instance_paths

log = logging.getLogger("hub.studies")
S = OrderStatus
WAITING = ("no_match", "ambiguous")


@dataclass(frozen=True)
class Rewrite:
    """Header values one study's files must now carry (``None``: remove the attribute)."""

    study_instance_uid: str
    order_id: int | None
    actor: str
    paths: list[str]  # relative to the data directory
    values: dict[str, coercion.Value]


def reconcile(s: Session, study_instance_uid: str, order_id: int, actor: str) -> Rewrite:
    """Attach a study to an order by hand and correct its stored headers from the order.

    Calling it again for the same order redoes the header rewrite, so an
    interrupted or failed rewrite can be finished.

    The StudyInstanceUID is deliberately *not* rewritten to the order's: it is
    the study's identity here (index, file tree, viewer URL) and at the device
    and any other archive that already holds copies; the link to the order is
    ``order_id``, and PatientID/AccessionNumber in the headers now name it.
    """
    study = get(s, study_instance_uid)
    order = orders.get(s, order_id)
    if study.order_id is not None and study.order_id != order.id:
        raise Conflict(
            f"study {study_instance_uid} is attached to order {study.order_id}; detach it first",
            field="order_id",
        )
    if order.status in (S.CANCELLED, S.DISCONTINUED):
        raise Conflict(f"order {order.id} is {order.status}", field="order_id")
    previous = {"match_method": study.match_method, "unmatched_reason": study.unmatched_reason}
    study.held = False
    method = "manual" if study.match_method is None else study.match_method
    fixes = _attach(s, study, order, method=method, overwrite=True, reason="study reconciled")
    events.record(
        s,
        "study.reconciled",
        order_id=order.id,
        study_instance_uid=study_instance_uid,
        payload={"by": actor},
    )
    events.audit(
        s,
        actor,
        "reconcile",
        "study",
        study_instance_uid,
        {"order_id": order.id, "previous": previous, "original": study.received, "changes": fixes},
    )
    return _rewrite_for(s, study, order, actor, fixes)


def detach(s: Session, study_instance_uid: str, actor: str) -> Rewrite:
    """Undo a wrong attachment: the study returns to the queue with its received headers."""
    study = get(s, study_instance_uid)
    if study.order_id is None:
        raise Conflict(f"study {study_instance_uid} is not attached to an order", "order_id")
    old_order, old_method = study.order_id, study.match_method
    study.order_id = None
    study.match_method = None
    study.unmatched_reason = "no_match"
    study.held = True
    study.candidates = candidates.ranked(s, study, leave_out=old_order) or None
    events.record(
        s,
        "study.detached",
        order_id=old_order,
        study_instance_uid=study_instance_uid,
        payload={"by": actor, "match_method": old_method},
    )
    events.audit(
        s,
        actor,
        "detach",
        "study",
        study_instance_uid,
        {"order_id": old_order, "match_method": old_method},
    )
    return Rewrite(
        study_instance_uid, None, actor, instance_paths(s, study), dict(study.received or {})
    )


def rematch_waiting(
    s: Session, *, patient_day: bool, max_age_days: float = 7, limit: int = 200
) -> list[Rewrite]:
    """Try the match rules again for waiting studies: orders often arrive after
    the images (docs/domain.md §7.1). A study now matched by a rule is attached as
    on arrival; the others get fresh candidates. Conflicts and studies a person
    detached (``held``) are left to people.
    """
    since = utcnow() - timedelta(days=max_age_days)
    stmt = (
        _waiting().where(col(Study.created_at) >= since).order_by(col(Study.id).desc()).limit(limit)
    )
    return _rematch(s, list(s.scalars(stmt)), patient_day=patient_day)


def rematch_for_order(s: Session, order: Order) -> list[Rewrite]:
    """Match the waiting studies that may be this order's, in the order's transaction.

    Called when an order is placed or changed: a study that came first (images
    keyed in at the device, the order typed in later) is attached at once
    rather than at the timed job's next run. Only studies sharing the order's
    patient id, accession number or Study Instance UID are looked at, and the
    usual rules decide, so nothing is attached to a guessed patient.

    Runs only where the files can follow (``files_follow_orders``); elsewhere
    the timed job does it. A failure here never fails the order: it is logged
    and left to the job.
    """
    follow = _followers.get(s.get_bind())
    if follow is None:
        return []
    # Almost always nothing waits: one cached Core statement answers that,
    # and only a hit loads the studies (this runs for every order placed).
    ids = list(
        s.connection()
        .execute(
            _WAITING_FOR_ORDER,
            {
                "uid": order.study_instance_uid,
                "patient_id": order.patient_id.strip() or None,  # NULL matches nothing
                "accession": order.accession_number.strip() or None,
            },
        )
        .scalars()
    )
    if not ids:
        return []
    waiting = list(s.scalars(select(Study).where(col(Study.id).in_(ids)).order_by(col(Study.id))))
    try:
        with s.begin_nested():
            rewrites = _rematch(s, waiting, patient_day=follow.patient_day)
    except Exception:
        log.exception("re-match after an order change failed", extra={"order_id": order.id})
        return []
    if rewrites:
        _after_commit(s, lambda: follow.rewrite(rewrites))
    return rewrites


@dataclass(frozen=True)
class _Follower:
    patient_day: bool
    rewrite: Callable[[list[Rewrite]], None]


_followers: weakref.WeakKeyDictionary[object, _Follower] = weakref.WeakKeyDictionary()


def files_follow_orders(
    engine: Engine, *, patient_day: bool, rewrite: Callable[[list[Rewrite]], None]
) -> None:
    """Let ``rematch_for_order`` run on this database: ``rewrite`` corrects the
    files of studies it attached, after the order's transaction commits.

    A port rather than an import: the core knows no file format, and orders are
    placed from edges (REST, HL7) that hold only a session.
    """
    _followers[engine] = _Follower(patient_day, rewrite)


def still_attached(s: Session, rewrite: Rewrite) -> bool:
    """Whether the index (as committed) still ties the study to the rewrite's order."""
    found = s.scalars(
        select(col(Study.order_id)).where(
            col(Study.study_instance_uid) == rewrite.study_instance_uid
        )
    ).first()
    return found is not None and found == rewrite.order_id


def record_unwritten(s: Session, rewrite: Rewrite, failed: dict[str, str]) -> None:
    """Audit the files whose headers could not be corrected (``{path: error}``)."""
    events.audit(
        s,
        rewrite.actor,
        "rewrite_failed",
        "study",
        rewrite.study_instance_uid,
        {"order_id": rewrite.order_id, "values": rewrite.values, "failed": failed},
    )


_STUDIES: Table = SQLModel.metadata.tables[Study.__tablename__]
_WAITING_FOR_ORDER = select(_STUDIES.c.id).where(
    _STUDIES.c.order_id.is_(None),
    _STUDIES.c.held.is_(False),
    _STUDIES.c.unmatched_reason.in_(WAITING),
    or_(
        _STUDIES.c.study_instance_uid == bindparam("uid"),
        _STUDIES.c.patient_id == bindparam("patient_id"),
        _STUDIES.c.accession_number == bindparam("accession"),
    ),
)


def _waiting() -> Select[Study]:
    return select(Study).where(
        col(Study.order_id).is_(None),
        col(Study.held).is_(False),
        col(Study.unmatched_reason).in_(WAITING),
    )


def _rematch(s: Session, waiting: list[Study], *, patient_day: bool) -> list[Rewrite]:
    out: list[Rewrite] = []
    for study in waiting:
        m = candidates.decide(s, candidates.facts_of(study), patient_day=patient_day)
        if m.order_id is None:
            fresh = [c.as_dict() for c in m.candidates] or None
            if (m.reason, fresh) != (study.unmatched_reason, study.candidates):
                study.unmatched_reason, study.candidates = m.reason, fresh
            continue
        order = orders.get(s, m.order_id)
        fixes = _attach(s, study, order, method=m.method, overwrite=False, reason="study matched")
        events.record(
            s,
            "study.reconciled",
            order_id=order.id,
            study_instance_uid=study.study_instance_uid,
            payload={"by": "rematch", "match_method": m.method},
        )
        events.audit(
            s,
            "hub:rematch",
            "reconcile",
            "study",
            study.study_instance_uid,
            {"order_id": order.id, "match_method": m.method, "changes": fixes},
        )
        out.append(_rewrite_for(s, study, order, "hub:rematch", fixes))
    return out


def _attach(
    s: Session, study: Study, order: Order, *, method: str | None, overwrite: bool, reason: str
) -> dict[str, dict[str, coercion.Value]]:
    """Tie the study to the order, start the order, and say what its headers must become."""
    study.order_id, study.match_method = order.id, method
    study.unmatched_reason, study.candidates = None, None
    if order.status == S.SCHEDULED:
        orders.transition(s, order, S.IN_PROGRESS, reason=reason)
    return coercion.corrections(coercion.target(order), study.received or {}, overwrite=overwrite)


def _rewrite_for(
    s: Session, study: Study, order: Order, actor: str, fixes: dict[str, dict[str, coercion.Value]]
) -> Rewrite:
    values = {k: v["to"] for k, v in fixes.items()}
    return Rewrite(study.study_instance_uid, order.id, actor, instance_paths(s, study), values)


def _after_commit(s: Session, then: Callable[[], None]) -> None:
    def run(_: Session) -> None:
        try:
            then()
        except Exception:
            log.exception("work after commit failed")

    event.listen(s, "after_commit", run, once=True)
