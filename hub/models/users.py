"""Staff accounts: people who sign in (API keys are for machines).

Only argon2id hashes of passwords are stored. Failed sign-ins are rows of
their own, so the lockout holds across every process serving the hub.

A person who signs in through single sign-on (OpenID Connect) is a user linked
to the provider's (issuer, subject): the subject is stable where usernames and
e-mail addresses change. Such a user has no usable password. An OIDC sign-in
under way is a row too (state, nonce, PKCE verifier), used once.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, DateTime, Index, UniqueConstraint
from sqlmodel import Field, SQLModel

from hub.models.core import _ts


class User(SQLModel, table=True):
    __tablename__ = "users"
    __table_args__ = (UniqueConstraint("oidc_issuer", "oidc_subject", name="uq_users_oidc"),)

    id: int | None = Field(default=None, primary_key=True)
    username: str = Field(max_length=64, unique=True)  # stored lower-case
    role: str = Field(max_length=16)
    password_hash: str = Field(max_length=255)
    disabled: bool = False
    created_at: datetime = _ts(nullable=False)
    password_changed_at: datetime = _ts(nullable=False)
    oidc_issuer: str | None = Field(default=None, max_length=255)
    oidc_subject: str | None = Field(default=None, max_length=255)


class SignInFailure(SQLModel, table=True):
    """One failed sign-in for a username (known or not, so 429 reveals nothing)."""

    __tablename__ = "sign_in_failures"
    __table_args__ = (Index("ix_sign_in_failures_username_at", "username", "at"),)

    id: int | None = Field(default=None, primary_key=True)
    username: str = Field(max_length=64)
    at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))


class OidcLogin(SQLModel, table=True):
    """A single sign-on under way: what the callback must match, kept server-side.

    ``state_hash`` and ``browser_hash`` are SHA-256 of the ``state`` sent to the
    provider and of the cookie that ties the attempt to the browser that began
    it (so a callback URL made by someone else signs no one in). Deleted when
    the callback comes, whatever its outcome: a state is good once.
    """

    __tablename__ = "oidc_logins"

    id: int | None = Field(default=None, primary_key=True)
    state_hash: str = Field(max_length=64, unique=True)
    browser_hash: str = Field(max_length=64)
    nonce: str = Field(max_length=128)
    code_verifier: str = Field(max_length=128)
    next_path: str = Field(max_length=2048)
    created_at: datetime = _ts(nullable=False, index=True)
