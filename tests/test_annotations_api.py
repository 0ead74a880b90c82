"""GET/PUT /api/v1/studies/{uid}/annotations (docs/interface.md "The viewer"): the
viewer's saved measurements, versioned, for vets and techs only, audited, on both databases."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from hub.context import Hub
from hub.errors import Conflict
from hub.services import annotation, users
from tests.harness import empty_tables, key_for, make_settings
from tests.study_factory import indexed_study, place

LENGTH = {
    "type": "length",
    "sop_instance_uid": "1.2.3.4.5",
    "frame": 1,
    "points": [[10.5, 20.0], [110.5, 20.0]],
    "label": "VHS 10.2",
}


def _url(uid: str) -> str:
    return f"/api/v1/studies/{uid}/annotations"


def test_a_vet_saves_and_reads_back_versioned_annotations(hub: Hub, client: TestClient) -> None:
    uid = indexed_study(hub, place(client), instances=1)
    vet = {"Authorization": f"Bearer {key_for(hub, 'vet')}"}
    tech = {"Authorization": f"Bearer {key_for(hub, 'tech')}"}

    empty = client.get(_url(uid), headers=vet)
    assert empty.status_code == 200
    assert empty.json() == {
        "study_instance_uid": uid,
        "annotations": [],
        "version": 0,
        "updated_by": None,
        "updated_at": None,
    }

    first = client.put(_url(uid), json={"annotations": [LENGTH], "base_version": 0}, headers=vet)
    assert first.status_code == 200, first.text
    assert first.json()["version"] == 1 and first.json()["annotations"] == [LENGTH]
    assert first.json()["updated_by"].endswith(":test-vet")

    angle = {"type": "angle", "sop_instance_uid": "1.2.3.4.5", "points": [[0, 0], [1, 1], [2, 0]]}
    second = client.put(
        _url(uid), json={"annotations": [LENGTH, angle], "base_version": 1}, headers=tech
    )
    assert second.status_code == 200 and second.json()["version"] == 2

    read = client.get(_url(uid), headers=vet).json()
    assert read["annotations"] == [LENGTH, angle]  # stored exactly as sent, in order
    assert read["version"] == 2 and read["updated_by"].endswith(":test-tech")
    assert read["updated_at"] is not None

    # A save started from version 1 would undo the tech's angle: refused, naming base_version.
    stale = client.put(_url(uid), json={"annotations": [], "base_version": 1}, headers=vet)
    assert stale.status_code == 409
    assert stale.json()["field"] == "base_version" and "version 2" in stale.json()["detail"]
    # Without base_version the save replaces the whole set (deliberately).
    cleared = client.put(_url(uid), json={"annotations": []}, headers=vet)
    assert cleared.status_code == 200 and cleared.json()["version"] == 3
    assert client.get(_url(uid), headers=vet).json()["annotations"] == []

    audit = client.get("/api/v1/audit", params={"action": "annotate", "target_id": uid}).json()
    saves = audit["items"]
    assert len(saves) == 3  # the refused save is not written
    assert {a["actor"] for a in saves} == {read["updated_by"], first.json()["updated_by"]}
    assert sorted(a["detail"]["version"] for a in saves) == [1, 2, 3]


def test_bad_saves_are_422_naming_the_field(hub: Hub, client: TestClient) -> None:
    uid = indexed_study(hub, place(client), instances=1)
    vet = {"Authorization": f"Bearer {key_for(hub, 'vet')}"}
    cases = {
        "annotations[1].type": {"annotations": [LENGTH, {**LENGTH, "type": "scribble"}]},
        "annotations[0].type": {"annotations": [{"type": ["length"]}]},
        "annotations.0": {"annotations": ["length"]},
        "annotations": {"annotations": None},
        "base_version": {"annotations": [], "base_version": -1},
        "colour": {"annotations": [], "colour": "red"},
    }
    for field, body in cases.items():
        r = client.put(_url(uid), json=body, headers=vet)
        assert r.status_code == 422, (field, r.text)
        assert field in r.json()["detail"], (field, r.json())
    malformed = client.put(
        _url(uid), content=b"{not json", headers={**vet, "content-type": "application/json"}
    )
    assert malformed.status_code == 422 and "malformed JSON" in malformed.json()["detail"]
    assert client.get(_url(uid), headers=vet).json()["version"] == 0  # nothing was saved

    unknown = client.put(_url("1.2.3.999"), json={"annotations": [LENGTH]}, headers=vet)
    assert unknown.status_code == 404 and "1.2.3.999" in unknown.json()["detail"]
    assert client.get(_url("1.2.3.999"), headers=vet).status_code == 404


def test_only_vets_and_techs_and_sessions_need_csrf(hub: Hub, client: TestClient) -> None:
    uid = indexed_study(hub, place(client), instances=1)
    body = {"annotations": [LENGTH]}
    for role in ("frontdesk", "integration"):
        other = {"Authorization": f"Bearer {key_for(hub, role)}"}
        assert client.get(_url(uid), headers=other).status_code == 403
        refused = client.put(_url(uid), json=body, headers=other)
        assert refused.status_code == 403 and refused.json()["detail"]
    assert client.get(_url(uid), headers={"Authorization": ""}).status_code == 401

    with hub.db.session() as s:
        users.create(s, "vera", "vet", "vet password 12", actor="test")
    client.headers.pop("Authorization")
    signed = client.post(
        "/sign-in", data={"username": "vera", "password": "vet password 12"}, follow_redirects=False
    )
    assert signed.status_code == 303
    assert client.get(_url(uid)).status_code == 200  # reading needs no CSRF token
    forged = client.put(_url(uid), json=body)
    assert forged.status_code == 403 and "X-CSRF-Token" in forged.json()["detail"]
    wrong = client.put(_url(uid), json=body, headers={"X-CSRF-Token": "guess"})
    assert wrong.status_code == 403
    csrf = users.csrf_token(client.cookies["vethub_session"])
    saved = client.put(_url(uid), json=body, headers={"X-CSRF-Token": csrf})
    assert saved.status_code == 200 and saved.json()["version"] == 1
    assert saved.json()["updated_by"].endswith(":vera")


def test_a_save_racing_another_is_a_conflict_not_a_lost_update(pg_url: str, tmp_path: Path) -> None:
    """PostgreSQL runs two saves of one study at once (SQLite queues its writers): the
    one that read version 1 after the other wrote version 2 must not overwrite it."""
    hub = Hub.open(make_settings(tmp_path, pg_url), upgrade=True)
    empty_tables(hub.db)
    try:
        with hub.db.session() as s:
            annotation.save(s, "1.2.3", [LENGTH], "user:1:vera")
        with pytest.raises(Conflict) as lost, hub.db.session() as first:
            read = annotation.of_study(first, "1.2.3")  # read version 1 (and kept) ...
            assert read is not None and read.version == 1
            with hub.db.session() as second:  # ... while another save commits version 2
                annotation.save(second, "1.2.3", [], "user:2:tom", base_version=1)
            annotation.save(first, "1.2.3", [LENGTH, LENGTH], "user:1:vera", base_version=1)
        assert lost.value.field == "base_version"
        with hub.db.read_session() as s:
            row = annotation.of_study(s, "1.2.3")
            assert row is not None and (row.version, row.document) == (2, [])
    finally:
        hub.close()
