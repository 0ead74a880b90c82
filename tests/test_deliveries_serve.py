"""Deliveries from whole ``vethub serve`` processes: crash safety and scale-out on PostgreSQL."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from hub.config import Settings
from hub.context import Hub
from hub.db import Database
from hub.models import Delivery
from hub.schemas import OrderIn
from hub.services import orders
from tests.delivery_receivers import MllpReceiver, WebhookReceiver
from tests.factories import rex
from tests.harness import ServedHub, empty_tables, start_hub
from tests.study_factory import instance, send

SECRET = "s3cret-s3cret-s3cret"


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    r = WebhookReceiver(SECRET)
    yield r
    r.close()


def _fresh(db_url: str) -> None:
    if db_url.startswith("postgresql"):
        db = Database(db_url)
        empty_tables(db)
        db.dispose()


def test_delivery_survives_sigkill_between_event_and_delivery(
    db_url: str, tmp_path: Path, receiver: WebhookReceiver
) -> None:
    _fresh(db_url)
    # The first hub polls so rarely that it dies before sending anything.
    first = start_hub(tmp_path / "a", db_url, VETHUB_DELIVERY_POLL_SECONDS="120")
    try:
        time.sleep(1)  # let its start-up round pass, so the next one is 120 s away
        with first.api() as api:
            r = api.put(
                "/api/v1/sources/pims-main",
                json={
                    "webhook_url": receiver.url,
                    "webhook_secret": SECRET,
                    "results": ["webhook"],
                    "events": ["order.cancelled"],
                },
            )
            assert r.status_code == 201, r.text
            order = api.post("/api/v1/orders", json=rex()).json()
            assert api.post(f"/api/v1/orders/{order['id']}/cancel").status_code == 200
    finally:
        first.stop(signal.SIGKILL)
    assert receiver.received == []

    second = start_hub(tmp_path / "a", db_url, VETHUB_DELIVERY_POLL_SECONDS="0.2")
    try:
        [got] = receiver.wait_for(1)
        assert got.headers["x-vethub-event"] == "order.cancelled"
        assert got.signature_ok
        with second.api() as api:
            [d] = api.get("/api/v1/deliveries").json()["items"]
        assert d["status"] == "delivered"
        assert d["delivery_id"] == got.headers["x-vethub-delivery"]
        time.sleep(0.5)
        assert len(receiver.received) == 1
    finally:
        second.stop()


def test_two_hubs_deliver_1000_events_exactly_once(
    pg_url: str, tmp_path: Path, receiver: WebhookReceiver
) -> None:
    _fresh(pg_url)
    env = {"VETHUB_DELIVERY_POLL_SECONDS": "0.1"}
    hubs = [start_hub(tmp_path / name, pg_url, **env) for name in ("a", "b")]
    producer = Hub.open(Settings(data_dir=tmp_path / "producer", database_url=pg_url))
    try:
        with hubs[0].api() as api:
            r = api.put(
                "/api/v1/sources/pims-main",
                json={
                    "webhook_url": receiver.url,
                    "webhook_secret": SECRET,
                    "results": ["webhook"],
                    "events": ["order.scheduled"],
                },
            )
            assert r.status_code == 201, r.text
        # 1,000 events arrive in batches while both hubs dispatch and send.
        for batch in range(20):
            with producer.db.session() as s:
                for n in range(50):
                    body = rex(placer_order_number=f"B{batch}-{n}", accession_number=None)
                    orders.place(s, OrderIn.model_validate(body), producer.orders)
        got = receiver.wait_for(1000, timeout=180)
        time.sleep(1)  # room for any duplicate to show up
        ids = receiver.delivery_ids()
        assert len(ids) == 1000
        assert len(set(ids)) == 1000
        assert all(r.signature_ok for r in got)
        with producer.db.read_session() as s:
            by_status = dict(
                s.execute(select(Delivery.status, func.count()).group_by(Delivery.status)).all()
            )
            assert by_status == {"delivered": 1000}
            assert s.scalar(select(func.max(Delivery.attempts))) == 1
    finally:
        producer.close()
        for h in hubs:
            h.stop()


def test_stored_study_reaches_practice_system_with_viewer_link(
    served_hub: ServedHub, receiver: WebhookReceiver
) -> None:
    """C-STORE of an ordered study: the source gets a webhook and an ORU with the link."""
    with MllpReceiver() as mllp, served_hub.api() as api:
        r = api.put(
            "/api/v1/sources/pims-main",
            json={
                "webhook_url": receiver.url,
                "webhook_secret": SECRET,
                "hl7_host": "127.0.0.1",
                "hl7_port": mllp.port,
                "results": ["webhook", "hl7-oru"],
            },
        )
        assert r.status_code == 201, r.text
        order = api.post("/api/v1/orders", json=rex()).json()
        uid = order["study_instance_uid"]
        images = [instance(study_uid=uid, accession=order["accession_number"]) for _ in range(2)]
        assert send(served_hub.dicom, images) == [0, 0]
        [hook] = receiver.wait_for(1)
        doc = json.loads(hook.body)
        assert hook.signature_ok
        assert doc["event"] == "study.received"
        assert doc["order"]["id"] == order["id"]
        assert doc["study"]["study_instance_uid"] == uid
        assert doc["viewer_url"].endswith(f"/viewer/studies/{uid}")
        [oru] = mllp.wait_for(1)
        assert doc["viewer_url"] in oru and order["accession_number"] in oru
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            items = api.get("/api/v1/deliveries", params={"order_id": order["id"]}).json()["items"]
            if [d["status"] for d in items] == ["delivered", "delivered"]:
                break
            time.sleep(0.1)
        assert sorted(d["kind"] for d in items) == ["hl7-oru", "webhook"]
        assert {d["status"] for d in items} == {"delivered"}
