"""Keys scoped to a source (issue #9): a practice system's key touches only its own orders."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from fastapi.testclient import TestClient

from hub.context import Hub
from hub.services import keys
from tests.factories import rex
from tests.harness import run_cli


def scoped_key(hub: Hub, source: str, role: str = "integration") -> str:
    with hub.db.session() as s:
        _, plain = keys.create(s, f"pims-{source}", role, actor="test", source=source)
    return plain


def as_key(client: TestClient, key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_scoped_key_places_orders_of_its_source_only(client: TestClient, hub: Hub) -> None:
    key = as_key(client, scoped_key(hub, "pims-a"))
    body = rex()
    body.pop("source", None)
    made = client.post("/api/v1/orders", json=body, headers=key)
    assert made.status_code == 201, made.text
    assert made.json()["source"] == "pims-a"  # the key's source when the body names none

    same = client.post(
        "/api/v1/orders",
        json=rex(source="pims-a", placer_order_number="A-2", accession_number="A2"),
        headers=key,
    )
    assert same.status_code == 201, same.text

    other = client.post(
        "/api/v1/orders",
        json=rex(source="pims-b", placer_order_number="B-1", accession_number="B1"),
        headers=key,
    )
    assert other.status_code == 403
    assert "pims-a" in other.json()["detail"]
    listed = client.get("/api/v1/orders", params={"source": "pims-b"})
    assert listed.json()["items"] == []  # refused means not stored


def test_scoped_key_cannot_change_another_sources_order(client: TestClient, hub: Hub) -> None:
    theirs = client.post(
        "/api/v1/orders", json=rex(source="pims-b", placer_order_number="B-1")
    ).json()
    key = as_key(client, scoped_key(hub, "pims-a"))
    oid = theirs["id"]
    patched = client.patch(
        f"/api/v1/orders/{oid}",
        content=json.dumps({"notes": "mine now"}),
        headers={**key, "Content-Type": "application/merge-patch+json"},
    )
    assert patched.status_code == 403
    assert client.post(f"/api/v1/orders/{oid}/cancel", headers=key).status_code == 403
    assert client.post(f"/api/v1/orders/{oid}/discontinue", headers=key).status_code == 403
    after = client.get(f"/api/v1/orders/{oid}").json()
    assert after["status"] == "scheduled"
    assert after["notes"] != "mine now"

    # an unscoped key of the same role still may
    assert client.post(f"/api/v1/orders/{oid}/cancel").status_code == 200


def test_scope_is_refused_for_roles_that_do_not_place_orders(client: TestClient) -> None:
    r = client.post("/api/v1/keys", json={"name": "x", "role": "vet", "source": "pims-a"})
    assert r.status_code == 422
    assert "source" in r.text
    r = client.post("/api/v1/keys", json={"name": "x", "role": "frontdesk", "source": "bad name"})
    assert r.status_code == 422
    ok = client.post("/api/v1/keys", json={"name": "x", "role": "frontdesk", "source": "pims-a"})
    assert ok.status_code == 201, ok.text
    assert ok.json()["source"] == "pims-a"
    listed = {k["id"]: k for k in client.get("/api/v1/keys").json()}
    assert listed[ok.json()["id"]]["source"] == "pims-a"


def test_keys_create_source_on_the_command_line(db_url: str, tmp_path: Path) -> None:
    def vethub(*args: str) -> subprocess.CompletedProcess[str]:
        return run_cli(tmp_path, *args, db_url=db_url)

    assert vethub("db", "upgrade").returncode == 0
    made = vethub("keys", "create", "--name", "pims", "--role", "integration", "--source", "vetpms")
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout)["source"] == "vetpms"
    listed = [json.loads(line) for line in vethub("keys", "list").stdout.splitlines()]
    assert any(k["name"] == "pims" and k["source"] == "vetpms" for k in listed)
