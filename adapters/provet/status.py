"""Results back to Provet Cloud: the order's status and the study's viewer link,
written by PATCH on the worklist item or its referral (delivery kind
``provet-status``, listed in the source's ``results``).

howto_ris.html says these resources are how an integration updates the
referral's status, and both accept PATCH; the field names and values are
not published, so they are the source's ``status_field``, ``link_field`` and
``status_values`` (a null field is left out). 429 waits for ``Retry-After``,
401 renews the token once (api.py). A worklist item Provet no longer has is
reported in the source's status and not retried: nothing is left to update.
"""

from __future__ import annotations

import logging
from typing import Any

from adapters import source_state
from adapters.provet import config
from adapters.provet.api import ApiPool, Missing
from adapters.provet.fetch import REFERRAL, WORKLIST
from hub.models import utcnow
from hub.services import sources
from hub.services.deliveries.kinds import (
    Claim,
    DeliveryError,
    DeliveryKind,
    Sender,
    SendOptions,
    Target,
)

log = logging.getLogger("adapters.provet")

NAME = "provet-status"
EVENTS = frozenset(
    {
        "order.in_progress",
        "order.completed",
        "order.cancelled",
        "order.discontinued",
        "study.received",
        "study.reconciled",
    }
)


def patch_body(cfg: dict[str, Any], payload: dict[str, Any]) -> dict[str, Any]:
    """What to write: the configured status value and the viewer link, when known."""
    body: dict[str, Any] = {}
    status = (payload.get("order") or {}).get("status")
    value = (cfg.get("status_values") or {}).get(status)
    if cfg.get("status_field") and value is not None:
        body[cfg["status_field"]] = value
    if cfg.get("link_field") and payload.get("viewer_url"):
        body[cfg["link_field"]] = payload["viewer_url"]
    return body


class StatusSender:
    def __init__(self, options: SendOptions) -> None:
        self.options = options
        self.pool = ApiPool(options.timeout, options.tls)

    def __call__(self, target: Target, claim: Claim) -> None:
        settings = self.options.settings
        if target.kind != config.NAME or settings is None:
            raise DeliveryError(f"source {target.name!r} is not a provet source")
        cfg = config.DEFAULTS | target.config(settings.secret_key)
        body = patch_body(cfg, claim.payload)
        worklist_id = str((claim.payload.get("order") or {}).get("placer_order_number") or "")
        if not body or not worklist_id:
            return  # nothing this source wants written for this event
        api = self.pool.get(cfg)
        url = api.url(worklist_id, WORKLIST)
        try:
            if cfg.get("target") == "referral":
                worklist = api.get(url)
                names = config.field_names(cfg)
                ref = (
                    worklist.get(names["worklist_referral"]) if isinstance(worklist, dict) else None
                )
                if isinstance(ref, dict):
                    ref = ref.get("url") or ref.get("id")
                if ref in (None, ""):
                    raise DeliveryError(f"worklist {worklist_id} names no referral to update")
                url = api.url(ref, REFERRAL if str(ref).isdigit() else None)
            api.patch(url, body)
        except Missing:
            self._note(target.name, worklist_id, "gone from Provet; result not written")
            return
        except DeliveryError as exc:
            self._note(target.name, worklist_id, None, f"result for worklist {worklist_id}: {exc}")
            raise
        self._note(target.name, worklist_id, f"wrote {sorted(body)}")

    def _note(self, source: str, worklist_id: str, what: str | None, error: str = "") -> None:
        """The outcome (``what``), or the fault of a failed attempt, in the source's status."""
        db = self.options.db
        if db is None:
            return
        at = utcnow().isoformat()
        try:
            with db.session() as s:
                if error:
                    sources.set_state(s, source, **source_state.failed(error, at))
                    return
                state = sources.get(s, source).kind_state or {}
                sources.set_state(
                    s,
                    source,
                    **source_state.succeeded(state, at),
                    last_result={"at": at, "worklist_id": worklist_id, "outcome": what},
                )
        except Exception:
            log.exception("cannot record a provet result", extra={"source": source})


def _sender(options: SendOptions) -> Sender:
    return StatusSender(options)


KIND = DeliveryKind(NAME, EVENTS, _sender, source_kind=config.NAME)
