"""Prometheus metrics shared by every door (scraped at ``/metrics``)."""

from __future__ import annotations

import time

from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

HTTP_REQUESTS = Counter(
    "vethub_http_requests_total", "HTTP requests answered", ["method", "route", "status"]
)
HTTP_SECONDS = Histogram(
    "vethub_http_request_seconds", "HTTP request duration", ["method", "route"]
)
DICOM_REQUESTS = Counter(
    "vethub_dicom_requests_total", "DIMSE requests handled", ["service", "status"]
)
DICOM_SECONDS = Histogram("vethub_dicom_request_seconds", "DIMSE request duration", ["service"])
WORKLIST_ITEMS = Counter("vethub_worklist_items_returned_total", "Worklist items sent to devices")
HL7_MESSAGES = Counter("vethub_hl7_messages_total", "HL7 messages answered", ["type", "ack"])


class HttpMetrics:
    """Pure ASGI middleware: counts and times requests by route template."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            name = getattr(route, "path", None) or "unmatched"
            HTTP_REQUESTS.labels(scope["method"], name, str(status)).inc()
            HTTP_SECONDS.labels(scope["method"], name).observe(time.perf_counter() - start)
