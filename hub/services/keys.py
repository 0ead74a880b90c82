"""API keys: created once, shown once, stored as a hash.

Keys are 256-bit random tokens, so a plain SHA-256 is a sound hash for them
(no password stretching needed) and lets a request be checked with one
indexed lookup.
"""

from __future__ import annotations

import hashlib
import logging
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session
from sqlmodel import col

from hub.errors import Invalid, NotFound
from hub.models import ApiKey, utcnow
from hub.services import events, sources

ROLES = ("integration", "frontdesk", "tech", "vet", "admin")
KEY_PREFIX = "vh_"

log = logging.getLogger("hub.keys")


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


# Roles a source-scoped key may have: the ones that place and change orders.
SCOPABLE_ROLES = ("integration", "frontdesk")


def create(
    session: Session,
    name: str,
    role: str,
    *,
    actor: str,
    key: str | None = None,
    source: str | None = None,
) -> tuple[ApiKey, str]:
    """Store a key, audited; returns the row and the plain key (the only time it exists).

    A key with a ``source`` places and changes only that source's orders: a
    leaked practice-system key cannot rewrite another system's worklist.
    """
    if role not in ROLES:
        raise Invalid.one("role", f"must be one of {', '.join(ROLES)}")
    if not name.strip():
        raise Invalid.one("name", "must not be empty")
    if source is not None:
        if not sources.valid_name(source):
            raise Invalid.one("source", "must be a source name (letters, digits, . _ -)")
        if role not in SCOPABLE_ROLES:
            raise Invalid.one(
                "source", f"only {' and '.join(SCOPABLE_ROLES)} keys can be scoped to a source"
            )
    key = key or new_key()
    row = ApiKey(
        name=name.strip(), role=role, key_hash=hash_key(key), prefix=key[:8], source=source
    )
    session.add(row)
    session.flush()
    assert row.id is not None
    detail = {"name": row.name, "role": role} | ({"source": source} if source else {})
    events.audit(session, actor, "key.create", "key", row.id, detail)
    return row, key


def ensure(session: Session, name: str, role: str, key: str) -> ApiKey | None:
    """Create the bootstrap key ``key`` with ``role`` only while no admin key exists.

    Called at every start with ``VETHUB_BOOTSTRAP_ADMIN_KEY``, so it must never
    undo an administrator's decision: a revoked bootstrap key stays revoked (a
    leaked key would otherwise come back with the next restart) and a key whose
    row exists is left as it is. Once any admin key exists the value creates
    nothing. Returns the key's row, or None when there is none.
    """
    row = session.scalars(select(ApiKey).where(col(ApiKey.key_hash) == hash_key(key))).first()
    if row is not None:
        if row.revoked_at is not None:
            log.warning(
                "the bootstrap admin key was revoked and stays revoked; "
                "remove VETHUB_BOOTSTRAP_ADMIN_KEY or set a new value",
                extra={"key_id": row.id},
            )
        return row
    if any_admin(session):
        log.info("an admin key exists; the bootstrap admin key value creates nothing")
        return None
    row, _ = create(session, name, role, actor="system:bootstrap", key=key)
    return row


def authenticate(session: Session, key: str) -> ApiKey | None:
    row = session.scalars(select(ApiKey).where(col(ApiKey.key_hash) == hash_key(key))).first()
    if row is None or row.revoked_at is not None:
        return None
    return row


def list_all(session: Session) -> list[ApiKey]:
    return list(session.scalars(select(ApiKey).order_by(col(ApiKey.id))))


def revoke(session: Session, key_id: int, *, actor: str) -> ApiKey:
    row = session.get(ApiKey, key_id)
    if row is None:
        raise NotFound(f"key {key_id} does not exist")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        events.audit(session, actor, "key.revoke", "key", key_id)
    return row


def any_admin(session: Session) -> bool:
    stmt = select(col(ApiKey.id)).where(
        col(ApiKey.role) == "admin", col(ApiKey.revoked_at).is_(None)
    )
    return session.scalars(stmt).first() is not None
