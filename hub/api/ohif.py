"""The diagnostic viewer: a stock OHIF build served by the hub against its own DICOMweb.

``study_viewer`` is what both the staff viewer URL and a ``referral`` share
link open; only the ``ViewerScope`` differs. The page is the hub's own: a
banner from the hub's data (the order when matched: animal, owner, age,
accession, referring vet), the animal's priors, and OHIF in a frame below.
Keeping OHIF in its own document leaves the banner a plain script-free page
under the hub's strict policy, and OHIF an unmodified build under a policy
that fits it (``ohif_assets.content_security_policy``). The frame's pages,
``{app_base}/...``, are OHIF's ``index.html`` per scope; its code is served
once for all under ``/viewer/ohif/``.
"""

from __future__ import annotations

import base64
import hashlib
import html
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse, Response
from sqlalchemy.orm import Session

from hub.api import ohif_assets, viewer
from hub.api.auth import SESSION_COOKIE
from hub.context import Hub
from hub.errors import NotFound
from hub.models import Order, Study
from hub.services import links, orders, priors, users

router = APIRouter(tags=["viewer"], include_in_schema=False)
STAFF_APP = "/viewer/app"
STATIC_DIR = Path(__file__).resolve().parent / "viewer_static"
# OHIF's own comparison protocol (extension-default); the hub script picks its
# one-row stage (its stages have no ids a URL could name).
COMPARE_PROTOCOL = "@ohif/hpCompare"


@dataclass(frozen=True)
class ViewerScope:
    """Where this viewer's pages and data live and what it may do.

    Staff: ``app_base="/viewer/app"``, ``dicomweb_root="/dicomweb"``. A share:
    ``app_base=f"/shared/{token}/app"``, ``dicomweb_root=f"/shared/{token}/dicomweb"``.
    """

    app_base: str
    dicomweb_root: str
    show_priors: bool  # a share shows its one study only
    can_annotate: bool  # staff save measurements; a share may only look
    download_url: str | None = None


STAFF_SCOPE = ViewerScope(
    app_base=STAFF_APP, dicomweb_root="/dicomweb", show_priors=True, can_annotate=True
)

CSS = """\
html,body{height:100%;margin:0}
body{display:flex;flex-direction:column;background:#000;color:#e6e6e6;
font:14px/1.35 system-ui,sans-serif}
header{background:#0b1c3a;padding:.35rem .8rem;display:flex;flex-wrap:wrap;gap:.2rem 1.2rem;
align-items:baseline;border-bottom:1px solid #2b4a7a;position:relative}
header h1{font-size:1.1rem;margin:0;color:#fff}
.f{white-space:nowrap} .f b{color:#8fb3e6;font-weight:500;margin-right:.3rem}
a{color:#9cd2ff} .warn{color:#ffd27a}
details.priors{position:relative} details.priors summary{cursor:pointer;color:#9cd2ff}
details.priors ul{position:absolute;z-index:5;right:0;top:1.6rem;margin:0;padding:.4rem .8rem;
list-style:none;background:#0b1c3a;border:1px solid #2b4a7a;min-width:28rem}
details.priors li{padding:.2rem 0;display:flex;gap:.8rem}
iframe.ohif{flex:1;border:0;width:100%;background:#000}
.missing{padding:2rem;max-width:50rem} code{background:#222;padding:0 .3rem}
"""
_CSS_HASH = base64.b64encode(hashlib.sha256(CSS.encode()).digest()).decode()
# hub.api.viewer imports this module (and this one it): nothing of it is used at
# import time. Pages show patient data: not cached, no referrer (share tokens).
PAGE_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
# The banner page: no script, its one style sheet by hash, may frame only the
# hub itself (OHIF below), never framed by anyone else.
BANNER_HEADERS = PAGE_HEADERS | {
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": (
        f"default-src 'self'; style-src 'sha256-{_CSS_HASH}'; script-src 'none'; "
        "frame-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'none'"
    ),
}


def study_viewer(
    request: Request,
    s: Session,
    study: Study,
    scope: ViewerScope,
    compare_with: Study | None = None,
) -> Response:
    """The viewer page for ``study`` (banner, priors, OHIF); the caller has checked
    access and writes the audit event. ``compare_with``: a prior opened side by side."""
    order = orders.get(s, study.order_id) if study.order_id else None
    parts = _banner(study, order)
    if scope.download_url:
        parts.append(_link(scope.download_url, "Download DICOM (zip)"))
    if scope.show_priors:
        parts.append(_priors(study, priors.of_study(s, study), compare_with))
    banner = "<header>" + "".join(parts) + "</header>"
    if not ohif_assets.installed():
        body = (
            '<div class="missing"><h2>The viewer is not installed on this hub</h2>'
            "<p>The diagnostic viewer's files (the OHIF build) are missing. On the hub's "
            f"machine, in the vethub folder, run <code>{ohif_assets.INSTALL_HINT}</code> "
            "(see docs/viewer.md), then reload this page.</p></div>"
        )
        return _page(banner + body, 503)
    uids = [study.study_instance_uid]
    query: dict[str, str] = {}
    if compare_with is not None:
        uids.append(compare_with.study_instance_uid)
        query["hangingProtocolId"] = COMPARE_PROTOCOL
    src = f"{scope.app_base}/viewer?" + urlencode({"StudyInstanceUIDs": ",".join(uids)} | query)
    frame = (
        f'<iframe class="ohif" src="{html.escape(src, quote=True)}" '
        'title="Diagnostic viewer" allow="fullscreen"></iframe>'
    )
    return _page(banner + frame)


def prior_of(s: Session, study: Study, study_instance_uid: str) -> Study:
    """``study_instance_uid`` if it is one of ``study``'s priors (404 otherwise: the
    side-by-side view opens this animal's studies, not any study)."""
    for prior in priors.of_study(s, study):
        if prior.study_instance_uid == study_instance_uid:
            return prior
    raise NotFound(f"study {study_instance_uid} is not a prior of this animal's study")


def _page(body: str, status: int = 200) -> HTMLResponse:
    doc = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Study</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<style>{CSS}</style></head><body>{body}</body></html>"""
    return HTMLResponse(doc, status_code=status, headers=BANNER_HEADERS)


def _field(label: str, value: object) -> str:
    if value in (None, ""):
        return ""
    return f'<span class="f"><b>{html.escape(label)}</b>{html.escape(str(value))}</span>'


def _link(href: str, text: str) -> str:
    return f'<a href="{html.escape(href, quote=True)}">{html.escape(text)}</a>'


def _banner(study: Study, order: Order | None) -> list[str]:
    """The facts a vet checks before reading images, from the order when matched."""
    described = " ".join(x for x in (study.modality, study.study_description) if x)
    when = _display_date(study.study_date)
    if order is None:
        received = study.received or {}
        return [
            f"<h1>{html.escape(study.patient_name.replace('^', ' ') or 'Study')}</h1>",
            _field("Patient ID", study.patient_id),
            _field("Species", received.get("PatientSpeciesDescription")),
            _field("Breed", received.get("PatientBreedDescription")),
            _field("Accession", study.accession_number),
            _field("Study", " ".join(x for x in (when, described) if x)),
            '<span class="f warn">as sent by the device: not matched to an order</span>',
        ]
    owner = order.owner_organization or " ".join(
        x for x in (order.owner_first_name, order.owner_last_name) if x
    )
    sex = order.patient_sex if order.patient_sex not in (None, "unknown") else None
    neutered = {True: "neutered", False: "intact", None: None}[order.patient_neutered]
    weight = f"{order.patient_weight_kg:g} kg" if order.patient_weight_kg is not None else None
    return [
        f"<h1>{html.escape(order.patient_name)}</h1>",
        _field("Species", order.species_description or order.species_input),
        _field("Breed", order.breed),
        _field("Sex", ", ".join(x for x in (sex, neutered) if x)),
        _field("Age", age(order.patient_birth_date, _as_date(study.study_date))),
        _field("Weight", weight),
        _field("Owner", owner),
        _field("Accession", order.accession_number),
        _field("Study", " ".join(x for x in (when, described) if x)),
        _field("Referring vet", order.referring_vet),
    ]


def age(birth: date | None, on: date | None = None) -> str | None:
    """The animal's age on the study date (today if unknown), as vets write it:
    days for neonates, months under two years, years and months after."""
    if birth is None:
        return None
    on = on or date.today()
    if on < birth:
        return None
    months = (on.year - birth.year) * 12 + on.month - birth.month - (on.day < birth.day)
    if months < 1:
        return f"{(on - birth).days} d"
    if months < 24:
        return f"{months} mo"
    return f"{months // 12} y {months % 12} mo" if months % 12 else f"{months // 12} y"


def _as_date(dicom_date: str) -> date | None:
    try:
        return datetime.strptime(dicom_date, "%Y%m%d").date()
    except ValueError:
        return None


def _display_date(dicom_date: str) -> str:
    parsed = _as_date(dicom_date)
    return parsed.isoformat() if parsed else dicom_date


def _priors(study: Study, found: list[Study], compare_with: Study | None) -> str:
    if not found:
        return '<span class="f"><b>Priors</b>none</span>'
    here = f"/viewer/studies/{quote(study.study_instance_uid)}"
    rows = []
    for prior in found:
        described = " ".join(x for x in (prior.modality, prior.study_description) if x)
        uid = prior.study_instance_uid
        side = f"{here}?compare={quote(uid)}"
        rows.append(
            f"<li><span>{html.escape(_display_date(prior.study_date))}</span>"
            f"<span>{html.escape(described)}</span>"
            f"{_link(f'/viewer/studies/{quote(uid)}', 'open')}"
            f"{_link(side, 'open side by side')}</li>"
        )
    title = f"Priors ({len(found)})"
    if compare_with is not None:
        title += " · side by side with " + html.escape(_display_date(compare_with.study_date))
        rows.append(f"<li>{_link(here, 'close the comparison')}</li>")
    return f'<details class="priors"><summary>{title}</summary><ul>{"".join(rows)}</ul></details>'


# OHIF's own pages (the frame), per scope.


def _app_index(request: Request, scope: ViewerScope) -> Response:
    if not ohif_assets.installed():
        return HTMLResponse(
            f"The viewer is not installed: run {ohif_assets.INSTALL_HINT}.",
            status_code=503,
            headers=PAGE_HEADERS,
        )
    meta = {"vethub-annotate": "1" if scope.can_annotate else "0"}
    if scope.can_annotate and (token := request.cookies.get(SESSION_COOKIE)):
        meta["vethub-csrf"] = users.csrf_token(token)
    doc, hashes = ohif_assets.index_html(scope.app_base, meta)
    headers = PAGE_HEADERS | {
        "Content-Security-Policy": ohif_assets.content_security_policy(hashes),
        "X-Frame-Options": "SAMEORIGIN",  # the viewer page frames it
    }
    return HTMLResponse(doc, headers=headers)


def _config(scope: ViewerScope) -> Response:
    # No study list: the viewer opens from a study's link, never as a PACS browser.
    body = ohif_assets.app_config(scope.app_base, scope.dicomweb_root, show_study_list=False)
    return Response(
        body,
        media_type="text/javascript",
        headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"},
    )


@router.get(f"{STAFF_APP}/app-config.js")
def staff_config(request: Request) -> Response:
    try:
        viewer.staff(request)
    except viewer.Refused as err:
        return Response(status_code=err.status)
    return _config(STAFF_SCOPE)


@router.get(STAFF_APP)
@router.get(STAFF_APP + "/{route:path}")
def staff_app(request: Request, route: str = "") -> Response:
    """OHIF for staff (a client-side route such as ``viewer?StudyInstanceUIDs=``)."""
    try:
        viewer.staff(request)
    except viewer.Refused as err:
        return viewer.refused(request, err)
    return _app_index(request, STAFF_SCOPE)


def _share_scope(hub: Hub, token: str) -> ViewerScope | int:
    """The viewer scope a ``referral`` share opens, or the status refusing it: 410
    once expired or withdrawn (as its DICOMweb answers), 404 for an owner's link
    (the plain page, not this viewer) or a token that names no share."""
    with hub.db.read_session() as s:
        share = links.open_share(s, token)
        if share is None:
            return 410 if links.refusal(s, token) is not None else 404
        if share.mode != "referral":
            return 404
    base = f"/shared/{quote(token, safe='')}"
    return ViewerScope(
        app_base=f"{base}/app",
        dicomweb_root=f"{base}/dicomweb",
        show_priors=False,
        can_annotate=False,
    )


@router.get("/shared/{token}/app/app-config.js")
def shared_config(token: str, request: Request) -> Response:
    scope = _share_scope(request.app.state.hub, token)
    if isinstance(scope, int):
        return Response(status_code=scope)
    return _config(scope)


@router.get("/shared/{token}/app")
@router.get("/shared/{token}/app/{route:path}")
def shared_app(token: str, request: Request, route: str = "") -> Response:
    """OHIF for a referral share: its one study, read-only, by the token in the path."""
    scope = _share_scope(request.app.state.hub, token)
    if isinstance(scope, int):
        text = "This link has expired or was withdrawn." if scope == 410 else "No such link."
        return HTMLResponse(text, status_code=scope, headers=PAGE_HEADERS)
    return _app_index(request, scope)


@router.get("/viewer/ohif/{path:path}")
def ohif_file(path: str, request: Request) -> Response:
    """OHIF's code, styles, codecs and icons: the same public files for every viewer."""
    gzip_ok = "gzip" in request.headers.get("accept-encoding", "").lower()
    return ohif_assets.asset(path, gzip_ok)


@router.get("/viewer/static/vethub-ohif.js")
def hub_script() -> Response:
    """The hub's script inside OHIF: saved annotations, linked side-by-side viewports."""
    return FileResponse(
        STATIC_DIR / "vethub-ohif.js",
        media_type="text/javascript",
        headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
    )
