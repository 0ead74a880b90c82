"""The job a Provet webhook leaves behind: read the worklist item, then create,
update or cancel its order (delivery kind ``provet-pull``).

It runs in the delivery worker, so Provet's own retries (anything but 200,
up to 10 times) never wait on Provet's API: the webhook is answered as soon
as this job is stored, and the job retries with backoff (a 429's
``Retry-After`` honoured) and shows its last error in the deliveries view.

The job always reads the *current* state, whatever the trigger said: a
duplicate or late "updated" applies the same state again (one order, no
change), a worklist item Provet no longer has (404) cancels its order, and an
order that is already closed is left alone. Orders carry the source's name
and the worklist id as placer number.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from pydantic import ValidationError
from sqlalchemy.orm import Session

from adapters import source_state
from adapters.codes import CodeLists
from adapters.provet import config
from adapters.provet.api import ApiPool
from adapters.provet.fetch import fetch
from adapters.provet.mapping import Mapped, order_request
from hub.errors import Conflict, HubError, Invalid, NotFound
from hub.mappings import load_mappings
from hub.models import OrderStatus, utcnow
from hub.schemas import OrderIn
from hub.services import orders, sources
from hub.services.deliveries.kinds import (
    Claim,
    DeliveryError,
    DeliveryKind,
    Sender,
    SendOptions,
    Target,
)
from hub.services.orders import OrderContext

log = logging.getLogger("adapters.provet")

NAME = "provet-pull"
EVENT = "provet.worklist"
S = OrderStatus


def apply(
    session: Session, source: str, worklist_id: str, mapped: Mapped | None, ctx: OrderContext
) -> str:
    """Bring the order of ``worklist_id`` to Provet's state; returns what was done."""
    try:
        existing = orders.find_by_placer(session, source, worklist_id)
    except NotFound:
        existing = None
    if mapped is None:
        reason = "deleted in Provet Cloud"
        if existing is None:
            return "not in Provet and no order: nothing to do"
        assert existing.id is not None
        if existing.status == S.SCHEDULED:
            orders.cancel(session, existing.id, reason=reason)
            return "cancelled"
        if existing.status == S.IN_PROGRESS:
            orders.discontinue(session, existing.id, reason=reason)
            return "discontinued"
        return f"not in Provet; order already {existing.status}"
    if existing is None:
        try:
            req = OrderIn.model_validate(mapped.request)
        except ValidationError as exc:
            raise orders.invalid_from(exc) from None
        orders.place(session, req, ctx)
        return "created"
    assert existing.id is not None
    if existing.status not in S.OPEN:
        return f"order already {existing.status}; change not applied"
    before = existing.version
    patch = {k: v for k, v in mapped.request.items() if k not in orders.IMMUTABLE}
    after = orders.update(session, existing.id, patch, ctx)
    return "updated" if after.version != before else "unchanged"


class Puller:
    """The ``provet-pull`` sender: one per delivery worker."""

    def __init__(self, options: SendOptions) -> None:
        self.options = options
        self.pool = ApiPool(options.timeout, options.tls)
        self._ctx: tuple[OrderContext, CodeLists] | None = None
        self._lock = threading.Lock()

    def context(self) -> tuple[OrderContext, CodeLists]:
        """Vocabularies, loaded at the first job (not for every worker that never pulls)."""
        settings = self.options.settings
        assert settings is not None
        with self._lock:
            if self._ctx is None:
                ctx = OrderContext(mappings=load_mappings(settings.mappings_dir), tz=settings.tz)
                self._ctx = (ctx, CodeLists.load("provet", settings.mappings_dir))
            return self._ctx

    def __call__(self, target: Target, claim: Claim) -> None:
        db, settings = self.options.db, self.options.settings
        if db is None or settings is None:
            raise DeliveryError("provet-pull needs the hub's database")
        worklist_id = str(claim.payload.get("worklist_id") or "")
        try:
            if target.kind != config.NAME:
                raise DeliveryError(f"source {target.name!r} is no longer of kind provet")
            ctx, codes = self.context()
            cfg = config.DEFAULTS | target.config(settings.secret_key)
            deleted = claim.payload.get("trigger") == "deleted"
            got = None if deleted else fetch(self.pool.get(cfg), worklist_id, cfg)
            mapped = order_request(got, target.name, codes, cfg) if got is not None else None
            with db.session() as s:
                outcome = apply(s, target.name, worklist_id, mapped, ctx)
                _record(s, target.name, worklist_id, outcome, mapped)
        except (DeliveryError, HubError) as exc:
            why = str(exc) if isinstance(exc, DeliveryError) else _core_error(exc)
            _failed(db, target.name, worklist_id, why)
            if isinstance(exc, DeliveryError):
                raise
            raise DeliveryError(why) from None
        log.info(
            "provet worklist applied",
            extra={"source": target.name, "worklist_id": worklist_id, "outcome": outcome},
        )
        if mapped is not None and mapped.unknown:
            log.warning(
                "provet codes not in mappings/vendors/provet.yaml, kept as text",
                extra={"source": target.name, "unknown": mapped.unknown},
            )


def _core_error(exc: HubError) -> str:
    if isinstance(exc, Invalid | Conflict):
        return f"the hub refused the order: {exc}"
    return f"{type(exc).__name__}: {exc}"


def _record(
    session: Session, source: str, worklist_id: str, outcome: str, mapped: Mapped | None
) -> None:
    state = sources.get(session, source).kind_state or {}
    at = utcnow().isoformat()
    values: dict[str, Any] = {
        **source_state.succeeded(state, at),
        "last_pull_at": at,
        "last_pull": {"worklist_id": worklist_id, "outcome": outcome},
        "pulls_applied": int(state.get("pulls_applied") or 0) + 1,
    }
    if mapped is not None and mapped.unknown:
        values["unknown_codes"] = {"worklist_id": worklist_id, "codes": mapped.unknown}
    sources.set_state(session, source, **values)


def _failed(db: Any, source: str, worklist_id: str, why: str) -> None:
    """The failure in the source's status too (the delivery row has it as last_error)."""
    at = utcnow().isoformat()
    try:
        with db.session() as s:
            state = sources.get(s, source).kind_state or {}
            sources.set_state(
                s,
                source,
                **source_state.failed(f"pull of worklist {worklist_id}: {why}", at),
                pull_failures=int(state.get("pull_failures") or 0) + 1,
            )
    except NotFound:
        pass
    except Exception:
        log.exception("cannot record a provet failure", extra={"source": source})


def _sender(options: SendOptions) -> Sender:
    return Puller(options)


KIND = DeliveryKind(NAME, frozenset(), _sender, source_kind=config.NAME)
