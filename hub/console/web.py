"""What every console page shares: who may open which page, the Jinja2
environment, the response headers, CSRF on forms, and the static files.

A colleague adding a page appends a ``NavPage`` to ``PAGES`` and guards its
routes with ``person(request, "<key>")``; the nav then shows it to exactly the
roles the route lets in.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs
from zoneinfo import ZoneInfo

from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, HTMLResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from hub.api.auth import CSRF_HEADER, SESSION_COOKIE, Caller, csrf_ok
from hub.api.viewer import Refused, refused, sign_in_url
from hub.context import Hub
from hub.models import as_utc
from hub.services import users

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"
CSRF_FIELD = "csrf_token"
ALL_STAFF = frozenset({"frontdesk", "tech", "vet", "admin"})


@dataclass(frozen=True)
class NavPage:
    """A console page in the nav; ``roles`` may open it (admin always may)."""

    key: str
    path: str
    title: str
    roles: frozenset[str]

    def allows(self, role: str) -> bool:
        return role == "admin" or role in self.roles


PAGES: list[NavPage] = [
    NavPage("today", "/console", "Today", ALL_STAFF),
    NavPage("queue", "/console/queue", "Reconciliation queue", frozenset({"tech", "vet"})),
    NavPage("orders", "/console/orders", "Orders", frozenset({"frontdesk", "tech", "vet"})),
    NavPage("qc", "/console/qc", "Daily QC", frozenset({"tech", "vet"})),  # GET /api/v1/qc
    NavPage("deliveries", "/console/deliveries", "Deliveries", frozenset()),  # integration + admin
    NavPage("messages", "/console/messages", "Messages", frozenset()),  # integration + admin
    NavPage("devices", "/console/devices", "Devices and sources", frozenset({"tech"})),
    NavPage("people", "/console/people", "People and keys", frozenset()),
    NavPage("audit", "/console/audit", "Audit", frozenset()),
]
# Who may press the buttons that change things (the API's roles for the same calls).
RECONCILE_ROLES = frozenset({"tech", "admin"})  # POST /api/v1/studies/{uid}/reconcile
CANCEL_ROLES = frozenset({"frontdesk", "admin"})  # the console's cancel/discontinue
ADMIN_ONLY = frozenset({"admin"})  # deliveries retry, reprocess, device and people changes
ECHO_ROLES = frozenset({"tech", "admin"})  # POST /api/v1/modalities/{ae_title}/echo

# Console pages load their script and style from the hub only (no inline code,
# so an injected <script> could not run even if escaping failed); htmx talks
# to the hub only; never framed, no referrer, not cached (patient data).
CONSOLE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "Vary": "HX-Request, Cookie",
}
STATIC_TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
POLL_HEADER = "X-Console-Poll"  # console.js sets it on self-refreshing lists

templates = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(["html"], default=True),
    trim_blocks=True,
    lstrip_blocks=True,
)


def page_by_key(key: str) -> NavPage:
    return next(p for p in PAGES if p.key == key)


def nav_for(role: str) -> list[NavPage]:
    """The pages a role may open: the only ones its nav shows."""
    return [p for p in PAGES if p.allows(role)]


def session_token(request: Request) -> str | None:
    return request.cookies.get(SESSION_COOKIE) or None


async def person(request: Request, key: str) -> Caller | Response:
    """The signed-in person if their role may open page ``key``; else the answer
    to send instead (sign-in for nobody, a 403 page for the wrong role)."""
    token = session_token(request)
    hub: Hub = request.app.state.hub
    who = await run_in_threadpool(signed_in_person, hub, token, not is_poll(request))
    if who is None:
        if is_htmx(request):  # a poll after the session ended: go to sign-in
            return Response(status_code=401, headers={"HX-Redirect": sign_in_url(request)})
        return refused(request, Refused(401, "Please sign in."))
    if not page_by_key(key).allows(who.role):
        return forbidden(request, who, f"A {who.role} account may not open this page.")
    return who


def forbidden(request: Request, who: Caller, message: str) -> HTMLResponse:
    return problem(request, who, 403, "Not allowed", message)


def problem(request: Request, who: Caller, status: int, title: str, message: str) -> HTMLResponse:
    """A page saying what went wrong (never a traceback, never JSON to a person)."""
    ctx = {"title": title, "message": message}
    return render(request, who, "message.html", ctx, status=status)


async def action(
    request: Request, key: str, roles: frozenset[str]
) -> tuple[Caller, dict[str, str]] | Response:
    """For a POST from a console page: the person (who may open page ``key`` and
    whose role is in ``roles``) and the form, which must carry the CSRF token."""
    who = await person(request, key)
    if isinstance(who, Response):
        return who
    if who.role not in roles:
        return forbidden(request, who, f"A {who.role} account may not do this.")
    form = await form_with_csrf(request)
    if form is None:
        return forbidden(
            request,
            who,
            "This form is only accepted from the hub's own pages (its security token is "
            "missing or out of date). Go back, reload the page and try again.",
        )
    return who, form


def is_htmx(request: Request) -> bool:
    """An htmx request (a poll or a swap) wants the fragment, not the whole page."""
    return request.headers.get("hx-request") == "true"


def is_poll(request: Request) -> bool:
    """A list refreshing itself (its element sends ``X-Console-Poll``): not a use of
    the session, so a console left open still ends after the idle time."""
    return request.method == "GET" and request.headers.get(POLL_HEADER) == "1"


def signed_in_person(hub: Hub, token: str | None, touch: bool) -> Caller | None:
    """The session's person, as hub.api.auth.session_caller, but a poll does not
    count as using the session."""
    if not token:
        return None
    user = users.session_user(hub.db, token, hub.settings.session_idle_minutes, touch=touch)
    if user is None:
        return None
    return Caller(key_id=None, name=user.username, role=user.role, user_id=user.id)


def render(
    request: Request,
    who: Caller,
    template: str,
    context: dict[str, Any],
    *,
    status: int = 200,
    current: str | None = None,
) -> HTMLResponse:
    """A console template with the layout's needs: nav, person, CSRF token."""
    token = session_token(request)
    hub: Hub = request.app.state.hub
    body = templates.get_template(template).render(
        who=who,
        nav=nav_for(who.role),
        current=current,
        csrf=users.csrf_token(token) if token else "",
        csrf_field=CSRF_FIELD,
        tz=hub.settings.tz,
        **context,
    )
    return HTMLResponse(body, status_code=status, headers=CONSOLE_HEADERS)


async def form_with_csrf(request: Request) -> dict[str, str] | None:
    """The posted form's fields if it carries the session's CSRF token (form
    field, or the X-CSRF-Token header htmx adds); None if it does not."""
    fields = parse_qs((await request.body()).decode("utf-8", "replace"), keep_blank_values=True)
    form = {name: values[0] for name, values in fields.items()}
    token = session_token(request)
    if token is None:
        return None
    sent = form.get(CSRF_FIELD)
    if sent is None and CSRF_HEADER.lower() not in request.headers:
        return None
    return form if csrf_ok(request, token, sent) else None


def local_time(value: datetime | None, tz: ZoneInfo | None) -> str:
    """A stored UTC time as the clinic reads it (hub's zone), to the minute."""
    if value is None:
        return ""
    return as_utc(value).astimezone(tz).strftime("%Y-%m-%d %H:%M")


def dicom_date(value: str | None) -> str:
    """DICOM DA ``20261127`` as ``2026-11-27`` (anything else unchanged)."""
    if value and len(value) == 8 and value.isdigit():
        return f"{value[:4]}-{value[4:6]}-{value[6:]}"
    return value or ""


def person_name(value: str | None) -> str:
    """DICOM PN ``Smith^Rex`` as people write it: ``Rex Smith``."""
    family, _, rest = (value or "").partition("^")
    given = rest.split("^", 1)[0]
    return " ".join(x for x in (given, family) if x)


def status_label(value: str | None) -> str:
    return (value or "").replace("_", " ")


templates.filters.update(
    local_time=local_time, dicom_date=dicom_date, pn=person_name, status=status_label
)


def static_file(name: str) -> Response:
    """A file of hub/console/static (its vendor/ copy of htmx included), or 404.

    Only known types, only inside the directory: the name comes from the URL.
    """
    path = (STATIC / name).resolve()
    if not path.is_relative_to(STATIC) or not path.is_file() or path.suffix not in STATIC_TYPES:
        return Response(status_code=404)
    return FileResponse(
        path,
        media_type=STATIC_TYPES[path.suffix],
        headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
    )
