"""People and keys (``/console/people``, admin only) through the app with signed-in
sessions on SQLite and PostgreSQL: accounts and keys created, changed and revoked
through the services, audited with the person; the plain key shown once; other
roles refused by URL; CSRF; escaping."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

from hub.context import Hub
from hub.services import events, keys, users
from tests.test_console_deliveries import EVIL, PASSWORD, csrf, nav_links, signed_in


def test_a_tech_does_not_see_people_and_gets_403_by_url(hub: Hub, client: TestClient) -> None:
    for role in ("frontdesk", "tech", "vet"):
        browser = signed_in(hub, client, role)
        assert "/console/people" not in nav_links(browser.get("/console").text)
        r = browser.get("/console/people")
        assert r.status_code == 403 and "may not open this page" in r.text
        made = browser.post(
            "/console/people/users",
            data={
                "csrf_token": csrf(browser),
                "username": "eve",
                "role": "admin",
                "password": "x" * 12,
            },
        )
        assert made.status_code == 403
    with hub.db.read_session() as s:
        assert "eve" not in [u.username for u in users.list_all(s)]


def test_an_admin_creates_changes_disables_and_resets_an_account(
    hub: Hub, client: TestClient
) -> None:
    admin = signed_in(hub, client, "admin", "ada")
    assert "/console/people" in nav_links(admin.get("/console").text)
    token = csrf(admin)
    no_token = admin.post(
        "/console/people/users", data={"username": "tom", "role": "tech", "password": PASSWORD}
    )
    assert no_token.status_code == 403
    r = admin.post(
        "/console/people/users",
        data={"csrf_token": token, "username": "Tom", "role": "tech", "password": PASSWORD},
        follow_redirects=False,
    )
    assert r.status_code == 303
    assert "Account tom created." in admin.get(r.headers["location"]).text
    with hub.db.read_session() as s:
        tom = users.by_name(s, "tom")
    # Tom signs in; then the admin makes him a vet, disables him (his session ends), enables.
    tom_browser = TestClient(client.app)
    assert (
        tom_browser.post(
            "/sign-in", data={"username": "tom", "password": PASSWORD}, follow_redirects=False
        ).status_code
        == 303
    )
    admin.post(f"/console/people/users/{tom.id}", data={"csrf_token": token, "role": "vet"})
    admin.post(f"/console/people/users/{tom.id}", data={"csrf_token": token, "disabled": "true"})
    assert tom_browser.get("/console", follow_redirects=False).status_code in (303, 401)
    page = admin.get("/console/people").text
    assert "Enable tom" in page
    admin.post(f"/console/people/users/{tom.id}", data={"csrf_token": token, "disabled": "false"})
    short = admin.post(
        f"/console/people/users/{tom.id}/password", data={"csrf_token": token, "password": "short"}
    )
    assert short.status_code == 400 and "password" in short.text
    admin.post(
        f"/console/people/users/{tom.id}/password",
        data={"csrf_token": token, "password": "another long secret"},
    )
    with hub.db.read_session() as s:
        tom = users.by_name(s, "tom")
        assert tom.role == "vet" and not tom.disabled
        trail, _ = events.audit_trail(s, target_id=str(tom.id))
    trail = [e for e in trail if e.action.startswith("user.")]  # not tom's own sign-in
    actions = sorted(e.action for e in trail)
    assert actions == ["user.change", "user.change", "user.change", "user.create", "user.password"]
    assert {e.actor.split(":")[-1] for e in trail} == {"ada"}
    # An admin cannot lock themselves out from here.
    me = admin.post(
        f"/console/people/users/{users_id(hub, 'ada')}",
        data={"csrf_token": token, "disabled": "true"},
    )
    assert me.status_code == 400 and "your own account" in me.text


def users_id(hub: Hub, name: str) -> int:
    with hub.db.read_session() as s:
        user_id = users.by_name(s, name).id
    assert user_id is not None
    return user_id


def test_a_new_key_is_shown_once_works_and_can_be_revoked(hub: Hub, client: TestClient) -> None:
    admin = signed_in(hub, client, "admin", "ada")
    token = csrf(admin)
    r = admin.post(
        "/console/people/keys",
        data={"csrf_token": token, "name": "pims", "role": "integration", "source": "pims-main"},
    )
    assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
    [plain] = re.findall(r'<p class="secret" id="new-key">(vh_[^<]+)</p>', r.text)
    assert "shown only this once" in r.text
    assert plain not in admin.get("/console/people").text  # never again
    machine = TestClient(client.app, headers={"Authorization": f"Bearer {plain}"})
    assert machine.get("/api/v1/orders").status_code == 200
    with hub.db.read_session() as s:
        row = next(k for k in keys.list_all(s) if k.name == "pims")
    assert row.source == "pims-main" and row.role == "integration"
    bad = admin.post(
        "/console/people/keys",
        data={"csrf_token": token, "name": "x", "role": "vet", "source": "pims-main"},
    )
    assert bad.status_code == 400 and "source" in bad.text
    revoke = admin.post(
        f"/console/people/keys/{row.id}/revoke", data={"csrf_token": token}, follow_redirects=False
    )
    assert revoke.status_code == 303
    assert machine.get("/api/v1/orders").status_code == 401
    with hub.db.read_session() as s:
        trail, _ = events.audit_trail(s, target_id=str(row.id))
    assert sorted(e.action for e in trail) == ["key.create", "key.revoke"]
    assert all(e.actor.endswith(":ada") for e in trail)


def test_names_are_escaped_on_people(hub: Hub, client: TestClient) -> None:
    admin = signed_in(hub, client, "admin")
    with hub.db.session() as s:
        keys.create(s, EVIL, "vet", actor="test")
    text = admin.get("/console/people").text
    assert EVIL not in text and "&lt;script&gt;" in text
