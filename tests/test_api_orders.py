"""REST orders against a real database (SQLite and PostgreSQL)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from hub.context import Hub
from hub.errors import NotFound
from hub.schemas import OrderIn
from hub.services import orders
from hub.services.orders import request_hash
from tests.factories import REX, rex
from tests.harness import key_for


def test_create_returns_stored_order(client: TestClient) -> None:
    r = client.post("/api/v1/orders", json=REX)
    assert r.status_code == 201, r.text
    out = r.json()
    assert out["id"] > 0
    assert out["status"] == "scheduled"
    assert out["accession_number"] == "A1001"
    assert out["study_instance_uid"].startswith("2.25.")  # minted by the hub (hub/uids.py)
    assert out["patient"]["species_code"] == "448771007"
    assert out["owner"]["last_name"] == "Smith"
    assert out["scheduled_start"] == "2026-11-27T14:30:00"
    assert out.pop("warnings") == []  # only the answer to placing it carries warnings
    assert client.get(f"/api/v1/orders/{out['id']}").json() == out


def test_identical_resend_is_200_and_different_body_is_409(client: TestClient) -> None:
    first = client.post("/api/v1/orders", json=REX).json()
    again = client.post("/api/v1/orders", json=REX)
    assert again.status_code == 200
    assert again.json()["id"] == first["id"]
    changed = client.post("/api/v1/orders", json=rex(notes="other"))
    assert changed.status_code == 409
    assert "placer_order_number" in changed.json()["detail"]


def test_accession_of_another_order_is_409(client: TestClient) -> None:
    assert client.post("/api/v1/orders", json=REX).status_code == 201
    r = client.post("/api/v1/orders", json=rex(placer_order_number="ORD-2"))
    assert r.status_code == 409
    assert "accession_number" in r.json()["detail"]


def test_generated_accession_and_minimal_order(client: TestClient) -> None:
    body = {
        "placer_order_number": "X1",
        "patient": {"id": "P1", "name": "Mia"},
        "owner": {"organization": "Happy Farm"},
        "procedure": {"description": "Abdomen"},
    }
    r = client.post("/api/v1/orders", json=body)
    assert r.status_code == 201, r.text
    out = r.json()
    assert 1 <= len(out["accession_number"]) <= 16
    assert out["source"] == "default"
    other = client.post("/api/v1/orders", json={**body, "placer_order_number": "X2"}).json()
    assert other["accession_number"] != out["accession_number"]
    assert other["study_instance_uid"] != out["study_instance_uid"]


def test_procedure_mapping_fills_modality(client: TestClient) -> None:
    body = rex()
    del body["modality"]
    out = client.post("/api/v1/orders", json=body).json()
    assert out["modality"] == "DX"


def test_validation_names_each_bad_field(client: TestClient) -> None:
    bad = rex(accession_number="A" * 17, modality="XYZ", scheduled_start="27/11/2026")
    bad["patient"]["name"] = "Rex\x07"
    bad["patient"]["birth_date"] = "2019-13-45"
    r = client.post("/api/v1/orders", json=bad)
    assert r.status_code == 422
    fields = {e["field"] for e in r.json()["errors"]}
    assert {
        "accession_number",
        "modality",
        "scheduled_start",
        "patient.name",
        "patient.birth_date",
    } <= fields
    assert isinstance(r.json()["detail"], str) and "accession_number" in r.json()["detail"]


def test_missing_owner_and_procedure_are_422(client: TestClient) -> None:
    body = rex(owner={"first_name": "Anna"})
    r = client.post("/api/v1/orders", json=body)
    assert r.status_code == 422 and "owner" in r.json()["detail"]
    r = client.post("/api/v1/orders", json=rex(placer_order_number="Z", procedure={}))
    assert r.status_code == 422 and "procedure" in r.json()["detail"]


def test_malformed_json_and_giant_strings(client: TestClient) -> None:
    r = client.post(
        "/api/v1/orders",
        content=b'{"placer_order_number": ',
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 422 and "JSON" in r.json()["detail"]
    r = client.post("/api/v1/orders", json=rex(placer_order_number="P" * 100_000))
    assert r.status_code == 422 and "placer_order_number" in r.json()["detail"]
    r = client.post("/api/v1/orders", json=[1, 2])
    assert r.status_code == 422


def test_auth_and_roles(client: TestClient, hub) -> None:  # type: ignore[no-untyped-def]
    anon = client.post("/api/v1/orders", json=REX, headers={"Authorization": ""})
    assert anon.status_code == 401
    wrong = client.post("/api/v1/orders", json=REX, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    vet = {"Authorization": f"Bearer {key_for(hub, 'vet')}"}
    assert client.post("/api/v1/orders", json=REX, headers=vet).status_code == 403
    desk = {"Authorization": f"Bearer {key_for(hub, 'frontdesk')}"}
    assert client.post("/api/v1/orders", json=REX, headers=desk).status_code == 201
    assert client.get("/api/v1/orders", headers=vet).status_code == 200
    assert client.get("/api/v1/audit", headers=desk).status_code == 403
    assert client.get("/health", headers={"Authorization": ""}).status_code == 200


def test_list_filters_and_cursor(client: TestClient) -> None:
    for i in range(7):
        body = rex(placer_order_number=f"L{i}", accession_number=f"ACC{i}")
        body["modality"] = "US" if i % 2 else "DX"
        body["scheduled_start"] = f"2026-11-{20 + i}T09:00:00"
        assert client.post("/api/v1/orders", json=body).status_code == 201
    seen, cursor = [], None
    while True:
        params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = client.get("/api/v1/orders", params=params).json()
        seen += [o["placer_order_number"] for o in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == [f"L{i}" for i in range(7)]
    us = client.get("/api/v1/orders", params={"modality": "US"}).json()["items"]
    assert [o["placer_order_number"] for o in us] == ["L1", "L3", "L5"]
    day = client.get("/api/v1/orders", params={"date": "2026-11-22"}).json()["items"]
    assert [o["placer_order_number"] for o in day] == ["L2"]
    assert client.get("/api/v1/orders", params={"cursor": "garbage!"}).status_code == 422
    assert client.get("/api/v1/orders", params={"limit": 501}).status_code == 422


def test_patch_merges_and_cancel_is_final(client: TestClient) -> None:
    oid = client.post("/api/v1/orders", json=REX).json()["id"]
    r = client.patch(f"/api/v1/orders/{oid}", json={"patient": {"weight_kg": 30}, "notes": None})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["patient"]["weight_kg"] == 30
    assert out["patient"]["name"] == "Rex"  # nested objects merge
    assert out["notes"] is None
    assert (
        client.patch(f"/api/v1/orders/{oid}", json={"placer_order_number": "X"}).status_code == 422
    )
    assert client.patch(f"/api/v1/orders/{oid}", json={"modality": "NOPE"}).status_code == 422
    assert client.post(f"/api/v1/orders/{oid}/cancel").json()["status"] == "cancelled"
    assert client.patch(f"/api/v1/orders/{oid}", json={"notes": "x"}).status_code == 409
    assert client.post(f"/api/v1/orders/{oid}/discontinue").status_code == 409
    assert client.get("/api/v1/orders/999999").status_code == 404


def test_patch_accession_conflict(client: TestClient) -> None:
    client.post("/api/v1/orders", json=REX)
    other = client.post("/api/v1/orders", json=rex(placer_order_number="O2", accession_number="B2"))
    r = client.patch(f"/api/v1/orders/{other.json()['id']}", json={"accession_number": "A1001"})
    assert r.status_code == 409 and "accession_number" in r.json()["detail"]


def test_modalities_and_audit(client: TestClient) -> None:
    r = client.put(
        "/api/v1/modalities/DX_ROOM1",
        json={"site": "main", "modality": "DX", "character_set": "ISO_IR 100", "port": 104},
    )
    assert r.status_code == 201, r.text
    assert client.put("/api/v1/modalities/DX_ROOM1", json={"modality": "DX"}).status_code == 200
    items = client.get("/api/v1/modalities").json()["items"]
    assert [m["ae_title"] for m in items] == ["DX_ROOM1"]
    assert client.put("/api/v1/modalities/DX1", json={"character_set": "KOI8"}).status_code == 422
    assert client.put("/api/v1/modalities/" + "A" * 17, json={}).status_code == 422
    audit = client.get("/api/v1/audit").json()["items"]
    assert audit[0]["action"] == "modality.put" and audit[0]["target_id"] == "DX_ROOM1"


def test_health_and_metrics(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    client.get("/api/v1/orders")
    body = client.get("/metrics").text
    assert "vethub_http_requests_total" in body


def test_values_the_database_cannot_hold_are_422(hub: Hub, client: TestClient) -> None:
    # PostgreSQL text cannot hold NUL and its integers stop at 2**31 - 1: it refuses the
    # query, which is the client's input, so a 422 and never a 500. SQLite holds both:
    # the search simply finds nothing (200, no items) and the id no order (404).
    on_postgresql = hub.db.engine.dialect.name == "postgresql"
    r = client.get("/api/v1/orders", params={"modality": "\x00"})
    assert r.status_code == (422 if on_postgresql else 200), r.text
    if not on_postgresql:
        assert r.json()["items"] == []
    r = client.get("/api/v1/orders", params={"patient_id": "a\x00b"})
    assert r.status_code == (422 if on_postgresql else 200), r.text
    r = client.get(f"/api/v1/orders/{2**40}")
    assert r.status_code == (422 if on_postgresql else 404), r.text
    r = client.post("/api/v1/orders", json=rex(notes="before\x00after"))
    assert r.status_code == 422 and "notes" in r.json()["detail"]
    assert client.post("/api/v1/orders", json=rex(notes="line one\nline two")).status_code == 201


# -- the sender's own identifiers (interface.md "HL7 identifiers from the sender") ---

RIS_UID = "1.2.826.0.1.3680043.10.543.1001"


def test_order_keeps_the_senders_study_uid(client: TestClient) -> None:
    r = client.post("/api/v1/orders", json=rex(study_instance_uid=RIS_UID))
    assert r.status_code == 201, r.text
    assert r.json()["study_instance_uid"] == RIS_UID
    again = client.post("/api/v1/orders", json=rex(study_instance_uid=RIS_UID))
    assert again.status_code == 200 and again.json()["id"] == r.json()["id"]


@pytest.mark.parametrize(
    "uid",
    [
        "1.2.03.4",  # a component with a leading zero
        "1.2.abc",  # not digits
        "1..2",  # an empty component
        "1.2.",  # ends with a dot
        "1." + "2" * 63,  # 65 characters
        "",
    ],
)
def test_malformed_study_uid_is_422_naming_the_field(client: TestClient, uid: str) -> None:
    r = client.post("/api/v1/orders", json=rex(study_instance_uid=uid))
    assert r.status_code == 422, r.text
    assert "study_instance_uid" in r.json()["detail"]


def test_study_uid_of_another_order_is_409(client: TestClient) -> None:
    first = client.post("/api/v1/orders", json=rex(study_instance_uid=RIS_UID))
    assert first.status_code == 201
    other = rex(placer_order_number="ORD-2", accession_number="A2", study_instance_uid=RIS_UID)
    r = client.post("/api/v1/orders", json=other)
    assert r.status_code == 409, r.text
    assert r.json()["field"] == "study_instance_uid" and RIS_UID in r.json()["detail"]
    second = client.post(
        "/api/v1/orders", json=rex(placer_order_number="ORD-2", accession_number="A2")
    )
    oid = second.json()["id"]
    r = client.patch(f"/api/v1/orders/{oid}", json={"study_instance_uid": RIS_UID})
    assert r.status_code == 409 and r.json()["field"] == "study_instance_uid"


def test_patch_changes_the_study_uid_but_cannot_remove_it(client: TestClient) -> None:
    oid = client.post("/api/v1/orders", json=REX).json()["id"]
    r = client.patch(f"/api/v1/orders/{oid}", json={"study_instance_uid": RIS_UID})
    assert r.status_code == 200, r.text
    assert r.json()["study_instance_uid"] == RIS_UID and r.json()["accession_number"] == "A1001"
    r = client.patch(f"/api/v1/orders/{oid}", json={"study_instance_uid": None})
    assert r.status_code == 422 and "study_instance_uid" in r.json()["detail"]
    assert (
        client.patch(f"/api/v1/orders/{oid}", json={"study_instance_uid": "1.02"}).status_code
        == 422
    )


def test_requested_procedure_and_step_ids_default_to_the_accession(client: TestClient) -> None:
    out = client.post("/api/v1/orders", json=REX).json()
    assert out["requested_procedure_id"] == out["scheduled_step_id"] == "A1001"
    given = rex(placer_order_number="O2", accession_number="A2", requested_procedure_id="RP2")
    out = client.post("/api/v1/orders", json=given).json()
    assert (out["requested_procedure_id"], out["scheduled_step_id"]) == ("RP2", "A2")


def test_request_hash_of_orders_without_sender_ids_is_unchanged() -> None:
    # The digest an order stored before study_instance_uid & co. existed carries
    # (computed with that version's OrderIn): its identical resend must still be a 200.
    digest = request_hash(OrderIn.model_validate(REX))
    assert digest == "900e79bcc096399c934d451e1b8511ec5308ab7e56803b2952dd22c7f132643a"
    assert request_hash(OrderIn.model_validate(rex(study_instance_uid=RIS_UID))) != digest


def test_commands_by_placer_number(hub: Hub) -> None:
    # What every practice-system adapter uses: the sender names the order by its own number.
    with hub.db.session() as s:
        order, _ = orders.place(s, OrderIn.model_validate(REX), hub.orders)
        changed = orders.update_by_placer(s, "pims-main", "ORD-1001", {"notes": "x"}, hub.orders)
        assert (changed.id, changed.notes, changed.version) == (order.id, "x", 2)
        cancelled = orders.cancel_by_placer(s, "pims-main", "ORD-1001", reason="by the PIMS")
        assert cancelled.id == order.id and cancelled.status == "cancelled"
        with pytest.raises(NotFound, match="'ORD-1001' from source 'other'"):
            orders.discontinue_by_placer(s, "other", "ORD-1001")
