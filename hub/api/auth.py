"""Who is calling: a Bearer key (machines) or a signed-in session cookie (people),
and role checks (docs/interface.md "Authentication", "Staff accounts and sign-in").

A cookie is sent by the browser on its own, also for a request another site
makes it send; so a state-changing request authenticated by the cookie must
also carry the session's CSRF token (``X-CSRF-Token``), which another site
cannot read. A Bearer key is never sent on its own, so it needs none.
"""

from __future__ import annotations

import hmac
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from fastapi import Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from hub.context import Hub
from hub.services import keys, users

bearer = HTTPBearer(auto_error=False, description="An API key made with `vethub keys create`")
SESSION_COOKIE = "vethub_session"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class Caller:
    """A key (``key_id``) or a signed-in person (``user_id``); ``name`` is the key's
    name or the username."""

    key_id: int | None
    name: str
    role: str
    source: str | None = None  # a key scoped to one source's orders
    user_id: int | None = None

    def may_change(self, source: str) -> bool:
        return self.source is None or self.source == source

    def check_source(self, source: str) -> None:
        """403 when this key is scoped to another source than ``source``."""
        if not self.may_change(source):
            raise HTTPException(
                403, f"this key may only place and change orders of source {self.source!r}"
            )

    @property
    def actor(self) -> str:
        if self.user_id is not None:
            return f"user:{self.user_id}:{self.name}"
        return f"key:{self.key_id}:{self.name}"


async def caller(
    request: Request, creds: HTTPAuthorizationCredentials | None = Depends(bearer)
) -> Caller:
    """The Bearer key if there is one, else the session cookie (with its CSRF
    token on a state-changing request); 401 when neither is valid."""
    if creds is not None and creds.scheme.lower() == "bearer" and creds.credentials:
        found = lookup_key(request.app.state.hub, creds.credentials)
        if found is None:
            raise HTTPException(
                401, "the API key is unknown or revoked", {"WWW-Authenticate": "Bearer"}
            )
    elif token := request.cookies.get(SESSION_COOKIE):
        found = await run_in_threadpool(session_caller, request.app.state.hub, token)
        if found is None:
            raise HTTPException(
                401, "the session has ended; sign in again", {"WWW-Authenticate": "Bearer"}
            )
        if request.method not in SAFE_METHODS and not csrf_ok(request, token):
            raise HTTPException(
                403, f"a request signed in by cookie needs the session's {CSRF_HEADER} header"
            )
    else:
        raise HTTPException(
            401,
            "an API key is required: Authorization: Bearer <key>",
            {"WWW-Authenticate": "Bearer"},
        )
    request.state.caller = found
    return found


def session_caller(hub: Hub, token: str) -> Caller | None:
    """The signed-in person a session cookie stands for, while the session lasts."""
    user = users.session_user(hub.db, token, hub.settings.session_idle_minutes)
    if user is None:
        return None
    return Caller(key_id=None, name=user.username, role=user.role, user_id=user.id)


def csrf_ok(request: Request, token: str, sent: str | None = None) -> bool:
    """Whether the request carries the CSRF token of session ``token`` (in the
    header, or ``sent`` from a form field)."""
    given = sent if sent is not None else request.headers.get(CSRF_HEADER, "")
    return hmac.compare_digest(given.encode(), users.csrf_token(token).encode())


# A key's row is looked up once per CACHE_SECONDS, not on every request: the
# lookup was a tenth of an order's cost. Revoking takes effect at once in this
# process (forget_keys) and within CACHE_SECONDS in others.
CACHE_SECONDS = 5.0
_cache: dict[str, tuple[float, Caller | None]] = {}
_cache_lock = threading.Lock()


def lookup_key(hub: Hub, key: str) -> Caller | None:
    digest = keys.hash_key(key)
    now = time.monotonic()
    hit = _cache.get(digest)
    if hit is not None and now - hit[0] < CACHE_SECONDS:
        return hit[1]
    with hub.db.read_session() as s:
        row = keys.authenticate(s, key)
        found = (
            None
            if row is None
            else Caller(key_id=row.id, name=row.name, role=row.role, source=row.source)
        )
    with _cache_lock:
        if len(_cache) > 10_000:  # someone is guessing keys; do not grow without bound
            _cache.clear()
        _cache[digest] = (now, found)
    return found


def forget_keys() -> None:
    """Drop cached key lookups (after a key is created or revoked here)."""
    with _cache_lock:
        _cache.clear()


def require(*roles: str) -> Callable[[Caller], Awaitable[Caller]]:
    """Dependency allowing the given roles (admin is always allowed).

    Both checks are coroutines on purpose: FastAPI runs a plain function
    dependency in its thread pool, two thread hops per request for what is
    almost always a dictionary lookup (see ``lookup_key``).
    """
    allowed = frozenset(roles) | {"admin"}

    async def check(who: Caller = Depends(caller)) -> Caller:
        if who.role not in allowed:
            raise HTTPException(
                403, f"role {who.role!r} may not do this; allowed: {', '.join(sorted(allowed))}"
            )
        return who

    return check
