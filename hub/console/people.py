"""People and keys (``/console/people``, admin only, as ``/api/v1/users`` and
``/api/v1/keys``): staff accounts (create with a role and first password,
change role, disable or enable, set a password) and API keys (create, shown
once on the answer page, and revoke; optionally scoped to one source). Every
change goes through hub/services/users.py or keys.py, audited with the person
as actor."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse, Response

from hub.api.auth import Caller, forget_keys
from hub.api.params import RowId
from hub.console.web import ADMIN_ONLY, action, person, problem, render
from hub.context import Hub
from hub.errors import HubError
from hub.models import ApiKey, User
from hub.services import keys, users

router = APIRouter()
KEY = "people"


def load(hub: Hub) -> tuple[list[User], list[ApiKey]]:
    with hub.db.read_session() as s:
        return users.list_all(s), keys.list_all(s)


async def page(request: Request, who: Caller, **extra: Any) -> Response:
    people, api_keys = await run_in_threadpool(load, request.app.state.hub)
    ctx = {
        "people": people,
        "keys": api_keys,
        "user_roles": users.ROLES,
        "key_roles": keys.ROLES,
        "scopable": keys.SCOPABLE_ROLES,
        "done": request.query_params.get("done", ""),
        "created": None,
        **extra,
    }
    return render(request, who, "people.html", ctx, current=KEY)


@router.get("/console/people")
async def people(request: Request) -> Response:
    who = await person(request, KEY)
    if isinstance(who, Response):
        return who
    return await page(request, who)


async def change(request: Request, work: Callable[[Hub, Caller, dict[str, str]], str]) -> Response:
    """A POST of this page: admin, CSRF token; ``work`` answers what the notice says."""
    got = await action(request, KEY, ADMIN_ONLY)
    if isinstance(got, Response):
        return got
    who, form = got
    try:
        done = await run_in_threadpool(work, request.app.state.hub, who, form)
    except HubError as err:
        return problem(request, who, 400, "Not changed", str(err))
    return RedirectResponse(f"/console/people?done={done}", status_code=303)


@router.post("/console/people/users")
async def create_user(request: Request) -> Response:
    def work(hub: Hub, who: Caller, form: dict[str, str]) -> str:
        with hub.db.session() as s:
            user = users.create(
                s,
                form.get("username", ""),
                form.get("role", ""),
                form.get("password", ""),
                actor=who.actor,
            )
            return f"created-{user.username}"

    return await change(request, work)


@router.post("/console/people/users/{user_id}")
async def change_user(request: Request, user_id: RowId) -> Response:
    """Role, or disable/enable (``disabled`` = "true"/"false")."""

    def work(hub: Hub, who: Caller, form: dict[str, str]) -> str:
        role = form.get("role") or None
        disabled = {"true": True, "false": False}.get(form.get("disabled", ""))
        if user_id == who.user_id and (disabled or (role and role != "admin")):
            raise HubError("You cannot disable your own account or take away its admin role.")
        with hub.db.session() as s:
            user = users.change(
                s, users.get(s, user_id), actor=who.actor, role=role, disabled=disabled
            )
            return f"changed-{user.username}"

    return await change(request, work)


@router.post("/console/people/users/{user_id}/password")
async def set_password(request: Request, user_id: RowId) -> Response:
    def work(hub: Hub, who: Caller, form: dict[str, str]) -> str:
        with hub.db.session() as s:
            user = users.set_password(
                s, users.get(s, user_id), form.get("password", ""), actor=who.actor
            )
            return f"password-{user.username}"

    return await change(request, work)


@router.post("/console/people/keys")
async def create_key(request: Request) -> Response:
    """The answer is the page itself with the plain key: the only time it is shown."""
    got = await action(request, KEY, ADMIN_ONLY)
    if isinstance(got, Response):
        return got
    who, form = got

    def work() -> tuple[ApiKey, str]:
        with request.app.state.hub.db.session() as s:
            row, plain = keys.create(
                s,
                form.get("name", ""),
                form.get("role", ""),
                actor=who.actor,
                source=form.get("source", "").strip() or None,
            )
            s.expunge(row)
            return row, plain

    try:
        row, plain = await run_in_threadpool(work)
    except HubError as err:
        return problem(request, who, 400, "No key created", str(err))
    forget_keys()  # a cached "unknown key" answer must not outlive its creation
    return await page(request, who, created={"row": row, "key": plain})


@router.post("/console/people/keys/{key_id}/revoke")
async def revoke_key(request: Request, key_id: RowId) -> Response:
    def work(hub: Hub, who: Caller, form: dict[str, str]) -> str:
        with hub.db.session() as s:
            row = keys.revoke(s, key_id, actor=who.actor)
        forget_keys()
        return f"revoked-{row.name}"

    return await change(request, work)
