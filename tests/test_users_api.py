"""Staff accounts over the API (docs/interface.md "Staff accounts and sign-in"): admin
only, field-named 422s, 409 for a taken name, and never a password or a hash out."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import select

from hub.context import Hub
from hub.models import AuditEvent, User
from tests.harness import key_for

PASSWORD = "a long enough password"


def _no_secrets(text: str) -> None:
    assert PASSWORD not in text and "argon2" not in text and "password_hash" not in text


def test_admin_creates_lists_and_changes_users(hub: Hub, client: TestClient) -> None:
    r = client.post("/api/v1/users", json={"username": "Vera", "role": "vet", "password": PASSWORD})
    assert r.status_code == 201, r.text
    _no_secrets(r.text)
    made = r.json()
    assert made["username"] == "vera" and made["role"] == "vet" and made["disabled"] is False
    with hub.db.read_session() as s:
        row = s.get(User, made["id"])
        assert row is not None and row.password_hash.startswith("$argon2id$")

    listed = client.get("/api/v1/users")
    assert listed.status_code == 200 and [u["username"] for u in listed.json()] == ["vera"]
    _no_secrets(listed.text)

    changed = client.patch(f"/api/v1/users/{made['id']}", json={"role": "tech", "disabled": True})
    assert changed.status_code == 200, changed.text
    assert changed.json()["role"] == "tech" and changed.json()["disabled"] is True
    _no_secrets(changed.text)

    new = client.post(f"/api/v1/users/{made['id']}/password", json={"password": "x" * 12})
    assert new.status_code == 204 and new.content == b""
    with hub.db.read_session() as s:
        after = s.get(User, made["id"])
        assert after is not None and after.password_hash != row.password_hash
        trail = s.scalars(
            select(AuditEvent).where(AuditEvent.target_type == "user").order_by(AuditEvent.id)
        ).all()
    assert [e.action for e in trail] == ["user.create", "user.change", "user.password"]
    assert trail[1].detail == {"role": "tech", "disabled": True}
    assert all(e.actor.startswith("key:") for e in trail)
    for e in trail:
        _no_secrets(str(e.detail))


def test_bad_input_names_the_field(hub: Hub, client: TestClient) -> None:
    base = {"username": "vera", "role": "vet", "password": PASSWORD}
    cases = {
        "password": base | {"password": "short1234"},  # 9 characters
        "role": base | {"role": "integration"},  # a key role, not a person's
        "username": base | {"username": "has space"},
    }
    for field, body in cases.items():
        r = client.post("/api/v1/users", json=body)
        assert r.status_code == 422, (field, r.text)
        assert r.json()["detail"].startswith(f"{field}:"), r.text
        assert [e["field"] for e in r.json()["errors"]] == [field]
        assert "short1234" not in r.text  # the rejected password is not echoed
    assert client.post("/api/v1/users", json=base).status_code == 201
    taken = client.post("/api/v1/users", json=base | {"username": "VERA"})
    assert taken.status_code == 409 and taken.json()["field"] == "username"
    uid = client.get("/api/v1/users").json()[0]["id"]
    assert client.patch(f"/api/v1/users/{uid}", json={"role": "owner"}).status_code == 422
    short = client.post(f"/api/v1/users/{uid}/password", json={"password": "tiny"})
    assert short.status_code == 422 and short.json()["detail"].startswith("password:")
    assert client.patch("/api/v1/users/999", json={"disabled": True}).status_code == 404


def test_only_admins_manage_users(hub: Hub, client: TestClient) -> None:
    body = {"username": "vera", "role": "vet", "password": PASSWORD}
    for role in ("integration", "frontdesk", "tech", "vet"):
        key = {"Authorization": f"Bearer {key_for(hub, role)}"}
        assert client.post("/api/v1/users", json=body, headers=key).status_code == 403
        assert client.get("/api/v1/users", headers=key).status_code == 403
    assert client.get("/api/v1/users", headers={"Authorization": ""}).status_code == 401
