"""Health for load balancers and supervisors: live (the process answers) and
ready (it can do its work: database reachable and migrated, doors up).

``/health`` stays what it always was (200 once the doors are up, 503 while
starting) for the scripts and probes already pointed at it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
from concurrent.futures import Future, InvalidStateError

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from hub.db import Database, head_revision

# A database that does not answer within this is "not ready", whatever the driver's timeout.
DATABASE_TIMEOUT_S = 2.0
# Checks still waiting on a hung database, at most. Each check has a thread of its
# own, so one stuck connection attempt does not hold back the checks after the
# database is back (as a single shared worker would); the cap stops a pile-up.
_WAITING = threading.BoundedSemaphore(8)

log = logging.getLogger("hub.api.health")
router = APIRouter(tags=["ops"])


@functools.cache
def _head() -> str | None:
    return head_revision()


def _schema_problem(db: Database) -> str | None:
    """Connect, read the schema revision; why it is not usable, or None."""
    current, head = db.revision(), _head()
    if current == head:
        return None
    if current is None:
        return "the database has no vethub schema: run `vethub db upgrade`"
    return f"the schema is at {current}, this vethub needs {head}: run `vethub db upgrade`"


def _check(db: Database) -> Future[str | None]:
    """``_schema_problem`` on a thread of its own; frees its ``_WAITING`` slot when done."""
    done: Future[str | None] = Future()

    def run() -> None:
        try:
            result = _schema_problem(db)
        except BaseException as exc:
            outcome: tuple[str | None, BaseException | None] = (None, exc)
        else:
            outcome = (result, None)
        finally:
            _WAITING.release()
        try:
            if outcome[1] is not None:
                done.set_exception(outcome[1])
            else:
                done.set_result(outcome[0])
        except InvalidStateError:  # the caller gave up waiting (and cancelled it)
            pass

    threading.Thread(target=run, name="ready-check", daemon=True).start()
    return done


async def _database_problem(db: Database) -> str | None:
    if not _WAITING.acquire(blocking=False):
        return "the database has not answered the last checks (they are still waiting)"
    try:
        return await asyncio.wait_for(asyncio.wrap_future(_check(db)), DATABASE_TIMEOUT_S)
    except TimeoutError:
        return f"the database did not answer within {DATABASE_TIMEOUT_S:g} s"
    except Exception as exc:
        reason = (str(getattr(exc, "orig", None) or exc).strip().splitlines() or [""])[0]
        return f"the database is unreachable: {type(exc).__name__}: {reason}"[:300]


@router.get("/health")
def health(request: Request) -> JSONResponse:
    if not request.app.state.ready:
        return JSONResponse({"status": "starting"}, status_code=503)
    return JSONResponse({"status": "ok"})


@router.get("/health/live")
def live() -> JSONResponse:
    """The process runs and answers HTTP; no I/O, so a slow database never restarts it."""
    return JSONResponse({"status": "live"})


@router.get("/health/ready")
async def ready(request: Request) -> JSONResponse:
    """Whether to send work here: 200, or 503 with ``not_ready`` naming each cause."""
    problems: dict[str, str] = {}
    if not request.app.state.ready:
        problems["doors"] = "the HTTP, DICOM and HL7 doors are not all up (starting or stopping)"
    database = await _database_problem(request.app.state.hub.db)
    if database:
        problems["database"] = database
    if problems:
        log.warning("not ready", extra={"not_ready": problems})
        return JSONResponse({"status": "not_ready", "not_ready": problems}, status_code=503)
    return JSONResponse({"status": "ready"})
