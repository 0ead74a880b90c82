"""Links a person opens: the study viewer URL and share links.

A share token is 32 random bytes (256 bits) in URL-safe base64: unguessable,
and only its hash is stored. (Staff sessions work the same way: hub/services/users.py.)
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session
from sqlmodel import col

from hub.errors import Invalid, NotFound
from hub.models import Share, as_utc, utcnow

MAX_SHARE_HOURS = 24 * 90
# "referral": the full viewer, for a colleague; "owner": a plain page for a pet owner.
MODES = ("referral", "owner")


def viewer_url(public_url: str, study_instance_uid: str) -> str:
    return f"{public_url.rstrip('/')}/viewer/studies/{study_instance_uid}"


def share_url(public_url: str, token: str) -> str:
    return f"{public_url.rstrip('/')}/shared/{token}"


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_share(
    s: Session,
    study_instance_uid: str,
    hours: float,
    actor: str,
    note: str | None = None,
    *,
    mode: str = "referral",
    allow_download: bool = False,
) -> tuple[Share, str]:
    """A new share link; returns the row and the token (the only time it exists)."""
    if not 0 < hours <= MAX_SHARE_HOURS:
        raise Invalid.one("expires_in_hours", f"must be more than 0 and at most {MAX_SHARE_HOURS}")
    if mode not in MODES:
        raise Invalid.one("mode", f"must be one of {', '.join(MODES)}")
    token = secrets.token_urlsafe(32)
    share = Share(
        study_instance_uid=study_instance_uid,
        token_hash=_digest(token),
        created_by=actor,
        note=note,
        expires_at=utcnow() + timedelta(hours=hours),
        mode=mode,
        allow_download=allow_download,
    )
    s.add(share)
    s.flush()
    return share, token


def shares_of(s: Session, study_instance_uid: str) -> list[Share]:
    stmt = (
        select(Share)
        .where(col(Share.study_instance_uid) == study_instance_uid)
        .order_by(col(Share.id))
    )
    return list(s.scalars(stmt))


def revoke_share(s: Session, study_instance_uid: str, share_id: int) -> Share:
    share = s.get(Share, share_id)
    if share is None or share.study_instance_uid != study_instance_uid:
        raise NotFound(f"share {share_id} of study {study_instance_uid} does not exist")
    if share.revoked_at is None:
        share.revoked_at = utcnow()
    return share


def open_share(s: Session, token: str) -> Share | None:
    """The share a token opens, or None once it is unknown, expired or revoked."""
    share = s.scalars(select(Share).where(col(Share.token_hash) == _digest(token))).first()
    if share is None or share.revoked_at is not None:
        return None
    if as_utc(share.expires_at) <= utcnow():
        return None
    return share


def record_use(s: Session, share_id: int) -> None:
    """Count one opening of the link's page, in one UPDATE (two people opening it
    at once both count; image requests are not openings)."""
    s.execute(
        update(Share)
        .where(col(Share.id) == share_id)
        .values(use_count=col(Share.use_count) + 1, last_used_at=utcnow())
    )


def refusal(s: Session, token: str) -> tuple[Share, str] | None:
    """The share a token names and why it no longer opens ("revoked", "expired"), or
    None when it opens or names no share at all."""
    share = s.scalars(select(Share).where(col(Share.token_hash) == _digest(token))).first()
    if share is None:
        return None
    if share.revoked_at is not None:
        return share, "revoked"
    if as_utc(share.expires_at) <= utcnow():
        return share, "expired"
    return None


def is_active(share: Share) -> bool:
    return share.revoked_at is None and as_utc(share.expires_at) > utcnow()
