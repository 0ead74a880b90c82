"""The partner side of ezyVet's SPI, hosted by the hub once per ezyVet source.

ezyVet calls these (pacs.html): ``POST accesstoken`` for a bearer token,
``GET modalities`` and ``GET species`` for its catalogue sync, ``POST
request`` whenever a PACS request is made, updated or disabled, and opens
``GET result`` in the vet's browser. All live under
``/adapters/ezyvet/{source}/``, outside ``/api/`` because ezyVet holds no
hub API key: it authenticates with the client id and secret the clinic typed
into its integration record, and every call but the token request (and the
portal, which a browser opens) carries the token it got for them.

ezyVet must hear 200 only once a request is safely stored, so the order is
committed before the answer is written; a body the hub cannot understand is
a 4xx whose ``detail`` names ezyVet's field. Each push (accepted or refused)
is counted in the source's status, with the last error and the codes the
hub did not know.
"""

from __future__ import annotations

import html
import json
import logging
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from adapters import source_state
from adapters.codes import CodeLists
from adapters.ezyvet import access, catalog, intake
from adapters.ezyvet.config import NAME, ROUTE, Config
from adapters.ezyvet.request import read, their_field
from hub.context import Hub
from hub.errors import Conflict, FieldError, Invalid, NotFound
from hub.models import OrderStatus, Source
from hub.services import links, modalities, orders, sealed, sources, studies

log = logging.getLogger("adapters.ezyvet")

router = APIRouter(prefix=ROUTE + "/{source}", tags=["ezyvet partner (SPI)"])
UNKNOWN_KEPT = 20  # unknown codes listed in the status


class Refused(Exception):
    """An answer other than 200, with ezyVet's error shape (``messages[]``) and ``detail``."""

    def __init__(self, status: int, text: str, kind: str = "request", fields: Any = None) -> None:
        super().__init__(text)
        self.status, self.text, self.kind, self.fields = status, text, kind, fields or []

    def response(self) -> JSONResponse:
        body = {
            "detail": self.text,
            "messages": [
                {"level": "error", "type": self.kind, "text": self.text, "fields": self.fields}
            ],
        }
        headers = {"WWW-Authenticate": "Bearer"} if self.status == 401 else None
        return JSONResponse(body, status_code=self.status, headers=headers)


@router.post("/accesstoken")
async def access_token(source: str, request: Request) -> Response:
    """ezyVet's client credentials for a bearer token (JSON as pacs.html shows; a form too)."""
    raw = await request.body()
    return await run_in_threadpool(_access_token, request, source, raw)


@router.get("/modalities")
def list_modalities(source: str, request: Request) -> Response:
    """``{"modalities": [{"name", "code"}]}``: what a request's modality code may be."""
    try:
        hub, _, cfg = _caller(request, source)
        with hub.db.read_session() as s:
            devices = [m.modality for m in modalities.list_all(s)]
        codes = _codes(hub)
        return JSONResponse({"modalities": catalog.modalities(cfg, codes, hub.mappings, devices)})
    except Refused as exc:
        _note_refusal(request.app.state.hub, source, "modalities", exc)
        return exc.response()


@router.get("/species")
def list_species(source: str, request: Request) -> Response:
    """``{"species": [{"name", "code", "breeds": [{"name", "code"}]}]}`` (shape: ours)."""
    try:
        hub, _, _ = _caller(request, source)
        return JSONResponse({"species": catalog.species(hub.mappings)})
    except Refused as exc:
        _note_refusal(request.app.state.hub, source, "species", exc)
        return exc.response()


@router.post("/request")
async def push_request(source: str, request: Request) -> Response:
    """A PACS request made, updated or disabled in ezyVet; 200 once the order is committed."""
    raw = await request.body()
    return await run_in_threadpool(_request, request, source, raw)


@router.get("/result")
def result_portal(source: str, request: Request) -> Response:
    """ezyVet's result link, opened in the vet's browser: the study's viewer (302), or a
    page saying the images have not arrived. No token: a browser opens it; the viewer
    asks for sign-in itself, and an id or client_id that does not fit is a plain 404."""
    hub: Hub = request.app.state.hub
    try:
        _, cfg = _source(hub, source)
    except Refused:
        return _page(404, "Not found", "This result link does not belong to this hub.")
    request_id = request.query_params.get(cfg.portal_request_param, "")
    client_id = request.query_params.get("client_id", "")
    if not request_id or not access.same(client_id, cfg.inbound_client_id):
        return _page(404, "Not found", "This result link does not belong to this hub.")
    with hub.db.read_session() as s:
        try:
            order = orders.find_by_placer(s, source, request_id)
        except NotFound:
            return _page(404, "Not found", "The hub has no imaging request with this id.")
        found = studies.of_order(s, order.id or 0)
        uid = found[-1].study_instance_uid if found else None
        status = order.status
    if uid is None and status in (OrderStatus.CANCELLED, OrderStatus.DISCONTINUED):
        return _page(200, "Request cancelled", f"Imaging request {request_id} was cancelled.")
    if uid is None:
        # No animal or owner names: anyone holding the link sees this page.
        return _page(
            200,
            "Images pending",
            f"The images for request {request_id} have not arrived yet. "
            "This page checks again every 30 seconds.",
            refresh=True,
        )
    return RedirectResponse(links.viewer_url(hub.settings.public_url, uid), status_code=302)


# -- the work of each route ---------------------------------------------------------


def _access_token(request: Request, source: str, raw: bytes) -> Response:
    hub: Hub = request.app.state.hub
    try:
        _, cfg = _source(hub, source)
        body = _credentials(raw, request.headers.get("content-type", ""))
        if body.get("grant_type") != "client_credentials":
            raise Refused(400, "grant_type must be client_credentials", "unsupported_grant_type")
        if not access.credentials_ok(
            str(body.get("client_id") or ""),
            str(body.get("client_secret") or ""),
            cfg.inbound_client_id,
            cfg.inbound_client_secret,
        ):
            raise Refused(401, "client_id or client_secret is not valid", "authentication")
        with hub.db.session() as s:
            row = sources.get(s, source)
            token = access.issue(row, hub.settings.secret_key, cfg.token_seconds)
            now = _now()
            state = row.kind_state or {}
            sources.set_state(s, source, **source_state.succeeded(state, now), token_issued_at=now)
    except Refused as exc:
        _note_refusal(hub, source, "accesstoken", exc)
        return exc.response()
    log.info("ezyVet token issued", extra={"source": source})
    return JSONResponse(
        {"access_token": token, "token_type": "Bearer", "expires_in": cfg.token_seconds},
        headers={"Cache-Control": "no-store"},
    )


def _request(request: Request, source: str, raw: bytes) -> Response:
    hub: Hub = request.app.state.hub
    request_id: str | None = None
    try:
        _, _, cfg = _caller(request, source)
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise Refused(400, f"body: not valid JSON ({exc})", "validation") from None
        codes = _codes(hub)
        try:
            req = read(body, cfg, codes, hub.mappings)
            request_id = req.request_id
            with hub.db.session() as s:
                done = intake.apply(s, source, req, hub.orders)
                _note_accepted(s, source, req.request_id, done, req.unknown)
                answer = _answer(req.request_id, done)
        except Invalid as exc:
            named = [FieldError(their_field(e.field, cfg), e.message) for e in exc.errors]
            text = "; ".join(f"{e.field}: {e.message}" for e in named)
            raise Refused(422, text, "validation", [e.field for e in named]) from None
        except Conflict as exc:
            raise Refused(409, str(exc), "conflict") from None
    except Refused as exc:
        _note_refusal(hub, source, "request", exc, request_id)
        return exc.response()
    if req.unknown:
        log.warning(
            "ezyVet codes not in the mappings, kept as text",
            extra={"source": source, "request_id": req.request_id, "unknown": req.unknown},
        )
    log.info("ezyVet request applied", extra={"source": source, **answer})
    return JSONResponse(answer)


def _answer(request_id: str, done: intake.Applied) -> dict[str, Any]:
    out: dict[str, Any] = {"id": request_id, "outcome": done.outcome}
    if done.order is not None:
        out |= {"accession_number": done.order.accession_number, "status": done.order.status}
    if done.note:
        out["note"] = done.note
    return out


# -- helpers -----------------------------------------------------------------------


def _source(hub: Hub, name: str) -> tuple[Source, Config]:
    """The ezyVet source ``name`` and its settings (secrets opened), or a 404."""
    with hub.db.read_session() as s:
        row = s.get(Source, name)
        if row is None or row.kind != NAME:
            raise Refused(404, f"no ezyVet source {name!r} on this hub", "not_found")
        try:
            cfg = Config.of(sources.kind_config(row, hub.settings.secret_key))
        except sealed.SealError as exc:
            log.error("ezyVet source credentials unreadable", extra={"source": name})
            raise Refused(503, str(exc), "configuration") from None
        s.expunge(row)
    return row, cfg


def _caller(request: Request, name: str) -> tuple[Hub, Source, Config]:
    """The source, once the call's bearer token is one the hub issued for it."""
    hub: Hub = request.app.state.hub
    row, cfg = _source(hub, name)
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Refused(401, "an access token is required: Authorization: Bearer <token>", "auth")
    if not access.valid(row, hub.settings.secret_key, token.strip()):
        raise Refused(401, "the access token is not valid or has expired", "authentication")
    return hub, row, cfg


def _credentials(raw: bytes, content_type: str) -> dict[str, Any]:
    if "application/x-www-form-urlencoded" in content_type:
        form = parse_qs(raw.decode("utf-8", "replace"))
        return {k: v[0] for k, v in form.items()}
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise Refused(400, "body: not valid JSON", "validation") from None
    if not isinstance(body, dict):
        raise Refused(400, "body: must be a JSON object", "validation")
    return body


def _codes(hub: Hub) -> CodeLists:
    return CodeLists.load("ezyvet", hub.settings.mappings_dir)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _note_accepted(
    s: Session, source: str, request_id: str, done: intake.Applied, unknown: list[str]
) -> None:
    state = dict(sources.get(s, source).kind_state or {})
    kept = [u for u in state.get("unknown_codes", []) if u not in unknown] + unknown
    now = _now()
    sources.set_state(
        s,
        source,
        **source_state.succeeded(state, now),
        requests_accepted=int(state.get("requests_accepted", 0)) + 1,
        last_request_at=now,
        last_request_id=request_id,
        last_outcome=done.outcome if not done.note else f"{done.outcome}: {done.note}",
        unknown_codes=kept[-UNKNOWN_KEPT:],
    )


def _note_refusal(
    hub: Hub, source: str, call: str, exc: Refused, request_id: str | None = None
) -> None:
    """Count a refused call in the source's status (its own transaction: the
    request's was rolled back) and log it."""
    log.warning(
        "ezyVet call refused",
        extra={"source": source, "call": call, "status": exc.status, "detail": exc.text},
    )
    if exc.status == 404:
        return  # no such source: nowhere to note it
    try:
        with hub.db.session() as s:
            row = s.get(Source, source)
            if row is None:
                return
            state = dict(row.kind_state or {})
            what = f"{call} {request_id}" if request_id else call
            sources.set_state(
                s,
                source,
                requests_refused=int(state.get("requests_refused", 0)) + 1,
                **source_state.failed(f"{what}: HTTP {exc.status}: {exc.text}", _now()),
            )
    except Exception:
        log.exception("could not note a refused ezyVet call", extra={"source": source})


def _page(status: int, title: str, text: str, refresh: bool = False) -> HTMLResponse:
    meta = '<meta http-equiv="refresh" content="30">' if refresh else ""
    body = (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8">{meta}'
        f"<title>{html.escape(title)}</title></head><body><h1>{html.escape(title)}</h1>"
        f"<p>{html.escape(text)}</p></body></html>"
    )
    return HTMLResponse(body, status_code=status, headers={"Cache-Control": "no-store"})
