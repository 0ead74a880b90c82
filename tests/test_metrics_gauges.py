"""/metrics gauges read from the database: they move when the state they describe moves."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from hub.context import Hub
from hub.db import Database
from hub.metrics import DatabaseGauges
from hub.models import Delivery, Modality, Study
from hub.models.deliveries import DeliveryStatus
from tests.factories import rex


def scrape(client: TestClient) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    client.app.state.gauges.ttl = 0  # type: ignore[attr-defined]  # no cache between steps
    r = client.get("/metrics")
    assert r.status_code == 200
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }


def one(samples: dict, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def delivery(status: str, source: str = "pims-main", kind: str = "webhook", age_s: float = 0):
    return Delivery(
        uuid=str(uuid.uuid4()),
        source=source,
        kind=kind,
        event_kind="order.completed",
        outbox_event_id=1,
        status=status,
        created_at=datetime.now(UTC) - timedelta(seconds=age_s),
    )


def test_gauges_follow_the_database(hub: Hub, client: TestClient) -> None:
    empty = scrape(client)
    assert one(empty, "vethub_database_up") == 1
    assert one(empty, "vethub_worklist_orders") == 0
    assert one(empty, "vethub_studies_waiting", reason="no_match") == 0
    assert not any(name.startswith("vethub_deliveries_") for name, _ in empty)

    today = datetime.now().replace(microsecond=0).isoformat()
    assert client.post("/api/v1/orders", json=rex(scheduled_start=today)).status_code == 201
    with hub.db.session() as s:
        s.add(delivery(DeliveryStatus.PENDING, age_s=120))
        s.add(delivery(DeliveryStatus.PENDING))
        s.add(delivery(DeliveryStatus.FAILED, kind="hl7-oru"))
        s.add(delivery(DeliveryStatus.DELIVERED))
        s.add(Study(study_instance_uid="1.2.3", unmatched_reason="ambiguous"))
        s.add(Study(study_instance_uid="1.2.4", order_id=None, unmatched_reason=None))
        s.add(Modality(ae_title="DX_ROOM1", last_store_at=datetime(2026, 11, 1, tzinfo=UTC)))

    after = scrape(client)
    assert one(after, "vethub_worklist_orders") == 1
    assert one(after, "vethub_deliveries_pending", source="pims-main", kind="webhook") == 2
    assert one(after, "vethub_deliveries_failed", source="pims-main", kind="hl7-oru") == 1
    age = one(
        after, "vethub_deliveries_oldest_pending_age_seconds", source="pims-main", kind="webhook"
    )
    assert age is not None and 110 < age < 3600
    assert one(after, "vethub_studies_waiting", reason="ambiguous") == 1
    assert one(after, "vethub_studies_waiting", reason="no_match") == 0
    stored = one(
        after, "vethub_device_last_contact_timestamp_seconds", ae_title="DX_ROOM1", activity="store"
    )
    assert stored == datetime(2026, 11, 1, tzinfo=UTC).timestamp()
    assert (
        one(
            after,
            "vethub_device_last_contact_timestamp_seconds",
            ae_title="DX_ROOM1",
            activity="query",
        )
        is None
    )

    oid = client.get("/api/v1/orders").json()["items"][0]["id"]
    client.post(f"/api/v1/orders/{oid}/cancel")
    assert one(scrape(client), "vethub_worklist_orders") == 0

    # Scrapes within the cache time share one read: a new order shows on the next read.
    client.app.state.gauges.ttl = 60  # type: ignore[attr-defined]
    client.post(
        "/api/v1/orders",
        json=rex(placer_order_number="P2", accession_number=None, scheduled_start=today),
    )
    assert "vethub_worklist_orders 0.0" in client.get("/metrics").text
    assert one(scrape(client), "vethub_worklist_orders") == 1


def test_an_unreachable_database_is_a_gauge_not_a_failed_scrape() -> None:
    nowhere = Database("postgresql+psycopg://vethub@127.0.0.1:9/nowhere")  # nothing listens on 9
    try:
        families = list(DatabaseGauges(nowhere, worklist_max_age_days=7).collect())
    finally:
        nowhere.dispose()
    values = [(f.name, [s.value for s in f.samples]) for f in families]
    assert values == [("vethub_database_up", [0])]
