"""Outgoing TLS for results (issue #9), on SQLite and PostgreSQL.

Receivers hold certificates from a throwaway CA that no public store knows:
without ``VETHUB_TLS_EXTRA_CA`` the hub refuses them (the delivery's error
names the certificate problem and it is retried), with it they are reached.
Webhooks verify whenever their URL is https; HL7 goes inside TLS when the
source has ``tls`` set (plain MLLP stays covered by test_deliveries_worker).
"""

from __future__ import annotations

import json
import ssl
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import trustme
from fastapi.testclient import TestClient
from sqlalchemy import select, update
from sqlmodel import col

from hub.context import Hub
from hub.models import Delivery, utcnow
from hub.serve import delivery_kinds
from hub.services.deliveries.worker import DeliveryWorker
from tests.delivery_receivers import MllpReceiver, WebhookReceiver
from tests.factories import rex
from tests.study_factory import indexed_study

SECRET = "s3cret-s3cret-s3cret"


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> Path:
    path = tmp_path / "clinic-ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


@pytest.fixture
def server_tls(ca: trustme.CA) -> ssl.SSLContext:
    """A receiver's server context: a certificate for 127.0.0.1 from the test CA."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(ctx)
    return ctx


@pytest.fixture
def workers(hub: Hub) -> Iterator[list[DeliveryWorker]]:
    made: list[DeliveryWorker] = []
    yield made
    for w in made:
        w.stop()


def worker(hub: Hub, made: list[DeliveryWorker], extra_ca: Path | None) -> DeliveryWorker:
    settings = hub.settings.model_copy(
        update={"tls_extra_ca": extra_ca, "delivery_timeout_seconds": 2.0}
    )
    w = DeliveryWorker(hub.db, settings, delivery_kinds())
    made.append(w)
    return w


def deliveries(hub: Hub) -> list[Delivery]:
    with hub.db.read_session() as s:
        return list(s.scalars(select(Delivery).order_by(col(Delivery.id))))


def make_due(hub: Hub) -> None:
    """Skip the backoff wait of deliveries that failed."""
    with hub.db.session() as s:
        s.execute(
            update(Delivery)
            .where(col(Delivery.status) == "pending")
            .values(next_attempt_at=utcnow() - timedelta(seconds=1))
        )


def register(client: TestClient, **body: object) -> None:
    r = client.put("/api/v1/sources/pims-main", json=body)
    assert r.status_code in (200, 201), r.text


def test_webhook_receiver_verified_with_the_extra_ca(
    client: TestClient,
    hub: Hub,
    workers: list[DeliveryWorker],
    server_tls: ssl.SSLContext,
    ca_file: Path,
) -> None:
    receiver = WebhookReceiver(SECRET, tls=server_tls)
    try:
        assert receiver.url.startswith("https://")
        register(
            client,
            webhook_url=receiver.url,
            webhook_secret=SECRET,
            results=["webhook"],
            events=["order.scheduled"],
        )
        client.post("/api/v1/orders", json=rex())

        assert worker(hub, workers, extra_ca=None).run_once() == 1
        [d] = deliveries(hub)
        assert (d.status, d.attempts) == ("pending", 1)  # retried later, not given up
        assert d.last_error is not None and "CERTIFICATE_VERIFY_FAILED" in d.last_error
        assert receiver.received == []

        make_due(hub)
        assert worker(hub, workers, extra_ca=ca_file).run_once() == 1
        [d] = deliveries(hub)
        assert (d.status, d.attempts) == ("delivered", 2)
        [got] = receiver.wait_for(1)
        assert got.signature_ok and json.loads(got.body)["event"] == "order.scheduled"
    finally:
        receiver.close()


def test_hl7_oru_goes_inside_tls_when_the_source_asks(
    client: TestClient,
    hub: Hub,
    workers: list[DeliveryWorker],
    server_tls: ssl.SSLContext,
    ca_file: Path,
) -> None:
    with MllpReceiver(tls=server_tls) as mllp:
        register(client, hl7_host="127.0.0.1", hl7_port=mllp.port, tls=True, results=["hl7-oru"])
        order = client.post("/api/v1/orders", json=rex()).json()
        indexed_study(hub, order, instances=1)

        worker(hub, workers, extra_ca=None).run_once()
        [d] = deliveries(hub)
        assert (d.kind, d.status, d.attempts) == ("hl7-oru", "pending", 1)
        assert d.last_error is not None and "CERTIFICATE_VERIFY_FAILED" in d.last_error
        deadline = time.monotonic() + 5  # the receiver's thread notes the failed handshake
        while not mllp.handshake_errors and time.monotonic() < deadline:
            time.sleep(0.02)
        assert mllp.handshake_errors and mllp.messages == []  # TLS was tried, and refused

        make_due(hub)
        worker(hub, workers, extra_ca=ca_file).run_once()
        [oru] = mllp.wait_for(1)
        assert "ORU^R01" in oru and order["accession_number"] in oru
        [d] = deliveries(hub)
        assert (d.status, d.attempts) == ("delivered", 2)
