"""Prometheus metrics shared by every door (scraped at ``/metrics``).

Counters and histograms are counted as things happen; the state an IT person
alerts on (delivery backlog, waiting studies, worklist size, device contact)
is read from the database at scrape time by ``DatabaseGauges``. Every metric
is listed in docs/deployment.md "Monitoring".
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime

from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlmodel import col
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hub.db import Database
from hub.models import Delivery, Modality, Order, Study, as_utc
from hub.models.deliveries import DeliveryStatus
from hub.models.studies import UnmatchedReason
from hub.services.orders import on_worklist

log = logging.getLogger("hub.metrics")

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
# type: MSH-9 as ORM^O01 / OMI^O23 / ADT^Ann, else "other"; ack: the ACK code sent (AA, AE, AR).
HL7_MESSAGES = Counter(
    "vethub_hl7_messages_total", "HL7 messages answered, by type and ACK code", ["type", "ack"]
)


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


class DatabaseGauges(Collector):
    """Gauges read from the database when scraped, at most once per ``ttl`` seconds.

    Four grouped counts over indexed columns (deliveries by status, studies by
    unmatched reason, open orders, registered devices): 13 ms on SQLite with
    100,000 deliveries of which 2,000 pending or failed, so a scrape every 15 s
    costs little; several scrapers within ``ttl`` share one read.
    A database that does not answer gives ``vethub_database_up 0`` rather than a
    failed scrape, so the alert names the cause.
    """

    def __init__(
        self,
        db: Database,
        worklist_max_age_days: float,
        ttl: float = 5.0,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.db = db
        self.max_age_days = worklist_max_age_days
        self.ttl = ttl
        self.now = now
        self._lock = threading.Lock()
        self._read_at = -float("inf")
        self._families: list[Metric] = []

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            if time.monotonic() - self._read_at >= self.ttl:
                self._families = self._read()
                self._read_at = time.monotonic()
            return list(self._families)

    def _read(self) -> list[Metric]:
        up = GaugeMetricFamily(
            "vethub_database_up", "1 if the last read of the gauges below succeeded"
        )
        try:
            families = self._query()
        except Exception:
            log.warning("metrics: the database did not answer", exc_info=True)
            up.add_metric([], 0)
            return [up]
        up.add_metric([], 1)
        return [up, *families]

    def _query(self) -> list[Metric]:
        now = self.now()
        by_channel = ["source", "kind"]
        pending = GaugeMetricFamily(
            "vethub_deliveries_pending", "Deliveries waiting to be sent", labels=by_channel
        )
        failed = GaugeMetricFamily(
            "vethub_deliveries_failed",
            "Deliveries that gave up after their last retry (need a person)",
            labels=by_channel,
        )
        oldest = GaugeMetricFamily(
            "vethub_deliveries_oldest_pending_age_seconds",
            "Age of the oldest pending delivery",
            labels=by_channel,
        )
        waiting = GaugeMetricFamily(
            "vethub_studies_waiting",
            "Studies in the reconciliation queue, by why they were not matched",
            labels=["reason"],
        )
        worklist = GaugeMetricFamily(
            "vethub_worklist_orders",
            "Orders on the Modality Worklist now (open and within the age cut-off)",
        )
        contact = GaugeMetricFamily(
            "vethub_device_last_contact_timestamp_seconds",
            "When a registered device last queried the worklist, stored images or sent MPPS",
            labels=["ae_title", "activity"],
        )
        with self.db.read_session() as s:
            deliveries = s.execute(
                select(
                    col(Delivery.source),
                    col(Delivery.kind),
                    col(Delivery.status),
                    func.count(),
                    func.min(col(Delivery.created_at)),
                )
                .where(col(Delivery.status).in_([DeliveryStatus.PENDING, DeliveryStatus.FAILED]))
                .group_by(col(Delivery.source), col(Delivery.kind), col(Delivery.status))
            ).all()
            reasons = {
                str(reason): count
                for reason, count in s.execute(
                    select(col(Study.unmatched_reason), func.count())
                    .where(col(Study.unmatched_reason).is_not(None))
                    .group_by(col(Study.unmatched_reason))
                )
            }
            on_list = s.scalar(
                select(func.count()).select_from(Order).where(*on_worklist(now, self.max_age_days))
            )
            devices = s.execute(
                select(
                    col(Modality.ae_title),
                    col(Modality.last_query_at),
                    col(Modality.last_store_at),
                    col(Modality.last_report_at),
                )
            ).all()
        for source, kind, status, count, first in deliveries:
            if status == DeliveryStatus.PENDING:
                pending.add_metric([source, kind], count)
                age = (now - as_utc(first)).total_seconds() if first is not None else 0.0
                oldest.add_metric([source, kind], max(age, 0.0))
            else:
                failed.add_metric([source, kind], count)
        known = (UnmatchedReason.NO_MATCH, UnmatchedReason.AMBIGUOUS, UnmatchedReason.CONFLICT)
        for reason in dict.fromkeys([*known, *reasons]):  # the usual three even at 0
            waiting.add_metric([reason], reasons.get(reason, 0))
        worklist.add_metric([], on_list or 0)
        for ae_title, *times in devices:
            for activity, at in zip(("query", "store", "report"), times, strict=True):
                if at is not None:
                    contact.add_metric([ae_title, activity], as_utc(at).timestamp())
        return [pending, failed, oldest, waiting, worklist, contact]
