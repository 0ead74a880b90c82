"""Ways into a study for a person: share links and signed-in staff sessions.

Only SHA-256 hashes of the tokens are stored: a copy of the database does not
open any study.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, DateTime
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


class StaffSession(SQLModel, table=True):
    """A browser signed in with a staff API key, so study links open from the PIMS."""

    __tablename__ = "staff_sessions"

    id: int | None = Field(default=None, primary_key=True)
    token_hash: str = Field(max_length=64, unique=True)
    key_id: int = Field(index=True)
    created_at: datetime = _ts(nullable=False)
    expires_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
