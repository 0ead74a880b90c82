"""The diagnostic viewer: a stock OHIF build served by the hub against its own DICOMweb.

(Placeholder while the OHIF serving is written: ``study_viewer`` shows the
study summary page.) ``study_viewer`` is what both the staff viewer URL and a
``referral`` share link open; only the ``ViewerScope`` differs.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session

from hub.models import Study

router = APIRouter(tags=["viewer"], include_in_schema=False)


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


def study_viewer(request: Request, s: Session, study: Study, scope: ViewerScope) -> Response:
    """The viewer page for ``study`` (banner, priors, OHIF); the caller has checked
    access and writes the audit event."""
    from hub.api import viewer  # the summary page, until the OHIF page replaces it

    body = viewer._summary(s, study, f"{scope.app_base}/../instances", scope.download_url)
    return viewer.page("Study", body)
