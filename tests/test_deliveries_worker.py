"""The delivery worker against real local receivers, on SQLite and PostgreSQL.

Faults: receiver answering 500, slow, closing mid-response, down, HL7 AE
and silence; each delivery ends delivered or visibly failed.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from hl7apy.parser import parse_message
from sqlalchemy import update
from sqlmodel import col

from adapters.webhook import verify
from hub.context import Hub
from hub.models import Delivery, utcnow
from hub.serve import delivery_kinds
from hub.services.deliveries import dispatch as dispatch_module
from hub.services.deliveries.policy import Policy
from hub.services.deliveries.worker import DeliveryWorker
from tests.delivery_receivers import MllpReceiver, WebhookReceiver
from tests.factories import rex
from tests.study_factory import indexed_study

SECRET = "s3cret-s3cret-s3cret"


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


MakeWorker = Callable[..., DeliveryWorker]


@pytest.fixture
def worker(hub: Hub) -> Iterator[MakeWorker]:
    """Makes workers with test-sized settings (``worker(delivery_max_attempts=5)``).

    Tests drive them with ``run_once``; every worker made is stopped at
    teardown, also when the test fails, so no send pool outlives its test.
    """
    made: list[DeliveryWorker] = []

    def make(**settings: object) -> DeliveryWorker:
        values = {
            "delivery_backoff_seconds": 5,
            "delivery_backoff_max_seconds": 10,
            "delivery_timeout_seconds": 0.5,
            "delivery_max_attempts": 3,
            **settings,
        }
        w = DeliveryWorker(hub.db, hub.settings.model_copy(update=values), delivery_kinds())
        made.append(w)
        return w

    yield make
    for w in made:
        w.stop()


def drain(w: DeliveryWorker, hub: Hub) -> None:
    """Run rounds until nothing is due, making backoff waits due at once."""
    for _ in range(20):
        with hub.db.session() as s:
            s.execute(
                update(Delivery)
                .where(col(Delivery.status) == "pending", col(Delivery.attempts) > 0)
                .values(next_attempt_at=utcnow() - timedelta(seconds=1))
            )
        if w.run_once() == 0:
            return


def statuses(client: TestClient) -> list[tuple[str, str, int]]:
    items = client.get("/api/v1/deliveries", params={"limit": 500}).json()["items"]
    return sorted((d["event"], d["status"], d["attempts"]) for d in items)


def register(client: TestClient, **body: object) -> None:
    r = client.put("/api/v1/sources/pims-main", json=body)
    assert r.status_code in (200, 201), r.text


def test_webhook_signed_and_shaped(
    client: TestClient, hub: Hub, worker: MakeWorker, receiver: WebhookReceiver
) -> None:
    register(
        client,
        webhook_url=receiver.url,
        webhook_secret=SECRET,
        results=["webhook"],
        events=["order.scheduled", "order.cancelled"],
    )
    order = client.post("/api/v1/orders", json=rex()).json()
    client.post(f"/api/v1/orders/{order['id']}/cancel")
    w = worker()
    assert w.run_once() == 2
    got = receiver.wait_for(2)
    assert [r.headers["x-vethub-event"] for r in got] == ["order.scheduled", "order.cancelled"]
    assert all(r.signature_ok for r in got)
    assert got[0].headers["x-vethub-signature"].startswith("sha256=")
    doc = json.loads(got[1].body)
    assert doc["version"] == 1
    assert doc["event"] == "order.cancelled"
    assert doc["delivery_id"] == got[1].headers["x-vethub-delivery"]
    assert doc["order"]["placer_order_number"] == "ORD-1001"
    assert doc["order"]["filler_order_number"] == order["accession_number"]
    assert doc["order"]["patient"]["name"] == "Rex"
    assert doc["order"]["owner"]["last_name"] == "Smith"
    assert doc["order"]["status"] == "cancelled"
    assert statuses(client) == [
        ("order.cancelled", "delivered", 1),
        ("order.scheduled", "delivered", 1),
    ]
    # A forged body does not verify with the secret.
    assert not verify(SECRET, got[1].body + b" ", got[1].headers["x-vethub-signature"])


@pytest.mark.parametrize("fault", ["500", "slow", "close", "down"])
def test_receiver_fault_then_recovery(
    client: TestClient,
    hub: Hub,
    worker: MakeWorker,
    receiver: WebhookReceiver,
    fault: str,
    request: pytest.FixtureRequest,
) -> None:
    url = receiver.url
    port = receiver.server.server_address[1]
    if fault == "down":
        receiver.close()  # nothing listens until it comes back below
    register(
        client,
        webhook_url=url,
        webhook_secret=SECRET,
        results=["webhook"],
        events=["order.scheduled"],
    )
    client.post("/api/v1/orders", json=rex())
    receiver.mode = fault
    w = worker(delivery_max_attempts=5)
    w.run_once()
    [d] = client.get("/api/v1/deliveries").json()["items"]
    assert d["status"] == "pending" and d["attempts"] == 1
    assert d["last_error"]
    if fault == "500":
        assert "HTTP 500" in d["last_error"]
    if fault == "down":
        receiver = WebhookReceiver(SECRET, port=port)  # back up, on the same port
        request.addfinalizer(receiver.close)
    receiver.mode = "ok"
    drain(w, hub)
    assert statuses(client) == [("order.scheduled", "delivered", 2)]
    ids = receiver.delivery_ids()
    if fault == "slow":
        # The slow first attempt may still complete after the hub gave up on it
        # (a busy machine makes that likely): a duplicate under the same id,
        # which is what the receiver's idempotency key is for.
        ids = sorted(set(ids))
    assert ids == [d["delivery_id"]]


def test_gives_up_visibly_then_manual_retry(
    client: TestClient, hub: Hub, worker: MakeWorker, receiver: WebhookReceiver
) -> None:
    register(
        client,
        webhook_url=receiver.url,
        webhook_secret=SECRET,
        results=["webhook"],
        events=["order.scheduled"],
    )
    client.post("/api/v1/orders", json=rex())
    receiver.mode = "500"
    w = worker(delivery_max_attempts=3)
    drain(w, hub)
    [d] = client.get("/api/v1/deliveries", params={"status": "failed"}).json()["items"]
    assert d["attempts"] == 3 and "HTTP 500" in d["last_error"]
    assert receiver.attempts == 3
    receiver.mode = "ok"
    assert client.post(f"/api/v1/deliveries/{d['id']}/retry").status_code == 200
    w.run_once()
    assert statuses(client) == [("order.scheduled", "delivered", 1)]
    assert receiver.delivery_ids() == [d["delivery_id"]]


def test_later_delivery_waits_for_earlier_one_of_same_order(
    client: TestClient, hub: Hub, worker: MakeWorker, receiver: WebhookReceiver
) -> None:
    register(
        client,
        webhook_url=receiver.url,
        webhook_secret=SECRET,
        results=["webhook"],
        events=["order.scheduled", "order.updated", "order.cancelled"],
    )
    order = client.post("/api/v1/orders", json=rex()).json()
    other = client.post(
        "/api/v1/orders", json=rex(placer_order_number="O2", accession_number="A2")
    ).json()
    client.patch(
        f"/api/v1/orders/{order['id']}",
        json={"notes": "changed"},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    client.post(f"/api/v1/orders/{order['id']}/cancel")
    receiver.mode = "500"
    w = worker(delivery_max_attempts=10)
    w.run_once()
    # Only the first delivery of each order was tried; the later ones wait behind it.
    assert receiver.attempts == 2
    receiver.mode = "ok"
    drain(w, hub)
    got = [json.loads(r.body) for r in receiver.received]
    mine = [d["event"] for d in got if d["order"]["id"] == order["id"]]
    assert mine == ["order.scheduled", "order.updated", "order.cancelled"]
    assert [d["event"] for d in got if d["order"]["id"] == other["id"]] == ["order.scheduled"]


def test_study_received_webhook_and_hl7(
    client: TestClient, hub: Hub, worker: MakeWorker, receiver: WebhookReceiver, mllp: MllpReceiver
) -> None:
    register(
        client,
        webhook_url=receiver.url,
        webhook_secret=SECRET,
        hl7_host="127.0.0.1",
        hl7_port=mllp.port,
        results=["webhook", "hl7-oru", "hl7-orm-status"],
    )
    order = client.post("/api/v1/orders", json=rex()).json()
    uid = indexed_study(hub, order)
    w = worker()
    w.run_once()
    [hook] = receiver.wait_for(1)
    doc = json.loads(hook.body)
    assert doc["event"] == "study.received"
    assert doc["viewer_url"] == f"{hub.settings.public_url}/viewer/studies/{uid}"
    assert doc["study"]["study_instance_uid"] == uid
    assert doc["study"]["series_count"] == 1 and doc["study"]["instance_count"] == 2
    assert doc["study"]["modalities"] == ["DX"]
    # ORU with the link as RP and as text; no ORM: study.received is no order status.
    [oru] = mllp.wait_for(1)
    msg = parse_message(oru, find_groups=True)
    msg.validate()
    assert "ORU^R01" in oru
    assert f"|{order['accession_number']}^VETHUB|" in oru
    assert "|ORD-1001^pims-main|" in oru
    obx = [seg for seg in oru.split("\r") if seg.startswith("OBX")]
    assert obx[0].split("|")[2] == "RP" and doc["viewer_url"] in obx[0]
    assert obx[1].split("|")[2] == "TX" and doc["viewer_url"] in obx[1]
    assert statuses(client) == [
        ("study.received", "delivered", 1),
        ("study.received", "delivered", 1),
    ]

    # Completing the order: webhook, ORU (final) and ORM status CM.
    with hub.db.session() as s:
        from hub.services import orders

        orders.transition(s, orders.get(s, order["id"]), "completed")
    w.run_once()
    msgs = mllp.wait_for(3)
    orm = next(m for m in msgs if "ORM^O01" in m)
    orc = next(seg for seg in orm.split("\r") if seg.startswith("ORC")).split("|")
    assert orc[1] == "SC" and orc[5] == "CM"
    final_oru = [m for m in msgs if "ORU^R01" in m][-1]
    assert "|F" in final_oru.split("\r")[3]


@pytest.mark.parametrize("mode", ["AE", "silent"])
def test_hl7_negative_ack_or_silence_retries(
    client: TestClient, hub: Hub, worker: MakeWorker, mllp: MllpReceiver, mode: str
) -> None:
    register(
        client,
        hl7_host="127.0.0.1",
        hl7_port=mllp.port,
        results=["hl7-orm-status"],
        events=["order.cancelled"],
    )
    order = client.post("/api/v1/orders", json=rex()).json()
    client.post(f"/api/v1/orders/{order['id']}/cancel")
    mllp.mode = mode
    w = worker(delivery_timeout_seconds=0.3)
    w.run_once()
    [d] = client.get("/api/v1/deliveries").json()["items"]
    assert d["status"] == "pending" and d["attempts"] == 1
    assert (
        ("AE" in d["last_error"] and "unknown patient" in d["last_error"])
        if mode == "AE"
        else ("no ACK" in d["last_error"])
    )
    mllp.mode = "AA"
    drain(w, hub)
    assert statuses(client) == [("order.cancelled", "delivered", 2)]


def test_backoff_grows_with_jitter_up_to_the_cap() -> None:
    p = Policy(backoff_seconds=5, backoff_max_seconds=900)
    for attempt, full in [(1, 5), (2, 10), (5, 80), (9, 900), (30, 900)]:
        delays = {p.backoff(attempt).total_seconds() for _ in range(50)}
        assert all(full / 2 <= d <= full for d in delays)
        assert len(delays) > 1  # jitter: retries of many deliveries spread out
    assert p.lease.total_seconds() >= 3 * p.timeout_seconds * (p.batch / p.concurrency)


def test_an_event_that_cannot_be_rendered_does_not_stop_the_others(
    client: TestClient,
    hub: Hub,
    worker: MakeWorker,
    receiver: WebhookReceiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    register(
        client,
        webhook_url=receiver.url,
        webhook_secret=SECRET,
        results=["webhook"],
        events=["order.scheduled"],
    )
    bad = client.post("/api/v1/orders", json=rex()).json()
    good = client.post(
        "/api/v1/orders", json=rex(placer_order_number="O2", accession_number="A2")
    ).json()
    real = dispatch_module.document

    def document(ev, order, *args, **kwargs):
        if order.id == bad["id"]:
            raise ValueError("cannot render")
        return real(ev, order, *args, **kwargs)

    monkeypatch.setattr(dispatch_module, "document", document)
    w = worker()
    w.run_once()
    got = [json.loads(r.body)["order"]["id"] for r in receiver.wait_for(1)]
    assert got == [good["id"]]
    monkeypatch.setattr(dispatch_module, "document", real)
    w.run_once()  # once it can be rendered, it goes out: nothing was lost
    got = [json.loads(r.body)["order"]["id"] for r in receiver.wait_for(2)]
    assert got == [good["id"], bad["id"]]
