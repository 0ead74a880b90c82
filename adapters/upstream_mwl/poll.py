"""Polling an upstream worklist and keeping its source's orders in step with it.

Each item is an order of the source, found by its placer number (the item's
RequestedProcedureID, else its AccessionNumber): a new item places one, a
changed item updates it, and an open order whose item is gone from the list
is cancelled, unless a study has arrived for it or it is in progress (then
it is kept, and counted). A poll that cannot read the whole list changes no
order; either way the source's ``status`` says what happened.

Each item is applied in a savepoint of its own, so one bad item (an
identifier too long, an accession another source already uses) is refused
and reported while the others go in.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from pydantic import ValidationError
from pydicom.dataset import Dataset
from sqlalchemy import select
from sqlalchemy.orm import Session
from sqlmodel import col

from adapters import source_state
from adapters.codes import CodeLists
from adapters.upstream_mwl import items as item_reader
from adapters.upstream_mwl.config import Upstream
from adapters.upstream_mwl.scu import PollFailed, find
from hub.context import Hub
from hub.errors import Conflict, Invalid, NotFound
from hub.models import Order, OrderStatus, Source, utcnow
from hub.models.studies import Study
from hub.schemas import OrderIn
from hub.services import orders, sources
from hub.services.orders import SENDER_IDS, OrderContext

log = logging.getLogger("adapters.upstream_mwl")

NAME = "upstream-mwl"
GONE = "gone from the upstream worklist"
# How many refusals, warnings and unknown codes the status lists (counts are complete).
SHOWN = 20
Finder = Callable[[Upstream, date], list[Dataset]]


@dataclass
class Outcome:
    """What one poll did to the source's orders."""

    items: int = 0
    placed: int = 0
    updated: int = 0
    unchanged: int = 0
    cancelled: int = 0
    kept: int = 0
    refused: int = 0
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    unknown: dict[str, set[str]] = field(default_factory=dict)

    def refuse(self, placer: str | None, why: str) -> None:
        self.refused += 1
        self.errors.append(f"{placer or '(no placer number)'}: {why}")

    def state(self) -> dict[str, Any]:
        return {
            "last_result": "ok",
            "items": self.items,
            "placed": self.placed,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "cancelled": self.cancelled,
            "kept": self.kept,
            "refused": self.refused,
            "errors": self.errors[:SHOWN],
            "warnings": self.warnings[:SHOWN],
            "unknown_codes": {k: sorted(v)[:SHOWN] for k, v in sorted(self.unknown.items())},
        }


def apply(
    session: Session,
    source: str,
    up: Upstream,
    answers: list[Dataset],
    ctx: OrderContext,
    codes: CodeLists,
) -> Outcome:
    """Make the source's orders match ``answers`` (the whole upstream list)."""
    out = Outcome(items=len(answers))
    wanted: dict[str, OrderIn] = {}
    seen: set[str] = set()
    for answer in answers:
        item = item_reader.read(answer, source, up, codes, ctx.mappings)
        for name, found in item.unknown.items():
            out.unknown.setdefault(name, set()).update(found)
        out.warnings += [f"{item.placer}: {w}" for w in item.warnings]
        if not item.placer:
            out.refuse(None, "the item has neither RequestedProcedureID nor AccessionNumber")
            continue
        if item.placer in seen:
            out.warnings.append(f"{item.placer}: another item of the same procedure; first kept")
            continue
        seen.add(item.placer)
        try:
            wanted[item.placer] = OrderIn.model_validate(item.body)
        except ValidationError as exc:
            out.refuse(item.placer, str(orders.invalid_from(exc)))
    existing = _orders(session, source, seen)
    for placer, req in wanted.items():
        try:
            with session.begin_nested():
                _apply_one(session, existing.get(placer), req, ctx, out)
        except (Invalid, Conflict, NotFound) as exc:
            out.refuse(placer, str(exc))
    _retire(session, source, seen, out)
    return out


def _apply_one(
    session: Session, order: Order | None, req: OrderIn, ctx: OrderContext, out: Outcome
) -> None:
    if order is None:
        orders.place(session, req, ctx)
        out.placed += 1
        return
    if order.status == OrderStatus.CANCELLED:
        out.refuse(req.placer_order_number, "listed again upstream, but its order is cancelled")
        return
    if order.status not in OrderStatus.OPEN:
        out.unchanged += 1
        return
    patch = req.model_dump(mode="json")
    # Absent upstream: the hub's own stays (its identifiers; the start time it
    # took as "now" when the item had none, else every poll would move it).
    for name in (*SENDER_IDS, "scheduled_start"):
        if patch.get(name) is None:
            patch.pop(name, None)
    version = order.version
    orders.update(session, _id(order), patch, ctx)
    if order.version != version:
        out.updated += 1
    else:
        out.unchanged += 1


def _orders(session: Session, source: str, placers: set[str]) -> dict[str, Order]:
    if not placers:
        return {}
    stmt = select(Order).where(
        col(Order.source) == source, col(Order.placer_order_number).in_(placers)
    )
    return {o.placer_order_number: o for o in session.scalars(stmt)}


def _retire(session: Session, source: str, seen: set[str], out: Outcome) -> None:
    """Cancel the open orders whose item is gone, unless a study came or work began."""
    stmt = select(Order).where(col(Order.source) == source, col(Order.status).in_(OrderStatus.OPEN))
    gone = [o for o in session.scalars(stmt) if o.placer_order_number not in seen]
    if not gone:
        return
    ids = [_id(o) for o in gone]
    with_study = set(
        session.scalars(select(col(Study.order_id)).where(col(Study.order_id).in_(ids)).distinct())
    )
    for order in gone:
        if order.status != OrderStatus.SCHEDULED or order.id in with_study:
            out.kept += 1
            continue
        orders.cancel(session, _id(order), reason=GONE)
        out.cancelled += 1


def poll(hub: Hub, name: str, finder: Finder = find) -> Outcome | None:
    """Poll source ``name`` once; its status records the outcome (None: the poll failed)."""
    with hub.db.read_session() as s:
        up = Upstream.of(sources.kind_config(sources.get(s, name), hub.settings.secret_key))
    started = time.monotonic()
    at = utcnow().isoformat()
    try:
        answers = finder(up, hub.orders.now().date())
    except PollFailed as exc:
        log.warning("upstream worklist poll failed", extra={"source": name, "error": str(exc)})
        _failed(hub, name, at, str(exc))
        return None
    try:
        codes = CodeLists.load(item_reader.VENDOR, hub.settings.mappings_dir)
        with hub.db.session() as s:
            out = apply(s, name, up, answers, hub.orders, codes)
            ms = round((time.monotonic() - started) * 1000)
            before = sources.get(s, name).kind_state or {}
            sources.set_state(
                s,
                name,
                **out.state(),
                **source_state.succeeded(before, at),
                last_poll_at=at,
                failures_in_a_row=0,
                ms=ms,
            )
    except NotFound:
        raise
    except Exception as exc:  # nothing applied (rolled back); say so where the admin looks
        log.exception("upstream worklist items could not be applied", extra={"source": name})
        _failed(hub, name, at, f"internal error applying the items: {type(exc).__name__}: {exc}")
        return None
    log.info(
        "upstream worklist polled",
        extra={
            "source": name,
            "items": out.items,
            "placed": out.placed,
            "updated": out.updated,
            "cancelled": out.cancelled,
            "refused": out.refused,
        },
    )
    if out.refused or out.unknown:
        log.warning(
            "upstream worklist items refused or with unknown codes",
            extra={"source": name, "errors": out.errors[:SHOWN], "unknown": sorted(out.unknown)},
        )
    return out


def _failed(hub: Hub, name: str, at: str, error: str) -> None:
    with hub.db.session() as s:
        failures = int((sources.get(s, name).kind_state or {}).get("failures_in_a_row", 0))
        sources.set_state(
            s,
            name,
            last_poll_at=at,
            last_result="failed",
            **source_state.failed(error, at),
            failures_in_a_row=failures + 1,
        )


def _id(order: Order) -> int:
    assert order.id is not None
    return order.id


class Poller:
    """The hub's timed job: polls each upstream-mwl source once its ``interval_s`` is up."""

    def __init__(self, hub: Hub, finder: Finder = find) -> None:
        self.hub = hub
        self.finder = finder
        self.last: dict[str, float] = {}  # source -> monotonic time of its last poll

    def tick(self) -> list[str]:
        """Poll the sources that are due; returns their names."""
        with self.hub.db.read_session() as s:
            rows = s.scalars(select(Source).where(col(Source.kind) == NAME)).all()
            due = [
                r.name
                for r in rows
                if time.monotonic() - self.last.get(r.name, float("-inf"))
                >= int((r.kind_settings or {}).get("interval_s", 60))
            ]
        for name in due:
            self.last[name] = time.monotonic()
            try:
                poll(self.hub, name, self.finder)
            except NotFound:  # deleted meanwhile
                self.last.pop(name, None)
            except Exception:
                log.exception("upstream worklist poll crashed", extra={"source": name})
        return due
