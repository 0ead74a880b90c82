"""Single sign-on with OpenID Connect (docs/interface.md "Staff accounts and sign-in",
docs/accounts.md "Single sign-on").

Authorization code flow with PKCE (S256), state and nonce, on Authlib: its
httpx client builds the authorization URL and redeems the code, and its OIDC
claims classes check the ID token (issuer, audience, expiry, nonce, azp,
at_hash) once joserfc, Authlib's JOSE library, has checked the signature
against the provider's keys from discovery.

What the callback must match (state, nonce, PKCE verifier, ``next``) is kept
in the database, not in a cookie: nothing here signs anything. The only
cookie is a random value whose hash is stored with the state, so a callback
URL someone else obtained signs no one in from another browser (login CSRF).
A state is deleted at its first use, whatever the outcome, and lasts
``FLOW_TTL`` at most.

Production issuers are https; plain http is accepted only on a loopback
address (a provider on the same machine, the tests), as Authlib itself does.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import secrets
import time
import warnings
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
from authlib.common.security import generate_token
from authlib.deprecate import AuthlibDeprecationWarning
from authlib.integrations.base_client.errors import OAuthError
from authlib.oidc.core import CodeIDToken
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse, Response
from joserfc import jwt
from joserfc.errors import InvalidKeyIdError, JoseError
from joserfc.jwk import KeySet
from joserfc.jws import JWSRegistry
from sqlalchemy import delete, select
from sqlmodel import col

from hub.api.signin import LANDING, form_page, https, safe_next, start_session_response
from hub.config import Settings
from hub.context import Hub
from hub.models import as_utc, utcnow
from hub.models.users import OidcLogin
from hub.services import users
from hub.tls import client_context

# Authlib's httpx client runs on httpx (the hub's HTTP client) and says at import
# that a later Authlib will want httpx2 instead; pyproject pins authlib below 2.
# Silenced here so that it is not printed by every `vethub` command.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", AuthlibDeprecationWarning)
    from authlib.integrations.httpx_client import AsyncOAuth2Client

router = APIRouter(tags=["sign-in"], include_in_schema=False)
log = logging.getLogger("hub.api.oidc")

FLOW_COOKIE = "vethub_oidc"
FLOW_PATH = "/sign-in/oidc"
CALLBACK_PATH = "/sign-in/oidc/callback"
FLOW_TTL = timedelta(minutes=10)
SCOPE = "openid profile email"
METADATA_TTL = 3600.0  # seconds; keys are fetched again at once for an unknown kid
LEEWAY = 60  # seconds of clock skew allowed on exp/iat
HTTP_TIMEOUT = 10.0
MAX_NEXT = 2048

# Authlib's httpx client is built on httpx2 where that is installed, on httpx otherwise.
_NET_ERRORS: tuple[type[Exception], ...] = (httpx.HTTPError, OSError, ValueError)
try:
    import httpx2

    _NET_ERRORS += (httpx2.HTTPError,)
except ImportError:
    pass


class SsoError(Exception):
    """A sign-in the hub refuses: ``message`` is for the person, ``reason`` for the log."""

    def __init__(self, status: int, message: str, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.message = message
        self.reason = reason


def enabled(settings: Settings) -> bool:
    """Whether single sign-on is set up (the sign-in page then offers it)."""
    return bool(settings.oidc_issuer and settings.oidc_client_id)


def redirect_uri(settings: Settings) -> str:
    """The callback to register at the provider: ``<public_url>/sign-in/oidc/callback``."""
    return settings.public_url.rstrip("/") + CALLBACK_PATH


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def _loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_transport(issuer: str, url: str, what: str) -> None:
    """https everywhere; http only when the issuer itself is http on a loopback address."""
    scheme = urlsplit(url).scheme
    if scheme == "https":
        return
    if scheme == "http" and urlsplit(issuer).scheme == "http" and _loopback(url):
        return
    raise SsoError(
        503,
        "Single sign-on is not set up correctly on this hub (ask the clinic's IT person).",
        f"{what} {url!r} is not https (http only for a loopback issuer)",
    )


@dataclass
class _Provider:
    """The provider's discovery document and keys, fetched when first needed."""

    metadata: dict[str, Any] = field(default_factory=dict)
    jwks: dict[str, Any] | None = None
    fetched: float = 0.0


def _client(settings: Settings, token: dict[str, Any] | None = None) -> AsyncOAuth2Client:
    return AsyncOAuth2Client(
        token=token,
        client_id=settings.oidc_client_id,
        client_secret=settings.oidc_client_secret,
        token_endpoint_auth_method=(
            "client_secret_basic" if settings.oidc_client_secret else "none"
        ),
        scope=SCOPE,
        redirect_uri=redirect_uri(settings),
        code_challenge_method="S256",
        timeout=HTTP_TIMEOUT,
        verify=client_context(settings),
    )


async def _get_json(settings: Settings, url: str, what: str) -> dict[str, Any]:
    try:
        async with _client(settings) as client:
            resp = await client.request("GET", url, withhold_token=True)
            resp.raise_for_status()
            doc = resp.json()
    except _NET_ERRORS as exc:
        raise SsoError(
            502,
            "The sign-in provider could not be reached. Try again in a minute, or sign in "
            "with your password.",
            f"{what} {url}: {exc}",
        ) from exc
    if not isinstance(doc, dict):
        raise SsoError(502, "The sign-in provider answered nonsense.", f"{what} is not an object")
    return doc


def _provider(request: Request) -> _Provider:
    state = request.app.state
    if not hasattr(state, "oidc_provider"):
        state.oidc_provider = _Provider()
    found: _Provider = state.oidc_provider
    return found


async def _metadata(request: Request) -> dict[str, Any]:
    """The discovery document, checked: its issuer is ours and its endpoints are https."""
    settings: Settings = request.app.state.hub.settings
    cached = _provider(request)
    if cached.metadata and time.monotonic() - cached.fetched < METADATA_TTL:
        return cached.metadata
    issuer = str(settings.oidc_issuer)
    _check_transport(issuer, issuer, "VETHUB_OIDC_ISSUER")
    url = issuer.rstrip("/") + "/.well-known/openid-configuration"
    doc = await _get_json(settings, url, "discovery")
    if str(doc.get("issuer", "")).rstrip("/") != issuer.rstrip("/"):
        raise SsoError(
            502,
            "The sign-in provider's address does not match this hub's setting.",
            f"discovery issuer {doc.get('issuer')!r} is not {issuer!r}",
        )
    for name in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
        if not isinstance(doc.get(name), str):
            raise SsoError(502, "The sign-in provider answered nonsense.", f"no {name}")
        _check_transport(issuer, doc[name], name)
    cached.metadata, cached.jwks, cached.fetched = doc, None, time.monotonic()
    return doc


async def _keys(request: Request, *, fresh: bool = False) -> KeySet:
    cached = _provider(request)
    if cached.jwks is None or fresh:
        settings = request.app.state.hub.settings
        cached.jwks = await _get_json(settings, cached.metadata["jwks_uri"], "jwks")
    try:
        return KeySet.import_key_set(cached.jwks)  # type: ignore[arg-type]
    except (JoseError, ValueError, KeyError, TypeError) as exc:
        raise SsoError(502, "The sign-in provider's keys are unusable.", f"jwks: {exc}") from exc


def _page(request: Request, err: SsoError) -> Response:
    """The sign-in page with what went wrong. The flow cookie stays: a forged
    callback must not spoil a sign-in this browser has under way."""
    log.warning(
        "sso sign-in refused: %s", err.reason, extra={"status": err.status, "reason": err.reason}
    )
    return form_page(request, LANDING, err.message, err.status)


@router.get(FLOW_PATH)
async def begin(request: Request, next: str | None = None) -> Response:
    """Send the browser to the provider, with state, nonce and a PKCE challenge."""
    settings: Settings = request.app.state.hub.settings
    if not enabled(settings):
        return _page(request, SsoError(404, "Single sign-on is not set up.", "not configured"))
    nxt = safe_next(next)
    if len(nxt) > MAX_NEXT:
        nxt = LANDING
    try:
        metadata = await _metadata(request)
    except SsoError as err:
        return _page(request, err)
    state, nonce, browser = (secrets.token_urlsafe(32) for _ in range(3))
    verifier = generate_token(64)  # RFC 7636: 43-128 characters
    row = OidcLogin(
        state_hash=_digest(state),
        browser_hash=_digest(browser),
        nonce=nonce,
        code_verifier=verifier,
        next_path=nxt,
    )
    await run_in_threadpool(_store, request.app.state.hub, row)
    async with _client(settings) as client:
        url, _ = client.create_authorization_url(
            metadata["authorization_endpoint"], state=state, code_verifier=verifier, nonce=nonce
        )
    response = RedirectResponse(url, status_code=303)
    response.set_cookie(
        FLOW_COOKIE,
        browser,
        max_age=int(FLOW_TTL.total_seconds()),
        path=FLOW_PATH,
        httponly=True,
        samesite="lax",  # sent on the provider's top-level redirect back to us
        secure=https(request),
    )
    return response


def _store(hub: Hub, row: OidcLogin) -> None:
    with hub.db.session() as s:
        s.execute(delete(OidcLogin).where(col(OidcLogin.created_at) < utcnow() - FLOW_TTL))
        s.add(row)


def _take(hub: Hub, state: str) -> OidcLogin | None:
    """The sign-in begun with ``state``, deleted so that it is good only once."""
    with hub.db.session() as s:
        found = s.scalars(
            select(OidcLogin).where(col(OidcLogin.state_hash) == _digest(state))
        ).first()
        if found is None:
            return None
        gone = s.execute(delete(OidcLogin).where(col(OidcLogin.id) == found.id))
        s.expunge(found)
    # Two callbacks racing with one state: only the one whose delete took it wins.
    return found if gone.rowcount == 1 else None  # type: ignore[attr-defined]


@router.get(CALLBACK_PATH)
async def callback(request: Request) -> Response:
    """The provider sends the browser back here: check everything, then sign in."""
    if not enabled(request.app.state.hub.settings):
        return _page(request, SsoError(404, "Single sign-on is not set up.", "not configured"))
    try:
        return await _complete(request)
    except SsoError as err:
        return _page(request, err)


async def _complete(request: Request) -> Response:
    hub: Hub = request.app.state.hub
    settings = hub.settings
    params = request.query_params
    login = await _flow(request, params.get("state"))
    if error := params.get("error"):
        said = f"{error}: {params.get('error_description', '')}".strip(": ")
        status = 403 if error == "access_denied" else 400
        raise SsoError(status, f"The sign-in provider did not sign you in ({said}).", said)
    metadata = await _metadata(request)
    issuer = metadata["issuer"]
    if "iss" in params and params["iss"] != issuer:  # RFC 9207: a mix-up of providers
        raise SsoError(400, _START_AGAIN, f"callback iss {params['iss']!r} is not {issuer!r}")
    code = params.get("code")
    if not code:
        raise SsoError(400, _START_AGAIN, "callback without a code")
    token = await _redeem(settings, metadata, code, login.code_verifier)
    claims: dict[str, Any] = dict(await _id_token(request, token, issuer, login.nonce))
    if not claim_values(claims, settings.oidc_role_claim):
        claims = await _with_userinfo(settings, metadata, token, claims)
    role = map_role(settings, claims)
    names = [str(claims[k]) for k in ("preferred_username", "email") if claims.get(k)]
    try:
        user, session_token = await run_in_threadpool(
            users.sign_in_oidc,
            hub.db,
            issuer,
            str(claims["sub"]),
            names,
            role,
            settings.session_idle_minutes,
        )
    except users.SsoRefused as exc:
        raise SsoError(403, f"You cannot sign in: {exc}.", str(exc)) from exc
    log.info("sso sign-in", extra={"user_id": user.id, "role": role})
    response = start_session_response(request, session_token, login.next_path)
    response.delete_cookie(FLOW_COOKIE, path=FLOW_PATH, httponly=True, samesite="lax")
    return response


_START_AGAIN = "This sign-in could not be completed. Please start again."


async def _flow(request: Request, state: str | None) -> OidcLogin:
    """The stored sign-in this callback belongs to, from this browser, in time."""
    if not state:
        raise SsoError(400, _START_AGAIN, "callback without state")
    login = await run_in_threadpool(_take, request.app.state.hub, state)
    if login is None:
        raise SsoError(400, _START_AGAIN, "unknown or already used state")
    browser = request.cookies.get(FLOW_COOKIE, "")
    if not hmac.compare_digest(_digest(browser), login.browser_hash):
        raise SsoError(400, _START_AGAIN, "state begun in another browser")
    if as_utc(login.created_at) < utcnow() - FLOW_TTL:
        raise SsoError(400, _START_AGAIN, "state expired")
    return login


async def _redeem(
    settings: Settings, metadata: dict[str, Any], code: str, verifier: str
) -> dict[str, Any]:
    """The token response for ``code`` (with the PKCE verifier)."""
    try:
        async with _client(settings) as client:
            token = await client.fetch_token(
                metadata["token_endpoint"],
                grant_type="authorization_code",
                code=code,
                code_verifier=verifier,
            )
    except OAuthError as exc:
        raise SsoError(
            400, _START_AGAIN, f"token endpoint refused: {exc.error} {exc.description}"
        ) from exc
    except _NET_ERRORS as exc:
        raise SsoError(
            502, "The sign-in provider could not be reached. Try again.", f"token: {exc}"
        ) from exc
    if not isinstance(token.get("id_token"), str):
        raise SsoError(400, _START_AGAIN, "token response without an id_token")
    return dict(token)


async def _id_token(
    request: Request, token: dict[str, Any], issuer: str, nonce: str
) -> CodeIDToken:
    """The ID token's claims, once its signature, issuer, audience, expiry and nonce hold."""
    settings: Settings = request.app.state.hub.settings
    metadata = _provider(request).metadata
    algs = [
        a for a in metadata.get("id_token_signing_alg_values_supported", ["RS256"]) if a != "none"
    ]
    registry = JWSRegistry(algorithms=algs or ["RS256"])
    try:
        try:
            decoded = jwt.decode(token["id_token"], await _keys(request), registry=registry)
        except InvalidKeyIdError:  # the provider rotated its keys
            decoded = jwt.decode(
                token["id_token"], await _keys(request, fresh=True), registry=registry
            )
        claims = CodeIDToken(
            decoded.claims,
            decoded.header,
            {
                "iss": {"essential": True, "value": issuer},
                "aud": {"essential": True, "value": str(settings.oidc_client_id)},
            },
            {
                "nonce": nonce,
                "client_id": settings.oidc_client_id,
                "access_token": token.get("access_token"),
            },
        )
        claims.validate(leeway=LEEWAY)
    except (JoseError, ValueError) as exc:
        raise SsoError(400, _START_AGAIN, f"id token refused: {exc}") from exc
    if "nonce" not in claims:  # we always send one, so it must come back
        raise SsoError(400, _START_AGAIN, "id token refused: no nonce")
    return claims


async def _with_userinfo(
    settings: Settings, metadata: dict[str, Any], token: dict[str, Any], claims: dict[str, Any]
) -> dict[str, Any]:
    """The ID token's claims completed by the userinfo endpoint, for providers that
    put the role claim only there; the ID token's own claims win."""
    endpoint = metadata.get("userinfo_endpoint")
    if not isinstance(endpoint, str) or not token.get("access_token"):
        return claims
    _check_transport(metadata["issuer"], endpoint, "userinfo_endpoint")
    try:
        async with _client(settings, token) as client:
            resp = await client.get(endpoint)
            resp.raise_for_status()
            info = resp.json()
    except _NET_ERRORS as exc:
        raise SsoError(
            502, "The sign-in provider could not be reached. Try again.", f"userinfo: {exc}"
        ) from exc
    if not isinstance(info, dict) or info.get("sub") != claims.get("sub"):
        raise SsoError(400, _START_AGAIN, "userinfo is not about the ID token's subject")
    return {**info, **claims}


def claim_values(claims: dict[str, Any], path: str) -> list[str]:
    """The role claim's values: a string or a list, at a dotted path
    (``realm_access.roles`` in Keycloak)."""
    value: Any = claims
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    return []


def map_role(settings: Settings, claims: dict[str, Any]) -> str:
    """The hub role the claim maps to; when several do, the one with the most rights.

    Raises SsoError(403) when none does: an account at the provider is not by
    itself an account at the hub.
    """
    values = claim_values(claims, settings.oidc_role_claim)
    mapped = {settings.oidc_role_map[v] for v in values if v in settings.oidc_role_map}
    roles = [r for r in users.ROLES if r in mapped]
    if not roles:
        raise SsoError(
            403,
            f"Your account at {settings.oidc_provider_name} has no role in vethub. "
            "Ask the clinic's IT person to give you one.",
            f"no mapped role in claim {settings.oidc_role_claim!r}: {values!r}",
        )
    return roles[-1]
