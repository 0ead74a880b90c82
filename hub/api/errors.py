"""One place where domain errors and bad requests become HTTP answers.

Every error body is JSON with ``detail`` as a sentence; validation failures
also carry ``errors``, one entry per field at fault.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError
from starlette.exceptions import HTTPException as StarletteHTTPException

from hub.errors import Conflict, Invalid, NotFound

log = logging.getLogger("hub.api")


def _field(loc: tuple | list) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:] or parts
    return ".".join(parts) or "body"


def _where(doc: object, pos: object) -> str:
    """``line L, column C`` of a character offset in the body (both from 1)."""
    if not isinstance(doc, str | bytes) or not isinstance(pos, int):
        return f"character {pos}"
    text = doc.decode("utf-8", "replace") if isinstance(doc, bytes) else doc
    line = text.count("\n", 0, pos) + 1
    column = pos - (text.rfind("\n", 0, pos) + 1) + 1
    return f"line {line}, column {column}"


def _not_json(request: Request, exc: RequestValidationError) -> JSONResponse | None:
    """415 for a body FastAPI did not parse as JSON because of its Content-Type: it
    hands such a body on as bytes, which then fails as "not an object" at ``body``."""
    if not any(
        tuple(e.get("loc", ())) == ("body",) and isinstance(e.get("input"), bytes)
        for e in exc.errors()
    ):
        return None
    sent = request.headers.get("content-type") or "none"
    message = f"the body must be JSON sent with Content-Type: application/json (got {sent})"
    log.info("rejected request", extra={"path": request.url.path, "status": 415, "detail": message})
    return JSONResponse(
        {"detail": f"body: {message}", "errors": [{"field": "body", "message": message}]},
        status_code=415,
    )


def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
    """Every invalid field at once (one entry each in ``errors``), not the first only."""
    refused = _not_json(request, exc)
    if refused is not None:
        return refused
    errors = []
    for err in exc.errors():
        message = err.get("msg", "invalid")
        field = _field(err.get("loc", ()))
        if err.get("type") == "json_invalid":
            at = _where(exc.body, (err.get("loc") or (None, None))[-1])
            message = f"malformed JSON at {at}: {err.get('ctx', {}).get('error', message)}"
            field = "body"
        errors.append({"field": field, "message": message})
    detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
    log.info("rejected request", extra={"path": request.url.path, "status": 422, "detail": detail})
    return JSONResponse({"detail": detail, "errors": errors}, status_code=422)


def _invalid(request: Request, exc: Invalid) -> JSONResponse:
    errors = [{"field": e.field, "message": e.message} for e in exc.errors]
    log.info(
        "rejected request", extra={"path": request.url.path, "status": 422, "detail": str(exc)}
    )
    return JSONResponse({"detail": str(exc), "errors": errors}, status_code=422)


def _not_found(request: Request, exc: NotFound) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=404)


def _conflict(request: Request, exc: Conflict) -> JSONResponse:
    log.info("conflict", extra={"path": request.url.path, "status": 409, "detail": str(exc)})
    return JSONResponse({"detail": str(exc), "field": exc.field}, status_code=409)


def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    if exc.status_code == 400 and detail == "There was an error parsing the body":
        # FastAPI's answer to a body that is not even text (e.g. not UTF-8).
        message = "malformed JSON: the body could not be decoded as UTF-8 JSON"
        return JSONResponse(
            {"detail": f"body: {message}", "errors": [{"field": "body", "message": message}]},
            status_code=422,
        )
    if exc.status_code == 404 and detail == "Not Found":
        detail = f"no such resource: {request.url.path}"
    elif exc.status_code == 405:
        detail = f"method {request.method} is not allowed on {request.url.path}"
    return JSONResponse({"detail": detail}, status_code=exc.status_code, headers=exc.headers)


def _data(request: Request, exc: DataError) -> JSONResponse:
    """A value the database cannot hold (a NUL character, a number out of range):
    the client's input, so a 422, on PostgreSQL as on SQLite."""
    reason = str(getattr(exc, "orig", exc)).splitlines()[0]
    detail = f"a value in the request cannot be stored or searched: {reason}"
    log.info("rejected request", extra={"path": request.url.path, "status": 422, "detail": detail})
    return JSONResponse(
        {"detail": detail, "errors": [{"field": "request", "message": reason}]}, status_code=422
    )


def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled error", extra={"path": request.url.path}, exc_info=exc)
    return JSONResponse({"detail": "internal error; see the hub's log"}, status_code=500)


def install(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation)  # type: ignore[arg-type]
    app.add_exception_handler(Invalid, _invalid)  # type: ignore[arg-type]
    app.add_exception_handler(NotFound, _not_found)  # type: ignore[arg-type]
    app.add_exception_handler(Conflict, _conflict)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http)  # type: ignore[arg-type]
    app.add_exception_handler(DataError, _data)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _unexpected)
