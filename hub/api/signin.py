"""Staff sign-in for browsers: the form, the session cookie and sign-out
(docs/interface.md "Staff accounts and sign-in"); people land on the console
(hub/console).

The viewer and the console share this sign-in. The form is plain HTML with no
script; a sign-in posted from another site is refused (login CSRF), and
sign-out needs the session's CSRF token so another site cannot end it.
"""

from __future__ import annotations

import html
import logging
from urllib.parse import parse_qs, quote, urlsplit

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse, Response

from hub.api.auth import SESSION_COOKIE, csrf_ok, session_caller
from hub.api.viewer import page
from hub.context import Hub
from hub.services import events, users

router = APIRouter(tags=["sign-in"], include_in_schema=False)
log = logging.getLogger("hub.api.signin")
LANDING = "/console"
CSRF_FIELD = "csrf_token"


def safe_next(value: str | None) -> str:
    """``next`` if it is a path on this hub, else the console (no open redirect).

    Browsers read ``//host`` and ``/\\host`` as another host, and drop tabs and
    newlines inside URLs, so anything but a plain local path is refused.
    """
    if not value or not value.startswith("/") or value.startswith(("//", "/\\")):
        return LANDING
    if any(c in value for c in "\\\t\r\n") or any(ord(c) < 0x20 for c in value):
        return LANDING
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return LANDING
    return value


def _origin(url: str) -> str | None:
    """``scheme://host[:port]`` of a URL, lower-cased; None if it has none."""
    parts = urlsplit(url.strip())
    if not parts.scheme or not parts.netloc:
        return None
    return f"{parts.scheme}://{parts.netloc}".lower()


def cross_site(request: Request) -> bool:
    """Whether a form post came from another site (login CSRF: signing a victim
    in as the attacker's account).

    Sec-Fetch-Site is asked first: our pages send no referrer, and then a
    browser posts ``Origin: null`` even from our own form. Without it, Origin
    (or Referer) must be the hub's own address, as the request names it or as
    VETHUB_PUBLIC_URL says. A request with none of them is not from a browser.
    """
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        return site.lower() not in ("same-origin", "none")
    claimed = request.headers.get("origin") or request.headers.get("referer")
    if claimed is None:
        return False
    own = {
        _origin(str(request.base_url)),
        _origin(request.app.state.hub.settings.public_url),
    }
    return _origin(claimed) not in own


def _sso_link(request: Request, nxt: str) -> str:
    """The "Sign in with <provider>" link when single sign-on is set up (a link, not a
    form: the page's form-action 'self' would stop a form sent on to the provider)."""
    settings = request.app.state.hub.settings
    if not (settings.oidc_issuer and settings.oidc_client_id):
        return ""
    href = html.escape("/sign-in/oidc?next=" + quote(nxt, safe="/"), quote=True)
    name = html.escape(settings.oidc_provider_name)
    return f'<p><a href="{href}">Sign in with {name}</a></p><p>or with your hub account:</p>'


def form_page(request: Request, nxt: str, message: str | None, status: int) -> Response:
    """The sign-in page, with ``message`` (escaped here) shown as an alert."""
    note = f'<p role="alert">{html.escape(message)}</p>' if message else ""
    body = f"""<h1>Sign in to vethub</h1>{note}{_sso_link(request, nxt)}
<form method="post" action="/sign-in">
<input type="hidden" name="next" value="{html.escape(nxt, quote=True)}">
<p><label>Username<br><input name="username" autocomplete="username" required
 autocapitalize="none" spellcheck="false" maxlength="64" autofocus></label></p>
<p><label>Password<br><input type="password" name="password"
 autocomplete="current-password" required></label></p>
<p><button type="submit">Sign in</button></p></form>"""
    return page("Sign in", body, status)


def _other_site() -> Response:
    return page(
        "Not allowed",
        "<h1>Not allowed</h1><p>This form is only accepted from the hub's own pages "
        "(this request came from another site).</p>",
        403,
    )


async def _form(request: Request) -> dict[str, str]:
    """An urlencoded form body as single values (the HTTP bounds already limit its size)."""
    fields = parse_qs((await request.body()).decode("utf-8", "replace"), keep_blank_values=True)
    return {name: values[0] for name, values in fields.items()}


@router.get("/sign-in")
def sign_in_form(request: Request, next: str | None = None) -> Response:
    return form_page(request, safe_next(next), None, 200)


@router.get("/viewer/sign-in")
def old_sign_in_form(request: Request, next: str | None = None) -> Response:
    """The address of the former key sign-in (bookmarks, README): the same form."""
    return form_page(request, safe_next(next), None, 200)


@router.post("/sign-in")
@router.post("/viewer/sign-in")  # the former key sign-in's address, kept as an alias
async def sign_in(request: Request) -> Response:
    if cross_site(request):
        return _other_site()
    form = await _form(request)
    nxt = safe_next(form.get("next"))
    hub: Hub = request.app.state.hub
    try:
        _, token = await run_in_threadpool(
            users.sign_in,
            hub.db,
            form.get("username", ""),
            form.get("password", ""),
            hub.settings.session_idle_minutes,
        )
    except users.LockedOut:
        response = form_page(
            request,
            nxt,
            "Too many failed sign-ins for this username. Try again in 15 minutes.",
            429,
        )
        response.headers["Retry-After"] = str(int(users.LOCKED_FOR.total_seconds()))
        return response
    except users.BadCredentials:
        return form_page(request, nxt, "The username or password is not right.", 401)
    return start_session_response(request, token, nxt)


def start_session_response(request: Request, token: str, nxt: str) -> Response:
    """303 to ``nxt`` with the session cookie: how every sign-in (password or
    single sign-on) ends."""
    response = RedirectResponse(nxt, status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        token,
        httponly=True,
        samesite="lax",
        secure=https(request),
        path="/",
    )
    return response


def https(request: Request) -> bool:
    """Under HTTPS: the hub's own TLS, or the public address a proxy serves it on."""
    public = request.app.state.hub.settings.public_url
    return request.url.scheme == "https" or public.startswith("https://")


@router.post("/sign-out")
async def sign_out(request: Request) -> Response:
    if cross_site(request):
        return _other_site()
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        form = await _form(request)
        if not csrf_ok(request, token, form.get(CSRF_FIELD)):
            return page(
                "Not allowed", "<h1>Not allowed</h1><p>Sign out from the hub's page.</p>", 403
            )
        await run_in_threadpool(_end, request.app.state.hub, token)
    response = RedirectResponse("/sign-in", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="lax")
    return response


def _end(hub: Hub, token: str) -> None:
    who = session_caller(hub, token)
    with hub.db.session() as s:
        users.end_session(s, token)
        if who is not None and who.user_id is not None:
            events.audit(s, who.actor, "sign-out", "user", who.user_id)
