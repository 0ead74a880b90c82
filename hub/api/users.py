"""Staff accounts over the API (admin only; docs/interface.md "Staff accounts and
sign-in"). Passwords go in, never out: no answer carries a password or a hash."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from hub.api.auth import Caller, require
from hub.api.params import RowId
from hub.models import User
from hub.schemas import UtcDateTime
from hub.services import users

router = APIRouter(prefix="/api/v1", tags=["users"])
ADMIN = require()
Role = Literal["frontdesk", "tech", "vet", "admin"]
# The minimum length is checked by the service (one message for the CLI and the
# API); max_length here only keeps a huge value from reaching the hash.


class UserIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: str = Field(min_length=1, max_length=64)
    role: Role
    password: str = Field(
        description=f"at least {users.MIN_PASSWORD} characters", max_length=users.MAX_PASSWORD
    )


class UserChange(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Role | None = None
    disabled: bool | None = None


class PasswordIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    password: str = Field(
        description=f"at least {users.MIN_PASSWORD} characters", max_length=users.MAX_PASSWORD
    )


class UserOut(BaseModel):
    id: int
    username: str
    role: str
    disabled: bool
    created_at: UtcDateTime
    password_changed_at: UtcDateTime


def _out(user: User) -> UserOut:
    return UserOut.model_validate(user, from_attributes=True)


@router.post("/users", status_code=201, response_model=UserOut)
def create_user(body: UserIn, request: Request, who: Caller = Depends(ADMIN)) -> UserOut:
    with request.app.state.hub.db.session() as s:
        return _out(users.create(s, body.username, body.role, body.password, actor=who.actor))


@router.get("/users", response_model=list[UserOut])
def list_users(request: Request, who: Caller = Depends(ADMIN)) -> list[UserOut]:
    with request.app.state.hub.db.read_session() as s:
        return [_out(u) for u in users.list_all(s)]


@router.patch("/users/{user_id}", response_model=UserOut)
def change_user(
    user_id: RowId, body: UserChange, request: Request, who: Caller = Depends(ADMIN)
) -> UserOut:
    with request.app.state.hub.db.session() as s:
        user = users.get(s, user_id)
        return _out(users.change(s, user, actor=who.actor, role=body.role, disabled=body.disabled))


@router.post("/users/{user_id}/password", status_code=204)
def set_password(
    user_id: RowId, body: PasswordIn, request: Request, who: Caller = Depends(ADMIN)
) -> Response:
    with request.app.state.hub.db.session() as s:
        users.set_password(s, users.get(s, user_id), body.password, actor=who.actor)
    return Response(status_code=204)
