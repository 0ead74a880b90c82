"""Ways in for a person: share links and signed-in staff sessions.

Only SHA-256 hashes of the tokens are stored: a copy of the database does not
open any study.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, DateTime
from sqlmodel import Field, SQLModel

from hub.models.core import _ts


class Share(SQLModel, table=True):
    """An unguessable, expiring link to one study for someone outside the clinic."""

    __tablename__ = "shares"

    id: int | None = Field(default=None, primary_key=True)
    study_instance_uid: str = Field(max_length=64, index=True)
    token_hash: str = Field(max_length=64, unique=True)
    created_by: str = Field(max_length=128)
    note: str | None = Field(default=None, max_length=255)
    created_at: datetime = _ts(nullable=False)
    expires_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    revoked_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    # "referral": the full viewer; "owner": a plain page for a pet owner's phone.
    mode: str = Field(default="referral", max_length=16)
    allow_download: bool = False
    use_count: int = 0  # page opens (not image requests)
    last_used_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))


class Annotation(SQLModel, table=True):
    """The viewer's saved measurements and notes of one study: one JSON document,
    replaced whole by each save (``version`` guards against a lost update)."""

    __tablename__ = "annotations"

    id: int | None = Field(default=None, primary_key=True)
    study_instance_uid: str = Field(max_length=64, unique=True)
    document: list[dict[str, Any]] = Field(sa_column=Column(JSON, nullable=False))
    version: int = 1
    updated_by: str = Field(max_length=128)
    updated_at: datetime = _ts(nullable=False)


class StaffSession(SQLModel, table=True):
    """A signed-in person's browser; it ends after ``session_idle_minutes`` unused."""

    __tablename__ = "staff_sessions"

    id: int | None = Field(default=None, primary_key=True)
    token_hash: str = Field(max_length=64, unique=True)
    user_id: int = Field(foreign_key="users.id", index=True)
    created_at: datetime = _ts(nullable=False)
    # Written at most once a minute (not on every request): idle expiry needs no more.
    last_used_at: datetime = _ts(nullable=False, index=True)
