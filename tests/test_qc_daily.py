"""The daily ``qc.daily`` event: written once a day after 07:00 local, however many
hub processes run the job, and delivered as a signed webhook to the sources that
subscribe (HL7 kinds cannot express it and skip it)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, date, datetime

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlmodel import col

from hub.context import Hub
from hub.jobs import Jobs
from hub.models import Delivery, OutboxEvent
from hub.serve import delivery_kinds
from hub.services import qc, sources
from hub.services.deliveries.worker import DeliveryWorker
from tests.delivery_receivers import MllpReceiver, WebhookReceiver
from tests.factories import rex

SECRET = "s3cret-s3cret-s3cret"


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    r = WebhookReceiver(SECRET)
    yield r
    r.close()


@pytest.fixture
def mllp() -> Iterator[MllpReceiver]:
    r = MllpReceiver()
    yield r
    r.close()


def daily_events(hub: Hub) -> list[OutboxEvent]:
    with hub.db.read_session() as s:
        return list(
            s.scalars(select(OutboxEvent).where(col(OutboxEvent.kind) == "qc.daily").order_by("id"))
        )


def local(hub: Hub, text: str) -> datetime:
    """A wall-clock time in the hub's zone, as an aware datetime."""
    return datetime.fromisoformat(text).astimezone(hub.settings.tz)


def test_qc_daily_is_a_source_event_but_not_a_default() -> None:
    assert "qc.daily" in sources.EVENTS
    assert "qc.daily" not in sources.DEFAULT_EVENTS
    kinds = {k.name: k for k in delivery_kinds()}
    assert "qc.daily" in kinds["webhook"].events
    assert "qc.daily" not in kinds["hl7-oru"].events
    assert "qc.daily" not in kinds["hl7-orm-status"].events


def test_written_once_after_seven_local_with_yesterdays_counts(
    hub: Hub, client: TestClient
) -> None:
    body = rex(scheduled_start="2026-11-27T09:00:00")  # open, no images: missing on the 28th
    assert client.post("/api/v1/orders", json=body).status_code == 201
    jobs = Jobs(hub)
    assert jobs.write_qc_daily(now=local(hub, "2026-11-29T06:59:00")) is None
    assert daily_events(hub) == []

    assert jobs.write_qc_daily(now=local(hub, "2026-11-29T07:00:30")) == date(2026, 11, 28)
    assert jobs.write_qc_daily(now=local(hub, "2026-11-29T07:01:30")) is None
    assert Jobs(hub).write_qc_daily(now=local(hub, "2026-11-29T18:00:00")) is None  # a restart
    (event,) = daily_events(hub)
    assert event.order_id is None
    payload = event.payload or {}
    assert payload["date"] == "2026-11-28"
    assert payload["counts"]["missing_studies"] == 1
    assert set(payload["counts"]) == set(qc.QcReport.LISTS)
    assert payload["url"].endswith("/api/v1/qc?date=2026-11-28")

    # The next morning writes the next day, once.
    assert jobs.write_qc_daily(now=local(hub, "2026-11-30T07:15:00")) == date(2026, 11, 29)
    assert [e.payload["date"] for e in daily_events(hub)] == ["2026-11-28", "2026-11-29"]


def test_two_hubs_racing_write_one_event(hub: Hub) -> None:
    """Two Hub objects on one database (two processes' worth of engines), each with its
    own jobs, run the daily job at the same moment, several times."""
    other = Hub.open(hub.settings)
    try:
        jobs = [Jobs(hub), Jobs(other), Jobs(hub), Jobs(other)]
        now = local(hub, "2026-11-29T07:00:05")
        start = threading.Barrier(len(jobs))
        written: list[date | None] = []
        errors: list[BaseException] = []

        def run(j: Jobs) -> None:
            start.wait()
            try:
                # Straight to the locked write: the read-side shortcut would hide the race.
                with j.hub.db.session() as s:
                    written.append(
                        qc.write_daily(
                            s, tz=j.hub.settings.tz, waiting_minutes=60, public_url="x", now=now
                        )
                    )
            except BaseException as exc:  # pragma: no cover - shown by the assert below
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(j,)) for j in jobs]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert errors == []
        assert sorted(written, key=str) == [date(2026, 11, 28), None, None, None]
        for j in jobs:
            assert j.write_qc_daily(now=now) is None
        assert len(daily_events(hub)) == 1
    finally:
        other.close()


def test_delivered_to_a_webhook_subscriber_only(
    hub: Hub, client: TestClient, receiver: WebhookReceiver, mllp: MllpReceiver
) -> None:
    subscribed = client.put(
        "/api/v1/sources/pims-main",
        json={
            "webhook_url": receiver.url,
            "webhook_secret": SECRET,
            "hl7_host": "127.0.0.1",
            "hl7_port": mllp.port,
            "results": ["webhook", "hl7-oru", "hl7-orm-status"],
            "events": ["qc.daily", "order.scheduled"],
        },
    )
    assert subscribed.status_code in (200, 201), subscribed.text
    other = client.put(  # the default events: no qc.daily for this one
        "/api/v1/sources/other-pims",
        json={"webhook_url": receiver.url, "webhook_secret": SECRET, "results": ["webhook"]},
    )
    assert other.status_code in (200, 201), other.text
    assert "qc.daily" not in other.json()["events"]
    bad = client.put("/api/v1/sources/x", json={"events": ["qc.weekly"]})
    assert bad.status_code == 422

    assert Jobs(hub).write_qc_daily(now=local(hub, "2026-11-29T08:00:00")) == date(2026, 11, 28)
    # An order's event in the same batch still goes its usual way beside it.
    assert (
        client.post("/api/v1/orders", json=rex(scheduled_start="2026-11-30T09:00:00")).status_code
        == 201
    )
    worker = DeliveryWorker(
        hub.db, hub.settings.model_copy(update={"delivery_timeout_seconds": 2}), delivery_kinds()
    )
    try:
        assert worker.run_once() == 3  # qc.daily by webhook; order.scheduled by webhook and ORM
    finally:
        worker.stop()
    by_event = {r.headers["x-vethub-event"]: r for r in receiver.wait_for(2)}
    assert set(by_event) == {"qc.daily", "order.scheduled"}
    got = by_event["qc.daily"]
    assert got.signature_ok
    assert got.headers["x-vethub-event"] == "qc.daily"
    doc = json.loads(got.body)
    assert doc["version"] == 1 and doc["event"] == "qc.daily" and doc["source"] == "pims-main"
    assert doc["order"] is None and doc["study"] is None
    assert doc["qc"]["date"] == "2026-11-28"
    assert doc["qc"]["counts"]["missing_studies"] == 0
    assert doc["delivery_id"] == got.headers["x-vethub-delivery"]
    # Neither HL7 kind can say it: the MLLP receiver heard only the order's status.
    assert [m.split("\r")[0].split("|")[8] for m in mllp.messages] == ["ORM^O01^ORM_O01"]
    with hub.db.read_session() as s:
        made = list(s.scalars(select(Delivery).where(col(Delivery.event_kind) == "qc.daily")))
    assert [(d.source, d.kind, d.order_id, d.status) for d in made] == [
        ("pims-main", "webhook", None, "delivered")
    ]
