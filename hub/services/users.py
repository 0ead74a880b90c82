"""Staff accounts, sign-in with lockout, and the sessions a signed-in browser holds.

Passwords are hashed with argon2id (memory-hard: a stolen database is slow to
crack). The hash is checked outside any database transaction, because it
takes tens of milliseconds and must not hold SQLite's writer lock.

Failed sign-ins are rows, counted per username whether or not the username
exists (a 429 must not tell an attacker which names are real), so every
process serving the hub sees the same count.

A person who signs in through single sign-on (hub/api/oidc.py) is a user
linked to the provider's (issuer, subject), created at the first sign-in; the
role comes from the provider at every sign-in, and the password hash is a
marker no password matches.

A session token is 32 random bytes; only its SHA-256 is stored. Its CSRF
token is derived from it, so nothing more is stored and a page can be given
the token without the cookie ever being readable by script.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import re
import secrets
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlmodel import col

from hub.db import Database
from hub.errors import Conflict, HubError, Invalid, NotFound
from hub.models import SignInFailure, StaffSession, User, as_utc, utcnow
from hub.services import events

ROLES = ("frontdesk", "tech", "vet", "admin")
MIN_PASSWORD = 10
MAX_PASSWORD = 1024  # hashing is the cost: refuse novels
USERNAME = re.compile(r"[a-z0-9][a-z0-9._@-]{0,63}")

FAILURES_BEFORE_LOCK = 5
FAILURE_WINDOW = timedelta(minutes=15)
LOCKED_FOR = timedelta(minutes=15)
TOUCH_EVERY = timedelta(minutes=1)
NO_PASSWORD = "!sso"  # not an argon2 hash: verifying anything against it fails

log = logging.getLogger("hub.users")
_hasher = PasswordHasher()  # argon2id with the RFC 9106 low-memory parameters


@functools.cache
def _dummy_hash() -> str:
    """Checked when a username is unknown, so an unknown name takes as long as a known one."""
    return _hasher.hash(secrets.token_urlsafe(16))


class BadCredentials(HubError):
    """Wrong username or password, or a disabled account: the caller is not told which."""


class LockedOut(HubError):
    def __init__(self, until: datetime) -> None:
        super().__init__("too many failed sign-ins for this username; try again later")
        self.until = until


class SsoRefused(HubError):
    """A single sign-on the hub will not complete (a disabled account, a taken name)."""


def normalize(username: str) -> str:
    return username.strip().lower()


def _check_username(username: str) -> str:
    name = normalize(username)
    if not USERNAME.fullmatch(name):
        raise Invalid.one(
            "username", "must be 1-64 characters: letters, digits and . _ @ - (not first)"
        )
    return name


def _check_role(role: str) -> str:
    if role not in ROLES:
        raise Invalid.one("role", f"must be one of {', '.join(ROLES)}")
    return role


def _hash_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise Invalid.one("password", f"must be at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise Invalid.one("password", f"must be at most {MAX_PASSWORD} characters")
    return _hasher.hash(password)


def create(session: Session, username: str, role: str, password: str, *, actor: str) -> User:
    """A new account, audited (the password is never in the trail); 409 if the name is taken."""
    name = _check_username(username)
    _check_role(role)
    user = User(username=name, role=role, password_hash=_hash_password(password))
    try:
        with session.begin_nested():
            session.add(user)
            session.flush()
    except IntegrityError as exc:
        raise Conflict(f"username {name!r} is taken", field="username") from exc
    assert user.id is not None
    events.audit(session, actor, "user.create", "user", user.id, {"username": name, "role": role})
    return user


def any_admin(session: Session) -> bool:
    """An enabled admin account exists (who can sign in and make API keys)."""
    stmt = select(col(User.id)).where(col(User.role) == "admin", col(User.disabled).is_(False))
    return session.scalars(stmt).first() is not None


def list_all(session: Session) -> list[User]:
    return list(session.scalars(select(User).order_by(col(User.id))))


def get(session: Session, user_id: int) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise NotFound(f"user {user_id} does not exist")
    return user


def by_name(session: Session, username: str) -> User:
    name = normalize(username)
    user = session.scalars(select(User).where(col(User.username) == name)).first()
    if user is None:
        raise NotFound(f"user {name!r} does not exist")
    return user


def change(
    session: Session,
    user: User,
    *,
    actor: str,
    role: str | None = None,
    disabled: bool | None = None,
) -> User:
    """Set role and/or disabled, audited. Disabling ends the user's sessions at once."""
    changes: dict[str, object] = {}
    if role is not None and role != user.role:
        changes["role"] = user.role = _check_role(role)
    if disabled is not None and disabled != user.disabled:
        changes["disabled"] = user.disabled = disabled
        if disabled:
            end_sessions_of(session, user)
    if changes:
        events.audit(session, actor, "user.change", "user", _id(user), changes)
    return user


def set_password(session: Session, user: User, password: str, *, actor: str) -> User:
    """A new password, audited; the user's sessions end (someone may know the old one)."""
    user.password_hash = _hash_password(password)
    user.password_changed_at = utcnow()
    end_sessions_of(session, user)
    events.audit(session, actor, "user.password", "user", _id(user))
    return user


def sign_in(db: Database, username: str, password: str, idle_minutes: float) -> tuple[User, str]:
    """Check a username and password; returns the user and a new session token.

    Raises LockedOut while the username is locked (the password is not even
    checked), BadCredentials otherwise when anything is wrong.
    """
    typed = normalize(username)
    name = typed[:64]  # failures of an over-long name are counted under its first 64
    with db.read_session() as s:
        until = locked_until(s, name)
        user = s.scalars(select(User).where(col(User.username) == typed)).first()
    if until is not None:
        log.warning("sign-in refused: username locked", extra={"username": name})
        raise LockedOut(until)
    ok = _verify(user.password_hash if user else None, password)
    if user is None or user.disabled or not ok:
        _failed(db, name)
        raise BadCredentials("wrong username or password")
    with db.session() as s:
        s.execute(delete(SignInFailure).where(col(SignInFailure.username) == name))
        if _hasher.check_needs_rehash(user.password_hash):
            s.execute(
                update(User)
                .where(col(User.id) == user.id)
                .values(password_hash=_hasher.hash(password))
            )
        sweep_sessions(s, idle_minutes)
        token = start_session(s, _id(user))
        events.audit(s, f"user:{user.id}:{name}", "sign-in", "user", _id(user))
    return user, token


def sign_in_oidc(
    db: Database,
    issuer: str,
    subject: str,
    names: list[str],
    role: str,
    idle_minutes: float,
) -> tuple[User, str]:
    """Sign in the user linked to ``(issuer, subject)``, creating it at the first
    sign-in; ``role`` (already mapped from the provider's claim) replaces the
    stored one every time, so the provider stays the source of roles.

    ``names`` are the username candidates in order of preference (the
    provider's preferred_username, then e-mail). Raises SsoRefused for a
    disabled account, or when no candidate is usable and free: an account of
    the same name that is not linked to this identity is never taken over.
    """
    _check_role(role)
    actor = f"system:oidc:{issuer}"
    with db.session() as s:
        user = s.scalars(
            select(User).where(col(User.oidc_issuer) == issuer, col(User.oidc_subject) == subject)
        ).first()
        if user is None:
            user = _create_linked(s, issuer, subject, names, role, actor)
        elif user.disabled:
            log.warning("sso sign-in refused: account disabled", extra={"user_id": user.id})
            raise SsoRefused(f"the account {user.username!r} is disabled")
        else:
            change(s, user, actor=actor, role=role)
        sweep_sessions(s, idle_minutes)
        token = start_session(s, _id(user))
        events.audit(
            s, f"user:{user.id}:{user.username}", "sign-in", "user", _id(user), {"via": "oidc"}
        )
    return user, token


def _create_linked(
    s: Session, issuer: str, subject: str, names: list[str], role: str, actor: str
) -> User:
    usable = [normalize(n) for n in names if USERNAME.fullmatch(normalize(n))]
    if not usable:
        raise SsoRefused("the provider sent no usable username (preferred_username or email)")
    name = usable[0]
    user = User(
        username=name,
        role=role,
        password_hash=NO_PASSWORD,
        oidc_issuer=issuer,
        oidc_subject=subject,
    )
    try:
        with s.begin_nested():
            s.add(user)
            s.flush()
    except IntegrityError as exc:
        log.warning("sso sign-in refused: username taken", extra={"username": name})
        raise SsoRefused(
            f"the username {name!r} belongs to another account of this hub; "
            "an admin must rename or disable it first"
        ) from exc
    events.audit(
        s, actor, "user.create", "user", _id(user), {"username": name, "role": role, "via": "oidc"}
    )
    return user


def _verify(stored: str | None, password: str) -> bool:
    if len(password) > MAX_PASSWORD:
        return False
    try:
        return _hasher.verify(stored or _dummy_hash(), password) and stored is not None
    except (VerificationError, InvalidHashError):
        return False


def _failed(db: Database, name: str) -> None:
    now = utcnow()
    with db.session() as s:
        s.execute(delete(SignInFailure).where(col(SignInFailure.at) < now - _KEEP))
        s.add(SignInFailure(username=name, at=now))
        s.flush()
        until = locked_until(s, name)
        if until is not None:
            events.audit(
                s, "system:sign-in", "user.locked", "username", name, {"until": str(until)}
            )
    log.warning("sign-in failed", extra={"username": name, "locked": until is not None})


_KEEP = FAILURE_WINDOW + LOCKED_FOR  # older failures can no longer lock anyone


def locked_until(session: Session, username: str) -> datetime | None:
    """Until when ``username`` is refused, if it is now: 15 minutes after the
    fifth failure that came within 15 minutes of four others."""
    now = utcnow()
    stmt = (
        select(col(SignInFailure.at))
        .where(col(SignInFailure.username) == username, col(SignInFailure.at) >= now - _KEEP)
        .order_by(col(SignInFailure.at))
    )
    times = [as_utc(t) for t in session.scalars(stmt)]
    n = FAILURES_BEFORE_LOCK
    ends = [
        times[i] + LOCKED_FOR
        for i in range(n - 1, len(times))
        if times[i] - times[i - n + 1] <= FAILURE_WINDOW
    ]
    until = max(ends, default=None)
    return until if until is not None and until > now else None


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def csrf_token(session_token: str) -> str:
    """The CSRF token of a session: derived, so only a holder of the cookie can know it."""
    return hashlib.sha256(b"vethub-csrf\x00" + session_token.encode()).hexdigest()


def start_session(session: Session, user_id: int) -> str:
    """A session token for a browser (the cookie value)."""
    token = secrets.token_urlsafe(32)
    session.add(StaffSession(token_hash=_digest(token), user_id=user_id))
    return token


def session_user(
    db: Database, token: str, idle_minutes: float, *, touch: bool = True
) -> User | None:
    """The user a session token belongs to while the session lasts (used within
    ``idle_minutes`` and the account not disabled); records the use unless
    ``touch`` is False (a page refreshing itself is not someone using it)."""
    now = utcnow()
    with db.read_session() as s:
        row = s.execute(
            select(StaffSession, User)
            .join(User, col(User.id) == col(StaffSession.user_id))
            .where(col(StaffSession.token_hash) == _digest(token))
        ).first()
    if row is None:
        return None
    staff, user = row
    last = as_utc(staff.last_used_at)
    if last <= now - timedelta(minutes=idle_minutes) or user.disabled:
        return None
    if touch and now - last >= TOUCH_EVERY:
        with db.session() as s:
            s.execute(
                update(StaffSession)
                .where(col(StaffSession.id) == staff.id)
                .values(last_used_at=now)
            )
    return user


def end_session(session: Session, token: str) -> None:
    session.execute(delete(StaffSession).where(col(StaffSession.token_hash) == _digest(token)))


def end_sessions_of(session: Session, user: User) -> None:
    session.execute(delete(StaffSession).where(col(StaffSession.user_id) == user.id))


def sweep_sessions(session: Session, idle_minutes: float) -> None:
    """Forget sessions idle for longer than ``idle_minutes`` (they no longer open anything)."""
    cutoff = utcnow() - timedelta(minutes=idle_minutes)
    session.execute(delete(StaffSession).where(col(StaffSession.last_used_at) < cutoff))


def _id(user: User) -> int:
    assert user.id is not None
    return user.id
