"""The study page a vet opens from the patient record (``viewer_url``).

A browser cannot send a Bearer header from a link in the PIMS, so a person
signs in once with their own account (hub/api/signin.py) and the session
cookie opens studies. Share links, for someone outside the clinic, are
hub/api/shared.py's. Every page view and export is audited.
"""

from __future__ import annotations

import base64
import hashlib
import html
from dataclasses import replace
from pathlib import Path
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from hub.api import download, ohif
from hub.api.auth import SESSION_COOKIE, Caller, lookup_key, session_caller
from hub.archive import thumbnails
from hub.context import Hub
from hub.services import events, studies

router = APIRouter(tags=["viewer"], include_in_schema=False)
STAFF_ROLES = frozenset({"vet", "tech", "admin"})

# The pages' only style sheet. It is inline, so the Content-Security-Policy
# allows exactly this text (by its hash) rather than any inline style.
CSS = """\
body{font-family:system-ui,sans-serif;margin:2rem;max-width:70rem;color:#222}
table{border-collapse:collapse} td,th{padding:.2rem .8rem;text-align:left;vertical-align:top}
th{color:#555;font-weight:600} .series{margin:1.5rem 0}
.thumbs{display:flex;flex-wrap:wrap;gap:.5rem}
.thumbs figure{margin:0;width:256px;text-align:center;font-size:.8rem;color:#666}
.thumbs img{max-width:256px;max-height:256px;background:#000}
.noprev{width:256px;height:120px;background:#eee;display:flex;align-items:center;
justify-content:center}
"""
_CSS_HASH = base64.b64encode(hashlib.sha256(CSS.encode()).digest()).decode()

# Every HTML page: never framed (clickjacking of sign-in or a share), no script
# at all, images and forms only from the hub itself, no URL leaked onwards
# (share tokens are in URLs), not cached (they show patient data).
PAGE_HEADERS = {
    "Content-Security-Policy": (
        f"default-src 'self'; style-src 'sha256-{_CSS_HASH}'; script-src 'none'; "
        "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message


def signed_in(request: Request) -> Caller | None:
    """The caller by Bearer key or, failing that, by session cookie; None if neither.

    Raises Refused(401) for a Bearer key that is unknown or revoked: a client
    that sent a key wants to hear that it is wrong, not a sign-in page.
    """
    hub: Hub = request.app.state.hub
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        found = lookup_key(hub, auth[7:].strip())
        if found is None:
            raise Refused(401, "The API key is unknown or revoked.")
        return found
    if token := request.cookies.get(SESSION_COOKIE):
        return session_caller(hub, token)
    return None


def staff(request: Request) -> Caller:
    """A vet/tech/admin by Bearer key or session; anyone else is refused."""
    who = signed_in(request)
    if who is None:
        raise Refused(401, "Please sign in to see this study.")
    if who.role not in STAFF_ROLES:
        kind = "account" if who.user_id is not None else "key"
        raise Refused(403, f"A {who.role} {kind} may not open studies.")
    return who


def page(title: str, body: str, status: int = 200) -> HTMLResponse:
    """An HTML page of the hub: inline style only, no script, the PAGE_HEADERS."""
    doc = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<style>{CSS}</style></head><body>{body}</body></html>"""
    return HTMLResponse(doc, status_code=status, headers=PAGE_HEADERS)


def wants_html(request: Request) -> bool:
    """A browser navigating (it asks for HTML) rather than an API client."""
    return "text/html" in request.headers.get("accept", "").lower()


def sign_in_url(request: Request) -> str:
    """``/sign-in?next=`` back to this page (path and query: always local)."""
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return "/sign-in?next=" + quote(here, safe="/")


def refused(request: Request, err: Refused) -> Response:
    """403 page; for 401 a browser is sent to sign in, an API client gets 401."""
    if err.status != 401:
        return page("Not allowed", f"<h1>Not allowed</h1><p>{html.escape(err.message)}</p>", 403)
    target = sign_in_url(request)
    if wants_html(request) and not request.headers.get("authorization"):
        return RedirectResponse(target, status_code=303)
    body = (
        f"<h1>Sign in</h1><p>{html.escape(err.message)}</p>"
        f'<p><a href="{html.escape(target, quote=True)}">Sign in</a></p>'
    )
    response = page("Sign in", body, 401)
    response.headers["WWW-Authenticate"] = "Bearer"
    return response


def preview(hub: Hub, study_uid: str, sop_uid: str) -> Response:
    """One image's PNG preview (a placeholder naming why when it cannot be
    rendered); the caller checked access."""
    with hub.db.read_session() as s:
        study = studies.get(s, study_uid)
        inst = studies.instance_of(s, study, sop_uid)
        path = Path(hub.settings.data_dir) / inst.path
    png = thumbnails.thumbnail(Path(hub.settings.data_dir), path, sop_uid)
    return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})


@router.get("/viewer/studies/{study_uid}")
def study_page(study_uid: str, request: Request, compare: str | None = None) -> Response:
    """The diagnostic viewer (hub/api/ohif.py); ``compare``: a prior side by side."""
    try:
        who = staff(request)
    except Refused as err:
        return refused(request, err)
    hub: Hub = request.app.state.hub
    scope = replace(ohif.STAFF_SCOPE, download_url=f"/viewer/studies/{quote(study_uid)}/dicom.zip")
    with hub.db.session() as s:
        study = studies.get(s, study_uid)
        prior = ohif.prior_of(s, study, compare) if compare else None
        events.audit(s, who.actor, "view", "study", study_uid, {"via": "viewer"})
        if prior is not None:
            uid = prior.study_instance_uid
            events.audit(s, who.actor, "view", "study", uid, {"via": "viewer", "beside": study_uid})
        return ohif.study_viewer(request, s, study, scope, prior)


@router.get("/viewer/studies/{study_uid}/instances/{sop_uid}/preview.png")
def study_preview(study_uid: str, sop_uid: str, request: Request) -> Response:
    try:
        staff(request)
    except Refused as err:
        return Response(status_code=err.status)
    return preview(request.app.state.hub, study_uid, sop_uid)


@router.get("/viewer/studies/{study_uid}/dicom.zip")
def study_export(study_uid: str, request: Request) -> Response:
    """The study's files as a plain DICOM tree in a streamed zip (audited as an export)."""
    try:
        who = staff(request)
    except Refused as err:
        return refused(request, err)
    hub: Hub = request.app.state.hub
    with hub.db.session() as s:
        study = studies.get(s, study_uid)
        streamed, count = download.response(s, study, Path(hub.settings.data_dir), jpegs=False)
        events.audit(s, who.actor, "export", "study", study_uid, {"files": count})
    return streamed


@router.get("/viewer/")
def viewer_home() -> Response:
    """The old landing page of key sign-in: people now land on the console."""
    return RedirectResponse("/console", status_code=303)
