"""Who may use DICOMweb, and the once-per-session audit of what they retrieved.

A Bearer key or staff session at ``/dicomweb``: ``integration`` may search and
store, ``tech``/``vet``/``admin`` may do everything, anyone else is refused.
Under ``/shared/{token}/dicomweb`` the share token is the credential and it
opens one study, read-only; an expired or revoked token is 410 (so a viewer
left open stops at once), an unknown one 404.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from fastapi import Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials

from hub.api.auth import Caller, bearer, caller
from hub.context import Hub
from hub.services import events, links

SEARCH_ROLES = frozenset({"integration", "tech", "vet", "admin"})
RETRIEVE_ROLES = frozenset({"tech", "vet", "admin"})
STORE_ROLES = frozenset({"integration", "tech", "vet", "admin"})


@dataclass(frozen=True)
class Access:
    """What this caller may do; ``study`` set means one study only (a share)."""

    actor: str  # as written in the audit log
    role: str
    study: str | None = None
    share_id: int | None = None
    source: str | None = None  # a key scoped to one source's studies

    @property
    def may_search(self) -> bool:
        return self.study is not None or self.role in SEARCH_ROLES

    @property
    def may_retrieve(self) -> bool:
        return self.study is not None or self.role in RETRIEVE_ROLES

    @property
    def may_store(self) -> bool:
        return self.study is None and self.role in STORE_ROLES

    def check_study(self, study_instance_uid: str) -> None:
        """404 (not 403) for a study outside a share: a share does not reveal others."""
        if self.study is not None and study_instance_uid != self.study:
            raise HTTPException(404, f"study {study_instance_uid} is not in this shared link")


def _share_access(hub: Hub, token: str) -> Access:
    with hub.db.read_session() as s:
        share = links.open_share(s, token)
        if share is not None:
            return Access(
                actor=f"share:{share.id}",
                role="share",
                study=share.study_instance_uid,
                share_id=share.id,
            )
        if links.refusal(s, token) is not None:
            raise HTTPException(410, "this shared link has expired or was revoked")
    raise HTTPException(404, "no such shared link")


async def access(
    request: Request, creds: HTTPAuthorizationCredentials | None = Depends(bearer)
) -> Access:
    hub: Hub = request.app.state.hub
    token = request.path_params.get("token")
    if token is not None:
        return await run_in_threadpool(_share_access, hub, token)
    who: Caller = await caller(request, creds)
    return Access(actor=who.actor, role=who.role, source=who.source)


async def searcher(found: Access = Depends(access)) -> Access:
    if not found.may_search:
        raise HTTPException(403, f"a {found.role} key or account may not search studies")
    return found


async def retriever(found: Access = Depends(access)) -> Access:
    if not found.may_retrieve:
        raise HTTPException(403, f"a {found.role} key or account may not retrieve images")
    return found


async def storer(found: Access = Depends(access)) -> Access:
    if not found.may_store:
        who = "a shared link" if found.study is not None else f"a {found.role} key or account"
        raise HTTPException(403, f"{who} may not store instances")
    return found


# Retrieves are audited once per caller and study within AUDIT_WINDOW, not per
# frame: a CT opened in the viewer makes hundreds of requests. Per process; with
# several processes a study may be audited once in each.
AUDIT_WINDOW = 3600.0
_audited: dict[tuple[str, str], float] = {}
_audited_lock = threading.Lock()


def audit_retrieve(hub: Hub, who: Access, study_instance_uid: str, what: str) -> None:
    """Write a ``view`` audit event for this caller and study, unless one was
    written within the last AUDIT_WINDOW seconds. Blocking: call from a thread."""
    key = (who.actor, study_instance_uid)
    now = time.monotonic()
    with _audited_lock:
        seen = _audited.get(key)
        if seen is not None and now - seen < AUDIT_WINDOW:
            return
        if len(_audited) > 50_000:
            _audited.clear()
        _audited[key] = now
    with hub.db.session() as s:
        events.audit(
            s, who.actor, "view", "study", study_instance_uid, {"via": "dicomweb", "what": what}
        )
