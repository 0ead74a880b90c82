"""GET /api/v1/storage and /api/v1/storage/retention: what the archive holds, and what is old."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlmodel import select

from hub.context import Hub
from hub.models import Instance
from tests.harness import key_for
from tests.study_factory import CT, instance, place, store


def test_overview_groups_bytes_and_counts_and_retention_only_lists(
    hub: Hub, client: TestClient
) -> None:
    place(client)  # REX, site "main"
    study = "1.2.826.0.1.3680043.8.498.2001"
    for n in (1, 2):
        store(hub, instance(study_uid=study, accession="A1001", InstanceNumber=str(n)))
    old = instance(sop_class=CT, modality="CT", patient_id="P-1", study_date="20190301")
    store(hub, old)
    with hub.db.read_session() as s:
        sizes = {i.sop_instance_uid: i.size for i in s.scalars(select(Instance))}
    ct_bytes = sizes.pop(old.SOPInstanceUID)
    dx_bytes = sum(sizes.values())

    r = client.get("/api/v1/storage")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["totals"] == {"studies": 2, "instances": 3, "bytes": dx_bytes + ct_bytes}
    assert sorted(body["by_modality"], key=lambda b: b["modality"]) == [
        {"modality": "CT", "studies": 1, "instances": 1, "bytes": ct_bytes},
        {"modality": "DX", "studies": 1, "instances": 2, "bytes": dx_bytes},
    ]
    assert {b["site"]: b["instances"] for b in body["by_site"]} == {"main": 2, None: 1}
    assert {b["month"]: b["studies"] for b in body["by_month"]} == {"2026-11": 1, "2019-03": 1}
    assert body["month_of"] == "study_date"
    assert 0 < body["disk"]["free_bytes"] <= body["disk"]["total_bytes"]
    assert (body["retention_days"], body["past_retention"]) == (None, None)
    assert client.get("/api/v1/storage/retention").json()["count"] == 0

    hub.settings.retention_days = 5 * 365
    assert client.get("/api/v1/storage").json()["past_retention"] == 1
    listed = client.get("/api/v1/storage/retention").json()
    assert listed["count"] == 1
    assert [i["study_instance_uid"] for i in listed["items"]] == [old.StudyInstanceUID]
    assert client.get("/api/v1/storage").json()["totals"]["studies"] == 2  # nothing deleted

    vet = {"Authorization": f"Bearer {key_for(hub, 'vet')}"}
    assert client.get("/api/v1/storage", headers=vet).status_code == 403
