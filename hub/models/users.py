"""Staff accounts: people who sign in (API keys are for machines).

Only argon2id hashes of passwords are stored. Failed sign-ins are rows of
their own, so the lockout holds across every process serving the hub.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, DateTime, Index
from sqlmodel import Field, SQLModel

from hub.models.core import _ts


class User(SQLModel, table=True):
    __tablename__ = "users"

    id: int | None = Field(default=None, primary_key=True)
    username: str = Field(max_length=64, unique=True)  # stored lower-case
    role: str = Field(max_length=16)
    password_hash: str = Field(max_length=255)
    disabled: bool = False
    created_at: datetime = _ts(nullable=False)
    password_changed_at: datetime = _ts(nullable=False)


class SignInFailure(SQLModel, table=True):
    """One failed sign-in for a username (known or not, so 429 reveals nothing)."""

    __tablename__ = "sign_in_failures"
    __table_args__ = (Index("ix_sign_in_failures_username_at", "username", "at"),)

    id: int | None = Field(default=None, primary_key=True)
    username: str = Field(max_length=64)
    at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
