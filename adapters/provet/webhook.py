"""The URL Provet Cloud's webhooks call: ``POST /adapters/provet/{source}/{token}``.

Triggers 6, 7 and 8 (diagnostic imaging worklist created, updated, deleted)
carry ``diagnosticimagingworklist_id`` (and ``provet_id``, ``provet_url``),
form-encoded or JSON (webhooks.html, howto_ris.html). Provet retries
anything but 200, up to 10 times, so the hub answers 200 as soon as a
``provet-pull`` job is stored; the job reads the current state, so one URL
serves all three triggers. A hook may still end in ``/created``,
``/updated`` or ``/deleted`` (or 6/7/8): ``deleted`` cancels without asking
Provet again, the others are only recorded.

A wrong token answers 404 (as if nothing were here); a body without a usable
id answers 400 naming the fault. Both are logged and counted in the
source's status.
"""

from __future__ import annotations

import hmac
import json
import logging
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import select
from sqlalchemy.orm import Session
from sqlmodel import col

from adapters.provet import config, pull
from hub.context import Hub
from hub.errors import NotFound
from hub.models import Delivery, Source, utcnow
from hub.models.deliveries import DeliveryStatus
from hub.services import orders, sources
from hub.services.deliveries import dispatch

log = logging.getLogger("adapters.provet")

router = APIRouter(prefix=config.ROUTE, tags=["provet cloud"])
ID_FIELD = "diagnosticimagingworklist_id"
MAX_BODY = 16 * 1024


@router.post("/{source}/{token}", include_in_schema=True, summary="Provet Cloud webhook")
async def webhook(source: str, token: str, request: Request) -> dict[str, Any]:
    return await _receive(source, token, None, request)


@router.post("/{source}/{token}/{trigger}", summary="Provet Cloud webhook for one trigger")
async def webhook_trigger(
    source: str, token: str, trigger: str, request: Request
) -> dict[str, Any]:
    name = config.TRIGGERS.get(trigger, trigger)
    if name not in config.TRIGGERS.values():
        raise HTTPException(404, "Not Found")
    return await _receive(source, token, name, request)


async def _receive(
    source: str, token: str, trigger: str | None, request: Request
) -> dict[str, Any]:
    hub: Hub = request.app.state.hub
    raw = await request.body()
    status, answer = await run_in_threadpool(
        _store, hub, source, token, trigger, raw, request.headers.get("content-type", "")
    )
    if status != 200:
        raise HTTPException(status, answer["detail"])
    return answer


def _store(
    hub: Hub, source: str, token: str, trigger: str | None, raw: bytes, content_type: str
) -> tuple[int, dict[str, Any]]:
    """(HTTP status, answer); what was refused is recorded in the same commit."""
    with hub.db.session() as s:
        row = s.get(Source, source)
        if row is None or row.kind != config.NAME or not _token_ok(hub, row, token):
            log.warning("provet webhook with an unknown source or token", extra={"source": source})
            return 404, {"detail": "Not Found"}
        try:
            fields = _fields(raw, content_type)
            worklist_id = _worklist_id(fields)
            _same_clinic(fields, row)
        except ValueError as exc:
            detail = str(exc)
            _refused(s, source, detail)
            log.warning("provet webhook refused", extra={"source": source, "detail": detail})
            return 400, {"detail": detail}
        queued = _enqueue(s, source, worklist_id, trigger)
        state = row.kind_state or {}
        sources.set_state(
            s,
            source,
            last_webhook_at=utcnow().isoformat(),
            webhooks_received=int(state.get("webhooks_received") or 0) + 1,
        )
    log.info(
        "provet webhook",
        extra={"source": source, "worklist_id": worklist_id, "trigger": trigger, "job": queued},
    )
    return 200, {"accepted": True, "worklist_id": worklist_id, "job": queued}


def _token_ok(hub: Hub, row: Source, token: str) -> bool:
    rotation = int((row.kind_settings or {}).get("webhook_rotation") or 0)
    expected = config.webhook_token(hub.settings.secret_key, row.name, rotation)
    return expected is not None and hmac.compare_digest(expected.encode(), token.encode())


def _fields(raw: bytes, content_type: str) -> dict[str, Any]:
    if len(raw) > MAX_BODY:
        raise ValueError(f"body larger than {MAX_BODY} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("body is not UTF-8") from None
    stripped = text.strip()
    if "json" in content_type or stripped.startswith("{"):
        try:
            body = json.loads(stripped or "null")
        except json.JSONDecodeError as exc:
            raise ValueError(f"body is not valid JSON ({exc.msg} at {exc.pos})") from None
        if not isinstance(body, dict):
            raise ValueError("JSON body must be an object")
        return body
    parsed = parse_qs(text, keep_blank_values=True)
    return {k: v[-1] for k, v in parsed.items()}


def _worklist_id(fields: dict[str, Any]) -> str:
    value = fields.get(ID_FIELD)
    if value is None or value == "":
        raise ValueError(f"{ID_FIELD} is required")
    text = str(value).strip()
    if isinstance(value, bool) or not text.isdigit() or len(text) > 18 or int(text) <= 0:
        raise ValueError(f"{ID_FIELD} must be a positive whole number, not {str(value)[:40]!r}")
    return str(int(text))


def _same_clinic(fields: dict[str, Any], row: Source) -> None:
    """A hook from another organisation (provet_id given and different) is refused."""
    sent = fields.get("provet_id")
    mine = (row.kind_settings or {}).get("provet_id")
    if sent not in (None, "") and mine and str(sent).strip() != str(mine):
        raise ValueError(f"provet_id {str(sent)[:20]!r} is not this source's ({mine})")


def _enqueue(s: Session, source: str, worklist_id: str, trigger: str | None) -> str:
    """Store a pull job, unless one for the same item has not started yet (it will
    read the same current state): duplicates make one job, never two orders."""
    waiting = s.scalars(
        select(Delivery).where(
            col(Delivery.source) == source,
            col(Delivery.kind) == pull.NAME,
            col(Delivery.status) == DeliveryStatus.PENDING,
            col(Delivery.attempts) == 0,
        )
    )
    for row in waiting:
        same = (row.payload or {}).get("worklist_id") == worklist_id
        if same and (row.payload or {}).get("trigger") == trigger:
            return row.uuid
    try:
        order_id = orders.find_by_placer(s, source, worklist_id).id
    except NotFound:
        order_id = None
    payload = {"worklist_id": worklist_id, "trigger": trigger, "received_at": utcnow().isoformat()}
    job = dispatch.enqueue(s, source, pull.NAME, pull.EVENT, payload, order_id=order_id)
    return job.uuid


def _refused(s: Session, source: str, detail: str) -> None:
    state = sources.get(s, source).kind_state or {}
    sources.set_state(
        s,
        source,
        last_refused={"at": utcnow().isoformat(), "detail": detail},
        webhooks_refused=int(state.get("webhooks_refused") or 0) + 1,
    )
