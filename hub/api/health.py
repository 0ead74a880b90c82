"""Health for load balancers and supervisors: live (the process answers) and
ready (it can do its work: database reachable and migrated, doors up).

``/health`` stays what it always was (200 once the doors are up, 503 while
starting) for the scripts and probes already pointed at it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from concurrent.futures import ThreadPoolExecutor

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from hub.db import Database, head_revision

# A database that does not answer within this is "not ready", whatever the driver's timeout.
DATABASE_TIMEOUT_S = 2.0
# One probe thread: a hung connection attempt makes later probes time out, not pile up threads.
_probe = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ready-probe")

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


async def _database_problem(db: Database) -> str | None:
    loop = asyncio.get_running_loop()
    try:
        return await asyncio.wait_for(
            loop.run_in_executor(_probe, _schema_problem, db), DATABASE_TIMEOUT_S
        )
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
