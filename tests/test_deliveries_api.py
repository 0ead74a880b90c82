"""Sources registration and the deliveries API, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from hub.context import Hub
from hub.serve import delivery_kinds
from hub.services.deliveries.dispatch import dispatch
from tests.factories import rex
from tests.harness import key_for

SECRET = "s3cret-s3cret-s3cret"
HOOK = {
    "webhook_url": "https://pims.example/hook",
    "webhook_secret": SECRET,
    "results": ["webhook"],
}


def test_register_source_and_list_without_secret(client: TestClient) -> None:
    r = client.put("/api/v1/sources/pims-main", json=HOOK)
    assert r.status_code == 201, r.text
    out = r.json()
    assert out["webhook_secret_set"] is True
    assert "webhook_secret" not in out
    assert out["events"] == [
        "study.received",
        "order.completed",
        "order.cancelled",
        "study.reconciled",
        "study.detached",
    ]
    listed = client.get("/api/v1/sources")
    assert listed.status_code == 200
    assert SECRET not in listed.text
    assert [s["name"] for s in listed.json()["items"]] == ["pims-main"]
    # Updating without the secret keeps it; the answer is 200.
    again = client.put(
        "/api/v1/sources/pims-main",
        json={
            "webhook_url": "https://pims.example/v2",
            "results": ["webhook"],
            "hl7_profile": "animal-first",
        },
    )
    assert again.status_code == 200, again.text
    assert again.json()["webhook_secret_set"] is True
    assert again.json()["webhook_url"] == "https://pims.example/v2"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**HOOK, "webhook_url": "ftp://pims.example/hook"}, "webhook_url"),
        ({**HOOK, "webhook_url": "https:///nohost"}, "webhook_url"),
        ({**HOOK, "webhook_url": "not a url"}, "webhook_url"),
        ({**HOOK, "webhook_secret": "short"}, "webhook_secret"),
        ({**HOOK, "webhook_secret": "has spaces in the secret!"}, "webhook_secret"),
        ({"webhook_url": "https://pims.example/hook", "results": ["webhook"]}, "webhook_secret"),
        ({**HOOK, "results": ["webhook", "fax"]}, "results"),
        ({**HOOK, "events": ["order.exploded"]}, "events"),
        ({**HOOK, "hl7_profile": "no-such-profile"}, "hl7_profile"),
        ({"results": ["hl7-oru"]}, "hl7_host"),
        ({"results": ["hl7-oru"], "hl7_host": "10.0.0.5", "hl7_port": 70000}, "hl7_port"),
    ],
)
def test_bad_source_is_422_naming_the_field(client: TestClient, body: dict, field: str) -> None:
    r = client.put("/api/v1/sources/pims-main", json=body)
    assert r.status_code == 422, r.text
    assert field in r.json()["detail"]
    assert client.get("/api/v1/sources").json()["items"] == []


def test_bad_source_name_is_422(client: TestClient) -> None:
    r = client.put("/api/v1/sources/bad name!", json=HOOK)
    assert r.status_code == 422
    assert "name" in r.json()["detail"]


def test_only_admin_registers_sources(client: TestClient, hub: Hub) -> None:
    vet = key_for(hub, "vet")
    r = client.put(
        "/api/v1/sources/pims-main", json=HOOK, headers={"Authorization": f"Bearer {vet}"}
    )
    assert r.status_code == 403


def test_deliveries_list_filters_paginates_and_retries(client: TestClient, hub: Hub) -> None:
    client.put(
        "/api/v1/sources/pims-main",
        json={**HOOK, "events": ["order.scheduled", "order.cancelled"]},
    )
    ids = []
    for n in range(3):
        r = client.post(
            "/api/v1/orders", json=rex(placer_order_number=f"O{n}", accession_number=f"A{n}")
        )
        ids.append(r.json()["id"])
    client.post(f"/api/v1/orders/{ids[0]}/cancel")
    # An order from a system that is not registered causes no delivery.
    client.post(
        "/api/v1/orders",
        json=rex(source="other", placer_order_number="X", accession_number="AX"),
    )
    with hub.db.session() as s:
        assert dispatch(s, hub.settings.public_url, delivery_kinds()) == 5
    with hub.db.session() as s:
        assert dispatch(s, hub.settings.public_url, delivery_kinds()) == 0

    page = client.get("/api/v1/deliveries", params={"limit": 2}).json()
    assert len(page["items"]) == 2 and page["next_cursor"]
    rest = client.get("/api/v1/deliveries", params={"cursor": page["next_cursor"]}).json()
    everything = page["items"] + rest["items"]
    assert len(everything) == 4
    assert len({d["delivery_id"] for d in everything}) == 4
    assert all(d["status"] == "pending" and d["kind"] == "webhook" for d in everything)

    mine = client.get("/api/v1/deliveries", params={"order_id": ids[0]}).json()["items"]
    assert [d["event"] for d in mine] == ["order.cancelled", "order.scheduled"]
    cancelled = mine[0]
    assert cancelled["payload"]["order"]["status"] == "cancelled"
    assert cancelled["payload"]["order"]["placer_order_number"] == "O0"
    assert cancelled["payload"]["viewer_url"] is None
    assert client.get("/api/v1/deliveries", params={"status": "failed"}).json()["items"] == []
    assert client.get("/api/v1/deliveries", params={"source": "other"}).json()["items"] == []
    assert client.get("/api/v1/deliveries", params={"status": "lost"}).status_code == 422

    r = client.post(f"/api/v1/deliveries/{cancelled['id']}/retry")
    assert r.status_code == 200
    assert r.json()["status"] == "pending" and r.json()["attempts"] == 0
    assert client.post("/api/v1/deliveries/999999/retry").status_code == 404
    audit = client.get("/api/v1/audit", params={"action": "delivery.retry"}).json()["items"]
    assert audit and audit[0]["target_id"] == str(cancelled["id"])


def test_source_changes_are_audited_without_the_secret(client: TestClient) -> None:
    assert client.put("/api/v1/sources/pims-main", json=HOOK).status_code == 201
    assert client.delete("/api/v1/sources/pims-main").status_code == 204
    trail = client.get("/api/v1/audit", params={"target_id": "pims-main"}).json()["items"]
    assert [e["action"] for e in trail] == ["source.delete", "source.put"]
    put = trail[1]["detail"]
    assert put["webhook_url"] == HOOK["webhook_url"]
    assert "webhook_secret" not in put and HOOK["webhook_secret"] not in str(trail)
