"""An ezyVet source's settings: the ``SourceKind`` and the typed view the adapter works from.

ezyVet's two generations of docs disagree on the server and the token path
(``api.ezyvet.com`` + ``/v1/oauth/access_token``, 12 h tokens; ``apiv2.ezyvet.com``
+ ``/oauth/token``, 8 h), so both are settings. The body of the request ezyVet
pushes, the diagnostic-result call and the portal's parameter names were not
visible in any copy of the docs (shared pims.md §1, "[U]"): their field names
are settings too, with the defaults documented in docs/adapters.md, so a clinic
can follow what its ezyVet really sends without a new release.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hub.errors import FieldError
from hub.mappings import MODALITIES
from hub.services.source_kinds import SourceKind
from hub.services.sources import check_secret, check_url

if TYPE_CHECKING:
    from hub.config import Settings

NAME = "ezyvet"
KEY = "ezyvet"
# The partner side the hub hosts per source (partner.py): ROUTE/{source}/<call>.
ROUTE = "/adapters/ezyvet"
# The calls ezyVet is given a URL for, by the status key that shows it.
CALLS = {
    "accesstoken_url": "accesstoken",
    "modalities_url": "modalities",
    "species_url": "species",
    "request_url": "request",
    "result_portal_url": "result",
}
# The SPI scopes ezyVet lists for a PACS partner (pacs.html, "[V]").
SPI_SCOPES = (
    "read-diagnosticresult write-diagnosticresult read-attachment write-attachment read-separation"
)
# Where each part of ezyVet's request is read from (dotted paths into its JSON).
REQUEST_FIELDS: dict[str, str] = {
    "request_id": "id",
    "action": "action",
    "modality_code": "modality.code",
    "modality_name": "modality.name",
    "requested_at": "requested_at",
    "notes": "notes",
    "reason": "reason",
    "vet": "vet.name",
    "separation_id": "separation.id",
    "separation_name": "separation.name",
    "animal_id": "animal.id",
    "animal_name": "animal.name",
    "species_code": "animal.species.code",
    "species_name": "animal.species.name",
    "breed_code": "animal.breed.code",
    "breed_name": "animal.breed.name",
    "sex": "animal.sex",
    "desexed": "animal.desexed",
    "date_of_birth": "animal.date_of_birth",
    "weight_kg": "animal.weight",
    "microchip": "animal.microchip",
    "contact_id": "contact.id",
    "contact_first_name": "contact.first_name",
    "contact_last_name": "contact.last_name",
    "contact_business_name": "contact.business_name",
}
# The values of the action field that mean each command (compared case-insensitively).
# A request without an action is an upsert: created if new, else updated.
ACTIONS: dict[str, list[str]] = {
    "create": ["create", "created", "new"],
    "update": ["update", "updated", "modify", "modified"],
    "disable": ["disable", "disabled", "delete", "deleted", "cancel", "cancelled"],
}
# Our diagnostic-result call: which JSON field carries what.
RESULT_FIELDS: dict[str, str] = {
    "request_id": "diagnostic_request_id",
    "status": "status",
    "link": "result_url",
    "accession": "accession_number",
}
# The status text sent for each event.
RESULT_STATUS: dict[str, str] = {
    "study.received": "received",
    "study.reconciled": "received",
    "order.in_progress": "in progress",
    "order.completed": "complete",
    "order.cancelled": "cancelled",
    "order.discontinued": "cancelled",
}
# POST /v1/attachment: the multipart form's field names ("[V]": record type,
# record id, notes and the file; the names themselves unverified).
ATTACHMENT_FIELDS: dict[str, str] = {
    "record_type": "record_type",
    "record_id": "record_id",
    "notes": "notes",
    "file": "file",
}
DEFAULTS: dict[str, Any] = {
    "base_url": "https://api.ezyvet.com",
    "token_path": "/v1/oauth/access_token",
    "scope": SPI_SCOPES,
    "token_seconds": 3600,
    "request_fields": REQUEST_FIELDS,
    "actions": ACTIONS,
    "modality_map": {},
    "sites": {},
    "attachment_path": "/v1/attachment",
    "attachment_record_type": "Animal",
    "attachment_fields": ATTACHMENT_FIELDS,
    "result_path": "/v1/diagnosticresult",
    "result_fields": RESULT_FIELDS,
    "result_status": RESULT_STATUS,
    "portal_request_param": "request_id",
}
REQUIRED = (
    "partner_id",
    "client_id",
    "client_secret",
    "site_uid",
    "inbound_client_id",
    "inbound_client_secret",
)
# ``issued_tokens``: hashes of the tokens the hub gave ezyVet, sealed with the
# credentials so they live with the source (GET shows ``issued_tokens_set``).
SECRETS = frozenset({"client_secret", "inbound_client_secret", "issued_tokens"})


@dataclass(frozen=True)
class Config:
    """The settings of one ezyVet source, secrets opened, nested defaults filled in."""

    base_url: str
    token_path: str
    partner_id: str
    client_id: str
    client_secret: str
    site_uid: str
    scope: str
    inbound_client_id: str
    inbound_client_secret: str
    token_seconds: int
    request_fields: dict[str, str]
    actions: dict[str, list[str]]
    modality_map: dict[str, dict[str, str]]
    sites: dict[str, str]
    attachment_path: str
    attachment_record_type: str
    attachment_fields: dict[str, str]
    result_path: str
    result_fields: dict[str, str]
    result_status: dict[str, str]
    portal_request_param: str

    @classmethod
    def of(cls, cfg: Mapping[str, Any]) -> Config:
        """From stored settings (``sources.kind_config`` / ``Target.config``)."""
        full = {**DEFAULTS, **{k: v for k, v in cfg.items() if v is not None}}

        def nested(name: str) -> Any:
            given = full.get(name)
            return {**DEFAULTS[name], **(given if isinstance(given, dict) else {})}

        return cls(
            base_url=str(full["base_url"]).rstrip("/"),
            token_path=str(full["token_path"]),
            partner_id=str(full.get("partner_id") or ""),
            client_id=str(full.get("client_id") or ""),
            client_secret=str(full.get("client_secret") or ""),
            site_uid=str(full.get("site_uid") or ""),
            scope=str(full["scope"]),
            inbound_client_id=str(full.get("inbound_client_id") or ""),
            inbound_client_secret=str(full.get("inbound_client_secret") or ""),
            token_seconds=int(full["token_seconds"]),
            request_fields=nested("request_fields"),
            actions=nested("actions"),
            modality_map=dict(full.get("modality_map") or {}),
            sites={str(k): str(v) for k, v in (full.get("sites") or {}).items()},
            attachment_path=str(full["attachment_path"]),
            attachment_record_type=str(full["attachment_record_type"]),
            attachment_fields=nested("attachment_fields"),
            result_path=str(full["result_path"] or ""),
            result_fields=nested("result_fields"),
            result_status=nested("result_status"),
            portal_request_param=str(full["portal_request_param"]),
        )


def check(cfg: Mapping[str, Any]) -> list[FieldError]:
    """Every fault in an ezyVet source's settings, each named ``ezyvet.<field>``."""
    errors: list[FieldError] = []

    def bad(name: str, message: str) -> None:
        errors.append(FieldError(f"{KEY}.{name}", message))

    unknown = set(cfg) - set(DEFAULTS) - set(REQUIRED) - SECRETS
    for name in sorted(unknown):
        bad(name, f"is not an ezyVet setting; use {', '.join(sorted({*DEFAULTS, *REQUIRED}))}")
    for name in REQUIRED:
        if not isinstance(cfg.get(name), str) or not cfg[name].strip():
            bad(name, "is required (text)")
    secret = cfg.get("inbound_client_secret")
    if isinstance(secret, str) and secret and (why := check_secret(secret)):
        bad("inbound_client_secret", why)
    url = cfg.get("base_url")
    if not isinstance(url, str) or (why := check_url(url)):
        bad("base_url", why or "must be an http:// or https:// URL")
    for name in ("token_path", "attachment_path"):
        if not _path_ok(cfg.get(name)):
            bad(name, "must be a path starting with '/'")
    if cfg.get("result_path") not in ("", None) and not _path_ok(cfg.get("result_path")):
        bad("result_path", "must be a path starting with '/', or empty for no result call")
    seconds = cfg.get("token_seconds")
    if not isinstance(seconds, int) or isinstance(seconds, bool) or not 60 <= seconds <= 86400:
        bad("token_seconds", "must be a whole number of seconds from 60 to 86400")
    for name in ("scope", "attachment_record_type", "portal_request_param"):
        if not isinstance(cfg.get(name), str) or not cfg[name].strip():
            bad(name, "must be non-empty text")
    for name, known in (
        ("request_fields", REQUEST_FIELDS),
        ("result_fields", RESULT_FIELDS),
        ("attachment_fields", ATTACHMENT_FIELDS),
        ("result_status", RESULT_STATUS),
    ):
        errors.extend(_text_map(name, cfg.get(name), set(known)))
    errors.extend(_actions(cfg.get("actions")))
    errors.extend(_modality_map(cfg.get("modality_map")))
    sites = cfg.get("sites")
    if not isinstance(sites, dict) or not all(isinstance(v, str) for v in sites.values()):
        bad("sites", "must map separation ids to site names (text)")
    return errors


def _path_ok(value: Any) -> bool:
    return isinstance(value, str) and value.startswith("/") and " " not in value


def _text_map(name: str, value: Any, known: set[str]) -> list[FieldError]:
    if not isinstance(value, dict):
        return [FieldError(f"{KEY}.{name}", "must be an object of text values")]
    out = []
    for key, text in value.items():
        if key not in known:
            out.append(
                FieldError(f"{KEY}.{name}.{key}", f"unknown; use {', '.join(sorted(known))}")
            )
        elif not isinstance(text, str) or not text.strip():
            out.append(FieldError(f"{KEY}.{name}.{key}", "must be non-empty text"))
    return out


def _actions(value: Any) -> list[FieldError]:
    if not isinstance(value, dict):
        return [FieldError(f"{KEY}.actions", "must be an object of lists")]
    out = []
    for key, words in value.items():
        if key not in ACTIONS:
            out.append(FieldError(f"{KEY}.actions.{key}", "unknown; use create, update, disable"))
        elif not isinstance(words, list) or not all(isinstance(w, str) and w for w in words):
            out.append(FieldError(f"{KEY}.actions.{key}", "must be a list of texts"))
    return out


def _modality_map(value: Any) -> list[FieldError]:
    if not isinstance(value, dict):
        return [FieldError(f"{KEY}.modality_map", "must map ezyVet modality codes to objects")]
    out = []
    for code, entry in value.items():
        where = f"{KEY}.modality_map.{code}"
        if not isinstance(entry, dict):
            out.append(FieldError(where, "must be an object (modality, station_ae_title, ...)"))
            continue
        extra = set(entry) - {"modality", "station_ae_title", "procedure", "name"}
        if extra:
            out.append(FieldError(f"{where}.{sorted(extra)[0]}", "is not a modality_map field"))
        modality = entry.get("modality")
        if modality is not None and str(modality).upper() not in MODALITIES:
            out.append(FieldError(f"{where}.modality", f"unknown DICOM modality {modality!r}"))
        station = entry.get("station_ae_title")
        if station is not None and (not isinstance(station, str) or not 0 < len(station) <= 16):
            out.append(FieldError(f"{where}.station_ae_title", "must be 1-16 characters"))
        if not any(entry.get(k) for k in ("modality", "procedure")):
            out.append(FieldError(where, "needs a modality or a procedure"))
    return out


def public(source: str, stored: Mapping[str, Any], settings: Settings) -> dict[str, Any]:
    """GET shows the URLs to type into ezyVet's integration record: the partner
    base URL and each call under it (the result portal is opened with
    ``portal_request_param`` and ``client_id`` as query parameters)."""
    base = f"{settings.public_url.rstrip('/')}{ROUTE}/{source}"
    return {"partner_url": base} | {key: f"{base}/{call}" for key, call in CALLS.items()}


KIND = SourceKind(NAME, KEY, secret_fields=SECRETS, check=check, defaults=DEFAULTS, public=public)
