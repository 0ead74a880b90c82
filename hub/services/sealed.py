"""Secrets a source kind keeps (vendor client secrets, passwords), sealed at rest.

They are needed in clear to call the vendor, so they cannot be hashed like
API keys; they are encrypted with a key the database does not hold
(``VETHUB_SECRET_KEY``), so a copied database or backup alone does not give
away a clinic's vendor credentials. Fernet (AES-128-CBC + HMAC-SHA256) from
``cryptography``: authenticated, so a wrong key is an error, never garbage.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

from cryptography.fernet import Fernet, InvalidToken

from hub.errors import HubError

MIN_KEY = 16


class SealError(HubError):
    """No key is set, or the stored secrets were sealed under another key."""


def _fernet(key: str | None) -> Fernet:
    if not key:
        raise SealError(
            "VETHUB_SECRET_KEY is not set: it encrypts vendor credentials at rest "
            "(any passphrase of 16+ characters; keep it outside the data directory)"
        )
    if len(key) < MIN_KEY:
        raise SealError(f"VETHUB_SECRET_KEY must be at least {MIN_KEY} characters")
    # Any passphrase becomes a Fernet key: its SHA-256, base64url.
    return Fernet(base64.urlsafe_b64encode(hashlib.sha256(key.encode()).digest()))


def seal(values: dict[str, Any], key: str | None) -> str:
    return _fernet(key).encrypt(json.dumps(values, sort_keys=True).encode()).decode()


def unseal(token: str | None, key: str | None) -> dict[str, Any]:
    if not token:
        return {}
    try:
        out = json.loads(_fernet(key).decrypt(token.encode()))
    except InvalidToken:
        raise SealError(
            "the stored vendor credentials do not open with VETHUB_SECRET_KEY "
            "(was the key changed?); set the secrets again"
        ) from None
    return out if isinstance(out, dict) else {}
