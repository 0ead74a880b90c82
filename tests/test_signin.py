"""Staff sign-in (docs/interface.md "Staff accounts and sign-in"): the form, the
session cookie, lockout, idle expiry, CSRF, and what a session may do on /api/v1."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest
from argon2 import PasswordHasher
from fastapi.testclient import TestClient
from pydicom.uid import generate_uid
from sqlalchemy import select, update

from hub.context import Hub
from hub.models import AuditEvent, SignInFailure, StaffSession, User, utcnow
from hub.services import users
from tests import study_factory as sf
from tests.study_factory import place

FORM = {"content-type": "application/x-www-form-urlencoded"}
PASSWORD = "correct horse battery"


def make_user(hub: Hub, username: str, role: str, password: str = PASSWORD) -> int:
    with hub.db.session() as s:
        user = users.create(s, username, role, password, actor="test")
        assert user.id is not None
        return user.id


@pytest.fixture
def browser(client: TestClient) -> TestClient:
    """The test client without the admin key: only what a browser has (cookies)."""
    client.headers.pop("Authorization")
    return client


def sign_in(
    client: TestClient, username: str, password: str = PASSWORD, nxt: str | None = None
) -> httpx.Response:
    data = {"username": username, "password": password} | ({"next": nxt} if nxt else {})
    return client.post("/sign-in", data=data, follow_redirects=False)


def csrf(client: TestClient) -> str:
    return users.csrf_token(client.cookies["vethub_session"])


def test_sign_in_sets_a_session_cookie_and_lands_on_the_console(
    hub: Hub, browser: TestClient
) -> None:
    make_user(hub, "Anna", "vet")
    form = browser.get("/sign-in")
    assert form.status_code == 200 and 'name="password"' in form.text
    assert "frame-ancestors 'none'" in form.headers["content-security-policy"]
    assert form.headers["cache-control"] == "no-store"
    assert "<script" not in form.text and "http" not in form.text.split("<body>", 1)[1]

    r = sign_in(browser, "anna")  # usernames are not case-sensitive
    assert r.status_code == 303 and r.headers["location"] == "/console"
    cookie = r.headers["set-cookie"].lower()
    assert "vethub_session=" in cookie and "httponly" in cookie and "samesite=lax" in cookie
    assert "secure" not in cookie  # plain HTTP here; tests/test_browser_signin.py is the browser
    console = browser.get("/console")
    assert console.status_code == 200
    assert "Signed in as <strong>anna</strong> (vet)" in console.text
    assert csrf(browser) in console.text  # the sign-out form carries the token

    with hub.db.read_session() as s:
        actions = [e.action for e in s.scalars(select(AuditEvent))]
    assert "sign-in" in actions


def test_https_sign_in_cookie_is_secure(hub: Hub, client: TestClient) -> None:
    make_user(hub, "anna", "vet")
    secure = TestClient(client.app, base_url="https://testserver")
    r = sign_in(secure, "anna")
    assert r.status_code == 303 and "secure" in r.headers["set-cookie"].lower()


def test_wrong_credentials_give_the_form_again_without_a_hint(
    hub: Hub, browser: TestClient
) -> None:
    make_user(hub, "anna", "vet")
    make_user(hub, "ben", "tech")
    with hub.db.session() as s:
        users.change(s, users.by_name(s, "ben"), actor="test", disabled=True)
    answers = [
        sign_in(browser, "anna", "wrong password!"),
        sign_in(browser, "nobody", PASSWORD),
        sign_in(browser, "ben", PASSWORD),  # disabled
        sign_in(browser, "", ""),
    ]
    for r in answers:
        assert r.status_code == 401
        assert 'name="password"' in r.text
        assert "set-cookie" not in r.headers
    # One message whatever was wrong.
    assert len({r.text for r in answers}) == 1
    assert (
        browser.get("/console", headers={"accept": "text/html"}, follow_redirects=False).status_code
        == 303
    )


def test_five_failures_lock_the_username_for_fifteen_minutes(hub: Hub, browser: TestClient) -> None:
    make_user(hub, "anna", "vet")
    for _ in range(5):
        assert sign_in(browser, "anna", "not the password").status_code == 401
    locked = sign_in(browser, "anna")  # the right password, still refused
    assert locked.status_code == 429
    assert locked.headers["retry-after"] == "900"
    assert "set-cookie" not in locked.headers
    # Unknown usernames lock the same way (429 does not tell which names exist).
    for _ in range(5):
        sign_in(browser, "ghost", "whatever-123")
    assert sign_in(browser, "ghost", "whatever-123").status_code == 429
    # Other usernames are not affected.
    make_user(hub, "ben", "tech")
    assert sign_in(browser, "ben").status_code == 303

    # The failures' times moved back: 14 minutes on, still locked; 15, anna signs in.
    _failures_ago(hub, "anna", timedelta(minutes=14))
    assert sign_in(browser, "anna").status_code == 429
    _failures_ago(hub, "anna", timedelta(minutes=15, seconds=1))
    assert sign_in(browser, "anna").status_code == 303
    with hub.db.read_session() as s:
        left = s.scalars(select(SignInFailure).where(SignInFailure.username == "anna")).all()
        assert left == []  # a success clears the count
        locks = s.scalars(select(AuditEvent).where(AuditEvent.action == "user.locked")).all()
        assert {e.target_id for e in locks} == {"anna", "ghost"}


def _failures_ago(hub: Hub, username: str, ago: timedelta) -> None:
    with hub.db.session() as s:
        s.execute(
            update(SignInFailure)
            .where(SignInFailure.username == username)
            .values(at=utcnow() - ago)
        )


def test_an_old_hash_is_upgraded_at_sign_in(hub: Hub, browser: TestClient) -> None:
    user_id = make_user(hub, "anna", "vet")
    weak = PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1).hash(PASSWORD)
    with hub.db.session() as s:
        s.execute(update(User).where(User.id == user_id).values(password_hash=weak))
    assert sign_in(browser, "anna").status_code == 303
    with hub.db.read_session() as s:
        upgraded = s.get(User, user_id)
    assert upgraded is not None and upgraded.password_hash != weak
    assert upgraded.password_hash.startswith("$argon2id$")
    assert not PasswordHasher().check_needs_rehash(upgraded.password_hash)


def test_failures_spread_over_more_than_fifteen_minutes_do_not_lock(
    hub: Hub, browser: TestClient
) -> None:
    make_user(hub, "anna", "vet")
    for _ in range(4):
        sign_in(browser, "anna", "not the password")
    _failures_ago(hub, "anna", timedelta(minutes=16))
    assert sign_in(browser, "anna", "not the password").status_code == 401
    assert sign_in(browser, "anna").status_code == 303


def test_idle_sessions_end(hub: Hub, browser: TestClient) -> None:
    make_user(hub, "anna", "vet")
    sign_in(browser, "anna")
    assert browser.get("/console").status_code == 200
    idle = hub.settings.session_idle_minutes
    # Used 2 minutes ago: still valid, and the use is recorded (at most once a minute).
    with hub.db.session() as s:
        s.execute(update(StaffSession).values(last_used_at=utcnow() - timedelta(minutes=2)))
    assert browser.get("/api/v1/orders").status_code == 200
    with hub.db.read_session() as s:
        last = s.scalars(select(StaffSession.last_used_at)).one()
    assert utcnow() - last.replace(tzinfo=utcnow().tzinfo) < timedelta(seconds=30)
    # Unused for the idle time: over.
    with hub.db.session() as s:
        s.execute(
            update(StaffSession).values(last_used_at=utcnow() - timedelta(minutes=idle, seconds=1))
        )
    assert browser.get("/api/v1/orders").status_code == 401
    assert (
        browser.get("/console", headers={"accept": "text/html"}, follow_redirects=False).headers[
            "location"
        ]
        == "/sign-in?next=/console"
    )
    # The next sign-in forgets sessions that have ended.
    sign_in(browser, "anna")
    with hub.db.read_session() as s:
        assert len(s.scalars(select(StaffSession)).all()) == 1


def test_next_must_be_a_local_path(hub: Hub, browser: TestClient) -> None:
    make_user(hub, "anna", "vet")
    cases = {
        "/viewer/studies/1.2.3?x=1": "/viewer/studies/1.2.3?x=1",
        "https://evil.example/": "/console",
        "//evil.example/path": "/console",
        "/\\evil.example": "/console",
        "/\t/evil.example": "/console",
        "javascript:alert(1)": "/console",
        "evil.example": "/console",
        "": "/console",
    }
    for nxt, landing in cases.items():
        browser.cookies.clear()
        r = sign_in(browser, "anna", nxt=nxt or None)
        assert r.headers["location"] == landing, nxt
    # The form carries next through a failed attempt, escaped.
    r = browser.get("/sign-in", params={"next": '/viewer/studies/1"><b>x'})
    assert 'value="/viewer/studies/1&quot;&gt;&lt;b&gt;x"' in r.text


def test_sign_in_refuses_another_site(hub: Hub, browser: TestClient) -> None:
    make_user(hub, "anna", "vet")
    body = f"username=anna&password={PASSWORD.replace(' ', '+')}"
    refused = [
        {"origin": "https://evil.example"},
        {"referer": "https://evil.example/page"},
        {"sec-fetch-site": "cross-site", "origin": "null"},
        {"sec-fetch-site": "same-site", "origin": "https://other.clinic.example"},
        {"origin": "http://testserver.evil.example"},
    ]
    for headers in refused:
        r = browser.post(
            "/sign-in", content=body, headers={**FORM, **headers}, follow_redirects=False
        )
        assert r.status_code == 403, headers
        assert "another site" in r.text and "set-cookie" not in r.headers
    accepted = [
        {},  # not a browser
        {"origin": "http://testserver"},
        {"referer": "http://testserver/sign-in"},
        {"origin": hub.settings.public_url},
        {"sec-fetch-site": "same-origin", "origin": "null"},  # our page sends no referrer
    ]
    for headers in accepted:
        r = browser.post(
            "/sign-in", content=body, headers={**FORM, **headers}, follow_redirects=False
        )
        assert r.status_code == 303, headers


def test_sign_out_needs_the_csrf_token_and_ends_the_session(hub: Hub, browser: TestClient) -> None:
    make_user(hub, "anna", "vet")
    sign_in(browser, "anna")
    assert browser.post("/sign-out", follow_redirects=False).status_code == 403
    evil = browser.post(
        "/sign-out",
        data={"csrf_token": csrf(browser)},
        headers={"origin": "https://evil.example"},
        follow_redirects=False,
    )
    assert evil.status_code == 403
    assert browser.get("/console").status_code == 200  # still signed in
    r = browser.post("/sign-out", data={"csrf_token": csrf(browser)}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/sign-in"
    with hub.db.read_session() as s:
        assert s.scalars(select(StaffSession)).all() == []
        assert "sign-out" in [e.action for e in s.scalars(select(AuditEvent))]


def test_a_forged_cookie_opens_nothing(hub: Hub, browser: TestClient) -> None:
    browser.cookies.set("vethub_session", "forged-" + "x" * 40)
    assert browser.get("/api/v1/orders").status_code == 401
    assert browser.get("/console").status_code == 401
    # It passes the door's anonymous check, but still learns nothing of the schemas.
    r = browser.post("/api/v1/orders", json={"nonsense": 1})
    assert r.status_code == 401 and "errors" not in r.json()


def test_an_over_long_username_is_not_cut_to_a_real_one(hub: Hub, browser: TestClient) -> None:
    name = "a" * 64
    make_user(hub, name, "vet")
    assert sign_in(browser, name).status_code == 303
    browser.cookies.clear()
    assert sign_in(browser, name + "zz").status_code == 401


def _waiting_study(hub: Hub) -> str:
    uid = generate_uid()
    sf.store(hub, sf.instance(study_uid=uid, patient_id="", patient_name="Smyth^Rexx"))
    return uid


def test_a_session_may_do_what_its_role_may_on_the_api(hub: Hub, client: TestClient) -> None:
    order = place(client)  # with the admin key
    uid = _waiting_study(hub)
    client.headers.pop("Authorization")
    tech_id = make_user(hub, "tina", "tech")
    assert sign_in(client, "tina").status_code == 303
    token = {"X-CSRF-Token": csrf(client)}

    assert client.get("/api/v1/studies", params={"matched": "false"}).status_code == 200
    # A cookie alone does not change anything: another site can make a browser send it.
    body = {"order_id": order["id"]}
    assert client.post(f"/api/v1/studies/{uid}/reconcile", json=body).status_code == 403
    wrong = {"X-CSRF-Token": "0" * 64}
    assert (
        client.post(f"/api/v1/studies/{uid}/reconcile", json=body, headers=wrong).status_code == 403
    )
    r = client.post(f"/api/v1/studies/{uid}/reconcile", json=body, headers=token)
    assert r.status_code == 200, r.text
    # Not what a tech may not do.
    keys = client.post("/api/v1/keys", json={"name": "x", "role": "admin"}, headers=token)
    assert keys.status_code == 403
    assert client.get("/api/v1/users").status_code == 403

    with hub.db.read_session() as s:
        audit = s.scalars(select(AuditEvent).where(AuditEvent.action == "reconcile")).one()
    assert audit.actor == f"user:{tech_id}:tina"

    # Disabling the account ends the session at once.
    with hub.db.session() as s:
        users.change(s, users.get(s, tech_id), actor="test", disabled=True)
    assert client.get("/api/v1/studies").status_code == 401


def test_bearer_keys_need_no_csrf_token(hub: Hub, client: TestClient) -> None:
    make_user(hub, "anna", "admin")
    sign_in(client, "anna")  # a session cookie too, but the key decides
    r = client.post("/api/v1/keys", json={"name": "pims", "role": "integration"})
    assert r.status_code == 201, r.text


def test_an_admin_session_manages_users_with_its_token(hub: Hub, browser: TestClient) -> None:
    make_user(hub, "root", "admin")
    sign_in(browser, "root")
    new = {"username": "vera", "role": "vet", "password": "a long password"}
    assert browser.post("/api/v1/users", json=new).status_code == 403
    r = browser.post("/api/v1/users", json=new, headers={"X-CSRF-Token": csrf(browser)})
    assert r.status_code == 201, r.text
    with hub.db.read_session() as s:
        made = s.scalars(select(AuditEvent).where(AuditEvent.action == "user.create")).all()
    assert made[-1].actor.startswith("user:") and made[-1].actor.endswith(":root")


def test_the_former_sign_in_address_is_an_alias(hub: Hub, browser: TestClient) -> None:
    make_user(hub, "anna", "vet")
    assert 'action="/sign-in"' in browser.get("/viewer/sign-in").text
    old = browser.post(
        "/viewer/sign-in",
        data={"username": "anna", "password": PASSWORD, "next": "/viewer/studies/1.2"},
        follow_redirects=False,
    )
    assert old.status_code == 303 and old.headers["location"] == "/viewer/studies/1.2"
    assert browser.post("/viewer/sign-in", data={"key": "vh_x"}).status_code == 401
