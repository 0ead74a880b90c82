"""A Provet Cloud source's settings (``"kind": "provet"``, under ``"provet"``) and
the webhook URL the hub gives the clinic.

Provet signs no webhook (pims.md §2), so the URL itself is the secret: its
last path segment is an HMAC of the source's name under ``VETHUB_SECRET_KEY``.
Nothing has to be stored for it, a copied database does not reveal it, and
raising ``webhook_rotation`` makes a new URL (the old one then answers 404).

Field names that Provet's published pages do not show (how the worklist
names its referral, patient, modality...; where status and link are
written back) are settings with documented defaults, not constants.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from hub.errors import FieldError
from hub.services.source_kinds import SourceKind

if TYPE_CHECKING:
    from hub.config import Settings

NAME = "provet"
KEY = "provet"
SECRETS = frozenset({"client_secret"})
ROUTE = "/adapters/provet"
# Trigger names a hook's URL may end with (webhook_triggers.html: 6, 7, 8).
TRIGGERS = {"6": "created", "7": "updated", "8": "deleted"}

# How the worklist and referral name their relations [U: not in the published
# pages]; a clinic whose Provet differs overrides single entries in "fields".
FIELDS: dict[str, str] = {
    "worklist_referral": "referral",
    "worklist_patient": "patient",
    "worklist_client": "client",
    "worklist_modality": "modality",
    "worklist_target_areas": "target_areas",
    "worklist_supervising_vet": "supervising_veterinarian",
    "referral_consultation": "consultation",
    "referral_appointment": "appointment",
    "referral_remarks": "remarks",
    "appointment_start": "start",
}

DEFAULTS: dict[str, Any] = {
    "scope": "restapi",
    # Lookup lists only; Provet counts page_size x (page_size / default) against
    # the per-endpoint limit (ratelimit.html), so keep it small.
    "page_size": 25,
    # Where results go back [U]: PATCH on the worklist or on the referral.
    "target": "worklist",
    "status_field": "status",
    "link_field": "viewer_url",
    # Hub order status -> the value written to status_field [U].
    "status_values": {
        "in_progress": "in_progress",
        "completed": "completed",
        "cancelled": "cancelled",
        "discontinued": "cancelled",
    },
    "fields": FIELDS,
    "webhook_rotation": 0,
}
_TEXT = ("base_url", "provet_id", "client_id", "client_secret", "scope")


def check(cfg: Mapping[str, Any]) -> list[FieldError]:
    """Every fault in the settings, each named ``provet.<field>``."""
    errors: list[FieldError] = []

    def bad(name: str, why: str) -> None:
        errors.append(FieldError(f"{KEY}.{name}", why))

    for name in ("base_url", "provet_id", "client_id", "client_secret"):
        if not cfg.get(name):
            bad(name, "is required")
    for name in _TEXT:
        value = cfg.get(name)
        if value is not None and (not isinstance(value, str) or len(value) > 512):
            bad(name, "must be text of at most 512 characters")
    base = cfg.get("base_url")
    if isinstance(base, str) and base:
        parts = urlsplit(base)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            bad("base_url", "must be an http(s) URL such as https://us.provetcloud.com")
        elif parts.path.strip("/") or parts.query or parts.fragment:
            bad("base_url", "must be the Provet domain only; provet_id is a setting of its own")
    pid = cfg.get("provet_id")
    if isinstance(pid, str) and pid and not pid.isalnum():
        bad("provet_id", "must be letters and digits (the number in your Provet Cloud URL)")
    size = cfg.get("page_size")
    if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= 100:
        bad("page_size", "must be a whole number from 1 to 100")
    if cfg.get("target") not in ("worklist", "referral"):
        bad("target", "must be 'worklist' or 'referral'")
    for name in ("status_field", "link_field"):
        value = cfg.get(name)
        if value is not None and (not isinstance(value, str) or not value.isidentifier()):
            bad(name, "must be a field name (letters, digits, _) or null to leave it out")
    values = cfg.get("status_values")
    if not isinstance(values, dict) or not all(isinstance(k, str) for k in values):
        bad("status_values", "must map hub order statuses to Provet values")
    fields = cfg.get("fields")
    if not isinstance(fields, dict):
        bad("fields", "must be an object of field names")
    else:
        for name, value in fields.items():
            if name not in FIELDS:
                bad(f"fields.{name}", f"unknown; known: {', '.join(FIELDS)}")
            elif not isinstance(value, str) or not value.isidentifier():
                bad(f"fields.{name}", "must be a field name")
    rotation = cfg.get("webhook_rotation")
    if not isinstance(rotation, int) or isinstance(rotation, bool) or rotation < 0:
        bad("webhook_rotation", "must be a whole number >= 0")
    return errors


def field_names(cfg: Mapping[str, Any]) -> dict[str, str]:
    """The relation names to read, the defaults overridden entry by entry."""
    return FIELDS | dict(cfg.get("fields") or {})


def webhook_token(secret_key: str | None, source: str, rotation: int) -> str | None:
    """The secret path segment of ``source``'s webhook URL (None without a key)."""
    if not secret_key:
        return None
    mac = hmac.new(
        secret_key.encode(), f"provet-webhook\n{source}\n{rotation}".encode(), hashlib.sha256
    )
    return base64.urlsafe_b64encode(mac.digest()[:24]).decode()


def webhook_url(settings: Settings, source: str, rotation: int) -> str | None:
    token = webhook_token(settings.secret_key, source, rotation)
    if token is None:
        return None
    return f"{settings.public_url.rstrip('/')}{ROUTE}/{source}/{token}"


def public(source: str, stored: Mapping[str, Any], settings: Settings) -> dict[str, Any]:
    """GET shows the URL to paste into Provet (Settings > General > Integrations >
    Webhooks, triggers 6, 7 and 8)."""
    url = webhook_url(settings, source, int(stored.get("webhook_rotation") or 0))
    return {"webhook_url": url}


KIND = SourceKind(NAME, KEY, secret_fields=SECRETS, check=check, defaults=DEFAULTS, public=public)
