"""The bearer tokens the hub gives ezyVet (``POST .../accesstoken``) and checks on its calls.

Only a token's SHA-256 is kept, with its expiry, sealed with the source's
other ezyVet secrets (so it lives in the database, every hub process sharing
it sees it, and GET shows only ``issued_tokens_set``). ezyVet may ask again
before a token runs out, from several workers: the newest few stay valid
rather than each new one revoking the last.
"""

from __future__ import annotations

import hmac
import secrets
import time
from typing import Any

from hub.models import Source
from hub.services import keys, sealed
from hub.services.sources import SECRETS_SET

FIELD = "issued_tokens"
KEEP = 5


def same(given: str, expected: str) -> bool:
    """Compared in constant time; an empty expectation never matches."""
    return bool(expected) and hmac.compare_digest(given.encode(), expected.encode())


def credentials_ok(client_id: str, client_secret: str, expected_id: str, expected: str) -> bool:
    """Both compared, each in constant time, whatever the first answer was."""
    id_ok = same(client_id, expected_id)
    return same(client_secret, expected) and id_ok


def issue(row: Source, secret_key: str | None, lifetime: int, now: float | None = None) -> str:
    """A new token for ezyVet, its hash stored on ``row`` (the caller commits)."""
    now = time.time() if now is None else now
    token = "ezv_" + secrets.token_urlsafe(32)
    stored = sealed.unseal(row.kind_secrets, secret_key)
    live = [t for t in _tokens(stored) if t["expires"] > now]
    live.append({"sha256": keys.hash_key(token), "expires": now + lifetime})
    stored[FIELD] = live[-KEEP:]
    row.kind_secrets = sealed.seal(stored, secret_key)
    settings = dict(row.kind_settings or {})
    settings[SECRETS_SET] = sorted({*settings.get(SECRETS_SET, []), FIELD})
    row.kind_settings = settings
    return token


def valid(row: Source, secret_key: str | None, token: str, now: float | None = None) -> bool:
    """Whether ``token`` was issued for this source and has not run out."""
    now = time.time() if now is None else now
    digest = keys.hash_key(token)
    stored = sealed.unseal(row.kind_secrets, secret_key)
    return any(
        hmac.compare_digest(t["sha256"], digest) and t["expires"] > now for t in _tokens(stored)
    )


def _tokens(stored: dict[str, Any]) -> list[dict[str, Any]]:
    tokens = stored.get(FIELD)
    if not isinstance(tokens, list):
        return []
    return [t for t in tokens if isinstance(t, dict) and "sha256" in t and "expires" in t]
