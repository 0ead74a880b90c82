"""Bearer-key authentication and role checks (docs/interface.md "Authentication")."""

from __future__ import annotations

import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from hub.context import Hub
from hub.services import keys

_bearer = HTTPBearer(auto_error=False, description="An API key made with `vethub keys create`")


@dataclass(frozen=True)
class Caller:
    key_id: int
    name: str
    role: str
    source: str | None = None  # a key scoped to one source's orders

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
        return f"key:{self.key_id}:{self.name}"


async def caller(
    request: Request, creds: HTTPAuthorizationCredentials | None = Depends(_bearer)
) -> Caller:
    if creds is None or creds.scheme.lower() != "bearer" or not creds.credentials:
        raise HTTPException(
            401,
            "an API key is required: Authorization: Bearer <key>",
            {"WWW-Authenticate": "Bearer"},
        )
    found = lookup_key(request.app.state.hub, creds.credentials)
    if found is None:
        raise HTTPException(
            401, "the API key is unknown or revoked", {"WWW-Authenticate": "Bearer"}
        )
    request.state.caller = found
    return found


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
            else Caller(key_id=row.id, name=row.name, role=row.role, source=row.source)  # type: ignore[arg-type]
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
