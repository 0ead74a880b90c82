"""What a share link opens (docs/interface.md "Share links (v1.1)").

``/shared/{token}`` is the whole credential: a ``referral`` link opens the
diagnostic viewer on its one study, an ``owner`` link the plain phone page
(hub/api/owner.py). With ``allow_download`` the page offers
``/shared/{token}/study.zip``. A link that expired or was withdrawn answers a
410 page saying so (audited as ``share.refused``), never the study; a token
that names no link is a 404 and not audited (anyone can make those up).
"""

from __future__ import annotations

import html
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session

from hub.api import download, owner
from hub.api.ohif import ViewerScope, study_viewer
from hub.api.viewer import page, preview
from hub.context import Hub
from hub.models import Share
from hub.services import events, links, studies

router = APIRouter(tags=["viewer"], include_in_schema=False)

GONE = {
    "expired": "This link has expired",
    "revoked": "This link was withdrawn by the clinic",
}


def _closed(s: Session, token: str, *, audit: bool = True) -> Response:
    """The 410 page of an expired or withdrawn link (audited), or the 404 page."""
    refused = links.refusal(s, token)
    if refused is None:
        return page(
            "Link not found",
            "<h1>This link does not work</h1><p>Please check that the whole link was "
            "copied, or ask the clinic to send it again.</p>",
            404,
        )
    share, reason = refused
    if audit:
        events.audit(
            s,
            f"share:{share.id}",
            "share.refused",
            "study",
            share.study_instance_uid,
            {"share_id": share.id, "reason": reason},
        )
    return page(
        "Link no longer valid",
        f"<h1>{html.escape(GONE[reason])}</h1><p>The pictures it showed are no longer "
        "available through it. Please ask the clinic for a new link.</p>",
        410,
    )


def _zip_url(token: str, share: Share) -> str | None:
    return f"/shared/{token}/study.zip" if share.allow_download else None


@router.get("/shared/{token}")
def shared_page(token: str, request: Request) -> Response:
    hub: Hub = request.app.state.hub
    with hub.db.session() as s:
        share = links.open_share(s, token)
        if share is None:
            return _closed(s, token)
        study = studies.get(s, share.study_instance_uid)
        assert share.id is not None
        links.record_use(s, share.id)
        events.audit(
            s,
            f"share:{share.id}",
            "view",
            "study",
            study.study_instance_uid,
            {"via": "share", "share_id": share.id, "mode": share.mode},
        )
        if share.mode == "owner":
            return owner.page(s, study, token, _zip_url(token, share))
        scope = ViewerScope(
            app_base=f"/shared/{token}/app",
            dicomweb_root=f"/shared/{token}/dicomweb",
            show_priors=False,
            can_annotate=False,
            download_url=_zip_url(token, share),
        )
        return study_viewer(request, s, study, scope)


@router.get("/shared/{token}/study.zip")
def shared_zip(token: str, request: Request) -> Response:
    """The study as DICOM files, JPEGs and a README, if the link allows downloads."""
    hub: Hub = request.app.state.hub
    with hub.db.session() as s:
        share = links.open_share(s, token)
        if share is None:
            return _closed(s, token)
        if not share.allow_download:
            return page(
                "No download",
                "<h1>This link does not offer a download</h1><p>Please ask the clinic "
                "if you need a copy of the images.</p>",
                403,
            )
        study = studies.get(s, share.study_instance_uid)
        streamed, count = download.response(s, study, Path(hub.settings.data_dir), jpegs=True)
        events.audit(
            s,
            f"share:{share.id}",
            "export",
            "study",
            study.study_instance_uid,
            {"via": "share", "share_id": share.id, "files": count},
        )
    return streamed


@router.get("/shared/{token}/instances/{sop_uid}/preview.png")
def shared_preview(token: str, sop_uid: str, request: Request) -> Response:
    hub: Hub = request.app.state.hub
    with hub.db.read_session() as s:
        share = links.open_share(s, token)
        if share is None:
            return Response(status_code=410 if links.refusal(s, token) else 404)
        study_uid = share.study_instance_uid
    return preview(hub, study_uid, sop_uid)
