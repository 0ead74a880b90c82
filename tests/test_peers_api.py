"""GET /api/v1/modalities/unknown and /api/v1/sources/unknown: who called unregistered."""

from __future__ import annotations

from fastapi.testclient import TestClient
from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from hub.context import Hub
from hub.services import peers
from tests.harness import key_for
from tests.worklist_scu import running_door


def test_unknown_modalities_leave_out_titles_registered_since(hub: Hub, client: TestClient) -> None:
    with hub.db.session() as s:
        peers.record(s, "dicom", "STRANGER", "10.0.0.9", refused=True)
        peers.record(s, "dicom", "DX_ROOM1", "10.0.0.20", refused=False)
        peers.record(s, "hl7", "PIMS", "10.0.0.5", refused=False)  # the other door
    r = client.get("/api/v1/modalities/unknown")
    assert r.status_code == 200, r.text
    assert {i["ae_title"] for i in r.json()["items"]} == {"STRANGER", "DX_ROOM1"}
    assert client.put("/api/v1/modalities/DX_ROOM1", json={}).status_code == 201
    (item,) = client.get("/api/v1/modalities/unknown").json()["items"]
    assert item["ae_title"] == "STRANGER" and item["address"] == "10.0.0.9"
    assert item["count"] == 1 and item["refused"] is True
    assert set(item) == {"ae_title", "address", "first_seen", "last_seen", "count", "refused"}
    # the route is not taken for a device called "unknown"
    assert client.get("/api/v1/modalities/DX_ROOM1").status_code == 200


def test_a_caller_at_the_door_shows_up_with_its_address(hub: Hub, client: TestClient) -> None:
    ae = AE(ae_title="NEW_US")
    ae.add_requested_context(Verification)
    with running_door(hub) as port:
        assoc = ae.associate("127.0.0.1", port, ae_title="VETHUB")
        assert assoc.is_established  # first-run mode: nothing registered yet
        assoc.release()
    (item,) = client.get("/api/v1/modalities/unknown").json()["items"]
    assert (item["ae_title"], item["address"], item["refused"]) == ("NEW_US", "127.0.0.1", False)


def test_unknown_senders_leave_out_those_a_source_now_allows(hub: Hub, client: TestClient) -> None:
    with hub.db.session() as s:
        peers.record(s, "hl7", "PIMS", "10.0.0.5", facility="MAIN", refused=False)
        peers.record(s, "hl7", "LAB", "10.0.1.9", facility="X", refused=True)
        peers.record(s, "hl7", "OTHER", "192.168.1.1", refused=True)
        peers.record(s, "dicom", "STRANGER", "10.0.0.9", refused=True)
    names = {i["application"] for i in client.get("/api/v1/sources/unknown").json()["items"]}
    assert names == {"PIMS", "LAB", "OTHER"}
    body = {"hl7_senders": [{"application": "pims", "facility": "main"}]}
    assert client.put("/api/v1/sources/pims-main", json=body).status_code in (200, 201)
    body = {"hl7_senders": [{"address": "10.0.1.0/24"}]}
    assert client.put("/api/v1/sources/lab", json=body).status_code in (200, 201)
    (item,) = client.get("/api/v1/sources/unknown").json()["items"]
    assert (item["application"], item["facility"], item["address"]) == ("OTHER", "", "192.168.1.1")
    assert item["refused"] is True and item["count"] == 1
    assert {"first_seen", "last_seen"} <= set(item)


def test_only_admins_see_unknown_callers(hub: Hub, client: TestClient) -> None:
    tech = {"Authorization": f"Bearer {key_for(hub, 'tech')}"}
    for path in ("/api/v1/modalities/unknown", "/api/v1/sources/unknown"):
        assert client.get(path, headers=tech).status_code == 403
        assert client.get(path, headers={"Authorization": "Bearer nope"}).status_code == 401
