"""The console's router: every page group, and its static files (CSS, JS, vendored htmx)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from hub.console import audit, deliveries, devices, messages, orders, people, qc, queue, today
from hub.console.web import static_file

router = APIRouter(include_in_schema=False, tags=["console"])
router.include_router(today.router)
router.include_router(queue.router)
router.include_router(orders.router)
router.include_router(deliveries.router)
router.include_router(people.router)
router.include_router(devices.router)
router.include_router(audit.router)
router.include_router(qc.router)
router.include_router(messages.router)


@router.get("/console/static/{name:path}")
def static(name: str) -> Response:
    return static_file(name)
