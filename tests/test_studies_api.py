"""Studies REST API: list and filters, the reconciliation queue, reconcile and detach."""

from __future__ import annotations

from datetime import timedelta

import pydicom
from fastapi.testclient import TestClient
from pydicom.uid import generate_uid
from sqlalchemy import select

from hub.archive import rewrite
from hub.context import Hub
from hub.models import AuditEvent, Instance, OutboxEvent, utcnow
from tests import study_factory as sf
from tests.harness import key_for
from tests.study_factory import paths, place


def test_queue_reconcile_and_detach(hub: Hub, client: TestClient) -> None:
    order = place(client)
    # Keyed in at the device: no accession, a typo in the name, a made-up patient id.
    study_uid, series_uid = generate_uid(), generate_uid()
    datasets = [
        sf.instance(
            study_uid=study_uid,
            series_uid=series_uid,
            patient_id="",
            patient_name="Smyth^Rexx",
        )
        for _ in range(3)
    ]
    with sf.scp(hub) as scp:
        assert sf.send(scp.port, datasets) == [0, 0, 0]

    queue = client.get("/api/v1/studies", params={"matched": "false"}).json()
    assert [i["study_instance_uid"] for i in queue["items"]] == [study_uid]
    item = queue["items"][0]
    assert item["order_id"] is None and item["unmatched_reason"] == "no_match"
    assert item["instance_count"] == 3 and item["series_count"] == 1
    assert item["patient_name"] == "Smyth^Rexx"
    assert item["candidates"][0]["order_id"] == order["id"]
    assert item["candidates"][0]["accession_number"] == "A1001"
    assert item["viewer_url"] == f"http://127.0.0.1:8080/viewer/studies/{study_uid}"
    assert client.get("/api/v1/studies", params={"matched": "true"}).json()["items"] == []

    vet = key_for(hub, "vet")
    r = client.post(
        f"/api/v1/studies/{study_uid}/reconcile",
        json={"order_id": order["id"]},
        headers={"Authorization": f"Bearer {vet}"},
    )
    assert r.status_code == 403
    assert (
        client.post(f"/api/v1/studies/{study_uid}/reconcile", json={"order_id": 999}).status_code
        == 404
    )
    assert client.post(f"/api/v1/studies/{study_uid}/reconcile", json={}).status_code == 422

    tech = key_for(hub, "tech")
    r = client.post(
        f"/api/v1/studies/{study_uid}/reconcile",
        json={"order_id": order["id"]},
        headers={"Authorization": f"Bearer {tech}"},
    )
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["order_id"] == order["id"] and out["match_method"] == "manual"
    assert out["unmatched_reason"] is None
    assert out["patient_name"] == "Smyth^Rexx"  # what the device sent stays visible
    assert client.get(f"/api/v1/orders/{order['id']}").json()["status"] == "in_progress"
    for path in paths(hub, study_uid):
        ds = pydicom.dcmread(path)
        assert str(ds.PatientName) == "Smith^Rex"
        assert ds.PatientID == "P-555"
        assert ds.AccessionNumber == "A1001"
        assert ds.PatientBreedDescription == "Labrador Retriever"
        assert ds.StudyInstanceUID == study_uid  # identity of the images is kept
    with hub.db.read_session() as s:
        audit = s.scalars(select(AuditEvent).where(AuditEvent.action == "reconcile")).one()
        assert audit.detail["original"]["PatientName"] == "Smyth^Rexx"
        assert audit.actor.startswith("key:")
        kinds = [e.kind for e in s.scalars(select(OutboxEvent))]
        assert "study.reconciled" in kinds

    # Attached: another order cannot take it without a detach first.
    other = place(client, placer_order_number="ORD-2", accession_number="A2")
    r = client.post(f"/api/v1/studies/{study_uid}/reconcile", json={"order_id": other["id"]})
    assert r.status_code == 409

    r = client.post(
        f"/api/v1/studies/{study_uid}/detach", headers={"Authorization": f"Bearer {tech}"}
    )
    assert r.status_code == 200, r.text
    assert r.json()["order_id"] is None and r.json()["match_method"] is None
    for path in paths(hub, study_uid):
        ds = pydicom.dcmread(path)
        assert str(ds.PatientName) == "Smyth^Rexx"
        assert ds.PatientID == ""
        assert "PatientBreedDescription" not in ds
    with hub.db.read_session() as s:
        assert "study.detached" in [e.kind for e in s.scalars(select(OutboxEvent))]
    assert client.post(f"/api/v1/studies/{study_uid}/detach").status_code == 409


def test_filters_and_detail(hub: Hub, client: TestClient) -> None:
    order = place(client)
    matched = sf.instance(accession="A1001")
    us = sf.instance(sop_class=sf.US, modality="US", patient_id="P-9", study_date="20261126")
    with sf.scp(hub) as scp:
        assert sf.send(scp.port, [matched, us]) == [0, 0]
    q = client.get
    assert [i["order_id"] for i in q("/api/v1/studies?matched=true").json()["items"]] == [
        order["id"]
    ]
    assert len(q("/api/v1/studies?modality=US").json()["items"]) == 1
    assert len(q("/api/v1/studies?patient_id=P-9").json()["items"]) == 1
    assert len(q("/api/v1/studies?accession_number=A1001").json()["items"]) == 1
    assert len(q("/api/v1/studies?date=2026-11-26").json()["items"]) == 1
    page = q("/api/v1/studies?limit=1").json()
    assert len(page["items"]) == 1 and page["next_cursor"]
    rest = q(f"/api/v1/studies?limit=1&cursor={page['next_cursor']}").json()
    assert rest["items"][0]["study_instance_uid"] != page["items"][0]["study_instance_uid"]
    one = q(f"/api/v1/studies/{matched.StudyInstanceUID}").json()
    assert one["match_method"] == "accession" and one["instance_count"] == 1
    assert q("/api/v1/studies/1.2.3.4").status_code == 404
    assert q("/api/v1/studies?date=yesterday").status_code == 422


def test_quiet_period_completes_orders_without_mpps(hub: Hub, client: TestClient) -> None:
    order = place(client)
    with sf.scp(hub) as scp:
        assert sf.send(scp.port, [sf.instance(accession="A1001")]) == [0]
    assert sf.complete_quiet(hub) == []  # images just arrived
    later = utcnow() + timedelta(minutes=hub.settings.study_quiet_minutes + 1)
    assert sf.complete_quiet(hub, now=later) == [order["id"]]
    assert client.get(f"/api/v1/orders/{order['id']}").json()["status"] == "completed"
    with hub.db.read_session() as s:
        assert s.scalars(select(Instance)).first() is not None


def test_images_before_the_order_are_matched_when_it_arrives(hub: Hub, client: TestClient) -> None:
    ds = sf.instance(patient_id="P-555", patient_name="SMITH^REX")  # no order yet
    with sf.scp(hub) as scp:
        assert sf.send(scp.port, [ds]) == [0]
    uid = ds.StudyInstanceUID
    assert rewrite.rematch_waiting(hub) == []
    assert client.get(f"/api/v1/studies/{uid}").json()["unmatched_reason"] == "no_match"

    order = place(client)  # DX, P-555, Rex, 2026-11-27: rule 3 fits now, at once
    assert rewrite.rematch_waiting(hub) == []  # nothing left for the timed job
    body = client.get(f"/api/v1/studies/{uid}").json()
    assert body["order_id"] == order["id"] and body["match_method"] == "patient_day"
    assert client.get(f"/api/v1/orders/{order['id']}").json()["status"] == "in_progress"
    assert str(pydicom.dcmread(paths(hub, uid)[0]).PatientName) == "Smith^Rex"

    # A person says it is wrong: the automatic matcher must not put it back.
    assert client.post(f"/api/v1/studies/{uid}/detach").status_code == 200
    assert rewrite.rematch_waiting(hub) == []
    assert client.get(f"/api/v1/studies/{uid}").json()["order_id"] is None
