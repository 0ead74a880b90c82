"""Single sign-on with OpenID Connect against a real provider (oidc-provider run by
node, tests/oidc/): roles from the claim, and every bad callback refused with a
4xx page, never a 5xx (docs/interface.md "Staff accounts and sign-in")."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from hub.api.oidc import claim_values, map_role
from hub.config import Settings
from hub.context import Hub
from hub.models import AuditEvent, User
from hub.models.users import OidcLogin
from hub.serve import build_app
from hub.services import users
from tests.harness import empty_tables, make_settings
from tests.oidc_fixture import (
    CLIENT_ID,
    CLIENT_SECRET,
    Provider,
    running_provider,
    sign_in_at_provider,
)

PUBLIC = "http://testserver"
CALLBACK = f"{PUBLIC}/sign-in/oidc/callback"
ROLES = {
    "vera": ["vets", "staff"],  # a list: one value maps
    "tom": "radiology",  # a single string
    "ida": ["vets", "it-admins"],  # two map: the one with more rights wins
    "nobody": ["gardeners"],  # none maps
}
ROLE_MAP = {"vets": "vet", "radiology": "tech", "it-admins": "admin"}


@pytest.fixture(scope="module")
def provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Provider]:
    with running_provider(CALLBACK, ROLES, tmp_path_factory.mktemp("oidc")) as p:
        yield p


@pytest.fixture
def sso_hub(db_url: str, tmp_path: Path, provider: Provider) -> Iterator[Hub]:
    settings = make_settings(
        tmp_path,
        db_url,
        public_url=PUBLIC,
        oidc_issuer=provider.issuer,
        oidc_client_id=CLIENT_ID,
        oidc_client_secret=CLIENT_SECRET,
        oidc_role_map=ROLE_MAP,
        oidc_provider_name="Clinic SSO",
    )
    h = Hub.open(settings, upgrade=True)
    if h.db.engine.dialect.name == "postgresql":
        empty_tables(h.db)
    yield h
    h.close()


@pytest.fixture
def browser(sso_hub: Hub) -> Iterator[TestClient]:
    """A browser's view of the hub: cookies only, no key."""
    with TestClient(build_app(sso_hub), base_url=PUBLIC) as c:
        yield c


def begin(browser: TestClient, nxt: str | None = None) -> str:
    r = browser.get("/sign-in/oidc", params={"next": nxt} if nxt else None, follow_redirects=False)
    assert r.status_code == 303, r.text
    return r.headers["location"]


def callback(browser: TestClient, url: str) -> httpx.Response:
    parts = urlsplit(url)
    return browser.get(f"{parts.path}?{parts.query}", follow_redirects=False)


def sso(browser: TestClient, login: str, nxt: str | None = None) -> httpx.Response:
    """The whole sign-in: hub -> provider (log in, consent) -> hub's callback."""
    return callback(browser, sign_in_at_provider(begin(browser, nxt), login, CALLBACK))


def user_named(hub: Hub, name: str) -> User | None:
    with hub.db.read_session() as s:
        return s.scalars(select(User).where(User.username == name)).first()


def signed_in_as(hub: Hub, browser: TestClient) -> User | None:
    token = browser.cookies.get("vethub_session")
    return users.session_user(hub.db, token, 60) if token else None


def test_sign_in_page_offers_the_provider(browser: TestClient) -> None:
    page = browser.get("/sign-in", params={"next": "/viewer/studies/1.2"})
    assert page.status_code == 200
    assert '<a href="/sign-in/oidc?next=/viewer/studies/1.2">Sign in with Clinic SSO</a>' in (
        page.text
    )


def test_the_redirect_carries_pkce_state_and_nonce(browser: TestClient, provider: Provider) -> None:
    url = begin(browser)
    assert url.startswith(f"{provider.issuer}/auth?")
    q = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    assert q["response_type"] == "code" and q["client_id"] == CLIENT_ID
    assert q["redirect_uri"] == CALLBACK and "openid" in q["scope"].split()
    assert q["code_challenge_method"] == "S256" and len(q["code_challenge"]) == 43
    assert len(q["state"]) >= 32 and len(q["nonce"]) >= 32
    cookie = browser.cookies.get("vethub_oidc")
    assert cookie and cookie != q["state"]


def test_sso_creates_a_linked_user_with_the_mapped_role(
    sso_hub: Hub, browser: TestClient, provider: Provider
) -> None:
    r = sso(browser, "vera", nxt="/viewer/studies/1.2.3?x=1")
    assert r.status_code == 303 and r.headers["location"] == "/viewer/studies/1.2.3?x=1"
    set_cookie = r.headers.get_list("set-cookie")
    assert any(c.startswith("vethub_session=") and "HttpOnly" in c for c in set_cookie)
    who = signed_in_as(sso_hub, browser)
    assert who is not None and (who.username, who.role) == ("vera", "vet")
    assert (who.oidc_issuer, who.oidc_subject) == (provider.issuer, "vera")
    # No password opens the account.
    refused = browser.post("/sign-in", data={"username": "vera", "password": "x" * 12})
    assert refused.status_code == 401
    with pytest.raises(users.BadCredentials):
        users.sign_in(sso_hub.db, "vera", users.NO_PASSWORD, 60)
    with sso_hub.db.read_session() as s:
        audit = [(e.action, e.detail) for e in s.scalars(select(AuditEvent))]
    assert ("sign-in", {"via": "oidc"}) in audit
    assert any(a == "user.create" and d and d.get("via") == "oidc" for a, d in audit)


@pytest.mark.parametrize(("login", "role"), [("tom", "tech"), ("ida", "admin")])
def test_a_string_claim_and_the_strongest_of_several(
    sso_hub: Hub, browser: TestClient, login: str, role: str
) -> None:
    r = sso(browser, login)
    assert r.status_code == 303 and r.headers["location"] == "/console"
    who = signed_in_as(sso_hub, browser)
    assert who is not None and (who.username, who.role) == (login, role)


def test_the_role_comes_from_the_provider_at_every_sign_in(
    sso_hub: Hub, browser: TestClient
) -> None:
    assert sso(browser, "vera").status_code == 303
    with sso_hub.db.session() as s:
        s.execute(update(User).where(User.username == "vera").values(role="admin"))
    assert sso(browser, "vera").status_code == 303
    who = signed_in_as(sso_hub, browser)
    assert who is not None and who.role == "vet"
    with sso_hub.db.read_session() as s:
        users_now = list(s.scalars(select(User)))
        changes = [e.detail for e in s.scalars(select(AuditEvent)) if e.action == "user.change"]
    assert len(users_now) == 1  # the same account, found by (issuer, subject)
    assert changes == [{"role": "vet"}]


@pytest.mark.parametrize("login", ["nobody", "ghost"])  # unmapped values; no claim at all
def test_no_mapped_role_no_entry(sso_hub: Hub, browser: TestClient, login: str) -> None:
    r = sso(browser, login)
    assert r.status_code == 403
    assert "has no role in vethub" in r.text and "Sign in with Clinic SSO" in r.text
    assert "vethub_session" not in browser.cookies
    assert user_named(sso_hub, login) is None


def test_a_disabled_account_stays_refused(sso_hub: Hub, browser: TestClient) -> None:
    assert sso(browser, "vera").status_code == 303
    with sso_hub.db.session() as s:
        users.change(s, users.by_name(s, "vera"), actor="test", disabled=True)
    browser.cookies.clear()
    r = sso(browser, "vera")
    assert r.status_code == 403 and "disabled" in r.text
    assert "vethub_session" not in browser.cookies


def test_a_local_account_of_the_same_name_is_not_taken_over(
    sso_hub: Hub, browser: TestClient
) -> None:
    with sso_hub.db.session() as s:
        users.create(s, "vera", "frontdesk", "correct horse battery", actor="test")
    r = sso(browser, "vera")
    assert r.status_code == 403 and "belongs to another account" in r.text
    local = user_named(sso_hub, "vera")
    assert local is not None and local.oidc_subject is None and local.role == "frontdesk"


def test_wrong_missing_and_replayed_state_are_refused(sso_hub: Hub, browser: TestClient) -> None:
    back = sign_in_at_provider(begin(browser), "vera", CALLBACK)
    state = parse_qs(urlsplit(back).query)["state"][0]
    assert callback(browser, back.replace(state, "forged-state")).status_code == 400
    assert callback(browser, back.replace(f"state={state}", "")).status_code == 400
    first = callback(browser, back)
    assert first.status_code == 303
    browser.cookies.clear()
    replay = callback(browser, back)
    assert replay.status_code == 400 and "start again" in replay.text
    assert "vethub_session" not in browser.cookies


def test_a_callback_from_another_browser_is_refused(sso_hub: Hub, browser: TestClient) -> None:
    """Login CSRF: a callback URL an attacker got for their account, opened by a victim."""
    back = sign_in_at_provider(begin(browser), "vera", CALLBACK)
    with TestClient(build_app(sso_hub), base_url=PUBLIC) as victim:
        r = callback(victim, back)
        assert r.status_code == 400 and "vethub_session" not in victim.cookies
    assert user_named(sso_hub, "vera") is None
    assert callback(browser, back).status_code == 400  # the state was used up


def test_a_nonce_mismatch_is_refused(
    sso_hub: Hub, browser: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    back = sign_in_at_provider(begin(browser), "vera", CALLBACK)
    with sso_hub.db.session() as s:  # the ID token now carries another nonce than ours
        s.execute(update(OidcLogin).values(nonce="not-the-nonce-we-sent"))
    r = callback(browser, back)
    assert r.status_code == 400 and "vethub_session" not in browser.cookies
    assert user_named(sso_hub, "vera") is None
    assert "Invalid claim: 'nonce'" in caplog.text  # logged with the reason


def test_a_bad_code_is_refused_by_the_token_endpoint(
    sso_hub: Hub, browser: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    back = sign_in_at_provider(begin(browser), "vera", CALLBACK)
    code = parse_qs(urlsplit(back).query)["code"][0]
    r = callback(browser, back.replace(code, code[:-4] + "AAAA"))
    assert r.status_code == 400 and "start again" in r.text
    assert user_named(sso_hub, "vera") is None
    assert "token endpoint refused: invalid_grant" in caplog.text


def test_a_cancel_at_the_provider_is_a_clear_refusal(browser: TestClient) -> None:
    back = sign_in_at_provider(begin(browser), "vera", CALLBACK, cancel=True)
    assert "error=access_denied" in back
    r = callback(browser, back)
    assert r.status_code == 403 and "did not sign you in" in r.text


def test_next_cannot_leave_the_hub(browser: TestClient) -> None:
    r = sso(browser, "vera", nxt="//evil.example/x")
    assert r.status_code == 303 and r.headers["location"] == "/console"


def test_roles_only_in_userinfo_are_read_there(db_url: str, tmp_path: Path) -> None:
    """Providers that keep custom claims out of the ID token (oidc-provider's default)."""
    with running_provider(CALLBACK, ROLES, tmp_path / "oidc", claims_in_userinfo=True) as p:
        settings = make_settings(
            tmp_path,
            db_url,
            public_url=PUBLIC,
            oidc_issuer=p.issuer,
            oidc_client_id=CLIENT_ID,
            oidc_client_secret=CLIENT_SECRET,
            oidc_role_map=ROLE_MAP,
        )
        h = Hub.open(settings, upgrade=True)
        if h.db.engine.dialect.name == "postgresql":
            empty_tables(h.db)
        try:
            with TestClient(build_app(h), base_url=PUBLIC) as c:
                back = sign_in_at_provider(begin(c), "tom", CALLBACK)
                r = callback(c, back)
                assert r.status_code == 303
                who = signed_in_as(h, c)
                assert who is not None and (who.username, who.role) == ("tom", "tech")
        finally:
            h.close()


@pytest.mark.parametrize(
    ("claims", "path", "values"),
    [
        ({"roles": "vets"}, "roles", ["vets"]),
        ({"roles": ["vets", 7, None, "x"]}, "roles", ["vets", "x"]),
        ({"realm_access": {"roles": ["vethub-vet"]}}, "realm_access.roles", ["vethub-vet"]),
        ({"realm_access": ["no", "object"]}, "realm_access.roles", []),
        ({"roles": {"not": "a list"}}, "roles", []),
        ({}, "roles", []),
    ],
)
def test_claim_values(claims: dict[str, object], path: str, values: list[str]) -> None:
    assert claim_values(claims, path) == values


def test_map_role_takes_the_most_rights_and_refuses_none() -> None:
    settings = Settings(oidc_role_map={"a": "frontdesk", "b": "vet", "c": "tech"})
    assert map_role(settings, {"roles": ["a", "c", "b", "zzz"]}) == "vet"
    with pytest.raises(Exception, match="no mapped role"):
        map_role(settings, {"roles": ["zzz"]})


def test_without_a_provider_there_is_no_button_and_no_flow(db_url: str, tmp_path: Path) -> None:
    h = Hub.open(make_settings(tmp_path, db_url), upgrade=True)
    try:
        with TestClient(build_app(h)) as c:
            assert "Sign in with" not in c.get("/sign-in").text
            assert c.get("/sign-in/oidc", follow_redirects=False).status_code == 404
            assert c.get("/sign-in/oidc/callback?state=x&code=y").status_code == 404
    finally:
        h.close()
