"""REST share links for a study (docs/interface.md "Links")."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from hub.api.auth import Caller, require
from hub.api.params import RowId
from hub.models import Share, as_utc
from hub.schemas import UtcDateTime
from hub.services import events, links, studies

router = APIRouter(prefix="/api/v1/studies", tags=["shares"])
SHARE = require("vet")


class ShareIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    expires_in_hours: float = Field(72, gt=0, le=links.MAX_SHARE_HOURS)
    mode: str = Field(
        "referral",
        max_length=16,
        description="referral: the full viewer; owner: a plain page for a pet owner's phone",
    )
    allow_download: bool = Field(False, description="the page offers the study as a ZIP")
    note: str | None = Field(None, max_length=255, description="who it is for, e.g. a referral")


class ShareCreated(BaseModel):
    id: int
    url: str
    expires_at: datetime
    mode: str
    allow_download: bool


class ShareOut(BaseModel):
    id: int
    created_by: str
    note: str | None
    created_at: UtcDateTime
    expires_at: UtcDateTime
    revoked_at: UtcDateTime | None
    active: bool
    mode: str
    allow_download: bool
    use_count: int = Field(description="times the link's page was opened")
    last_used_at: UtcDateTime | None


def _out(share: Share) -> ShareOut:
    return ShareOut(
        id=share.id,
        created_by=share.created_by,
        note=share.note,
        created_at=as_utc(share.created_at),
        expires_at=as_utc(share.expires_at),
        revoked_at=as_utc(share.revoked_at),
        active=links.is_active(share),
        mode=share.mode,
        allow_download=share.allow_download,
        use_count=share.use_count,
        last_used_at=as_utc(share.last_used_at),
    )


@router.post("/{study_instance_uid}/shares", status_code=201, response_model=ShareCreated)
def create_share(
    study_instance_uid: str,
    request: Request,
    body: ShareIn | None = None,
    who: Caller = Depends(SHARE),
) -> ShareCreated:
    body = body or ShareIn()
    hub = request.app.state.hub
    with hub.db.session() as s:
        studies.get(s, study_instance_uid)  # 404 for an unknown study
        share, token = links.create_share(
            s,
            study_instance_uid,
            body.expires_in_hours,
            who.actor,
            body.note,
            mode=body.mode,
            allow_download=body.allow_download,
        )
        events.audit(
            s,
            who.actor,
            "share",
            "study",
            study_instance_uid,
            {
                "share_id": share.id,
                "expires_at": share.expires_at.isoformat(),
                "note": body.note,
                "mode": share.mode,
                "allow_download": share.allow_download,
            },
        )
        return ShareCreated(
            id=share.id,
            url=links.share_url(hub.settings.public_url, token),
            expires_at=as_utc(share.expires_at),
            mode=share.mode,
            allow_download=share.allow_download,
        )


@router.get("/{study_instance_uid}/shares", response_model=list[ShareOut])
def list_shares(
    study_instance_uid: str, request: Request, who: Caller = Depends(SHARE)
) -> list[ShareOut]:
    with request.app.state.hub.db.read_session() as s:
        studies.get(s, study_instance_uid)
        return [_out(x) for x in links.shares_of(s, study_instance_uid)]


@router.delete("/{study_instance_uid}/shares/{share_id}", status_code=204)
def revoke_share(
    study_instance_uid: str, share_id: RowId, request: Request, who: Caller = Depends(SHARE)
) -> Response:
    with request.app.state.hub.db.session() as s:
        links.revoke_share(s, study_instance_uid, share_id)
        events.audit(
            s, who.actor, "share.revoke", "study", study_instance_uid, {"share_id": share_id}
        )
    return Response(status_code=204)
