"""Bearer-key authentication and role checks (interface.md "Authentication")."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from hub.services import keys

_bearer = HTTPBearer(auto_error=False, description="An API key made with `vethub keys create`")


@dataclass(frozen=True)
class Caller:
    key_id: int
    name: str
    role: str

    @property
    def actor(self) -> str:
        return f"key:{self.key_id}:{self.name}"


def caller(
    request: Request, creds: HTTPAuthorizationCredentials | None = Depends(_bearer)
) -> Caller:
    if creds is None or creds.scheme.lower() != "bearer" or not creds.credentials:
        raise HTTPException(
            401,
            "an API key is required: Authorization: Bearer <key>",
            {"WWW-Authenticate": "Bearer"},
        )
    hub = request.app.state.hub
    with hub.db.read_session() as s:
        row = keys.authenticate(s, creds.credentials)
        if row is None:
            raise HTTPException(
                401, "the API key is unknown or revoked", {"WWW-Authenticate": "Bearer"}
            )
        found = Caller(key_id=row.id, name=row.name, role=row.role)  # type: ignore[arg-type]
    request.state.caller = found
    return found


def require(*roles: str):  # type: ignore[no-untyped-def]
    """Dependency allowing the given roles (admin is always allowed)."""
    allowed = frozenset(roles) | {"admin"}

    def check(who: Caller = Depends(caller)) -> Caller:
        if who.role not in allowed:
            raise HTTPException(
                403, f"role {who.role!r} may not do this; allowed: {', '.join(sorted(allowed))}"
            )
        return who

    return check
