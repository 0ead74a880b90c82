"""Practice systems (sources): registration, validation, and what each one subscribes to.

A source's name is the ``source`` that its orders carry, so an event about an
order is delivered to the system that placed it. Bad settings (an unusable
URL, a weak secret, a result kind we cannot send) are refused here, at
registration, rather than discovered on the first delivery. Which result
kinds exist, and which settings each needs, the delivery kinds registry
says (hub/services/deliveries/kinds.py); this module checks the fields.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.orm import Session

from hub.errors import FieldError, Invalid, NotFound
from hub.mappings import default_mappings_dir
from hub.models import Source, utcnow
from hub.services import events, peers, sealed
from hub.services.source_kinds import HL7, SourceKinds

if TYPE_CHECKING:
    from hub.config import Settings
    from hub.services.deliveries.kinds import Registry

# The outbox kinds a source may subscribe to (hub/services/orders.py, studies).
EventName = Literal[
    "order.scheduled",
    "order.updated",
    "order.in_progress",
    "order.completed",
    "order.cancelled",
    "order.discontinued",
    "study.received",
    "study.reconciled",
    "study.detached",
    "qc.daily",
]
EVENTS: tuple[str, ...] = get_args(EventName)
# Events about the hub as a whole, not one order (hub/services/qc.py): every
# source subscribed to one gets it, whatever orders it placed.
HUB_EVENTS: frozenset[str] = frozenset({"qc.daily"})
# "study received, order completed, order cancelled, reconciliation changed".
DEFAULT_EVENTS: tuple[EventName, ...] = (
    "study.received",
    "order.completed",
    "order.cancelled",
    "study.reconciled",
    "study.detached",
)
MIN_SECRET = 16
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_HOSTNAME = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?"
)


@dataclass(frozen=True)
class SourceSettings:
    """What an admin sends for a source (docs/interface.md "Practice systems")."""

    hl7_profile: str = "default"
    webhook_url: str | None = None
    webhook_secret: str | None = None
    hl7_host: str | None = None
    hl7_port: int | None = None
    results: tuple[str, ...] = ()
    events: tuple[str, ...] = DEFAULT_EVENTS
    # Who may send HL7 as this source (MSH-3, MSH-4, address); see peers.sender_matches.
    hl7_senders: tuple[dict[str, Any], ...] = ()
    tls: bool = False  # outgoing HL7 to this source over TLS
    # A vendor adapter's kind (hub/services/source_kinds.py) and its settings
    # object as sent, secrets included; None for an hl7 source.
    kind: str = HL7
    kind_settings: dict[str, Any] | None = None


# In Source.kind_settings: which of the kind's secret fields are set (GET says
# so without opening them).
SECRETS_SET = "_secrets_set"


def valid_name(name: str) -> bool:
    return bool(_NAME.fullmatch(name))


def check_url(url: str) -> str | None:
    """Why ``url`` cannot be a webhook target, or None when it can."""
    if url != url.strip() or any(c.isspace() for c in url):
        return "must not contain spaces"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError as exc:
        return f"is not a valid URL ({exc})"
    if parts.scheme not in ("http", "https"):
        return "must be an http:// or https:// URL"
    if not parts.hostname:
        return "must name a host"
    if not _host_ok(parts.hostname):
        return f"host {parts.hostname!r} is not a valid host name or address"
    if parts.fragment:
        return "must not have a #fragment"
    return None


def _host_ok(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return bool(_HOSTNAME.fullmatch(host))


def check_secret(secret: str) -> str | None:
    if len(secret) < MIN_SECRET:
        return f"must be at least {MIN_SECRET} characters"
    if not secret.isascii() or not secret.isprintable() or any(c.isspace() for c in secret):
        return "must be printable ASCII without spaces"
    return None


def sender_errors(entries: tuple[dict[str, Any], ...]) -> list[FieldError]:
    """Each unusable ``hl7_senders`` entry, named down to the part at fault when one is."""
    errors: list[FieldError] = []
    for i, entry in enumerate(entries):
        why = peers.check_sender_entry(entry) if isinstance(entry, dict) else "must be an object"
        if why is None:
            continue
        where = f"hl7_senders[{i}]"
        for key in ("application", "facility", "address"):
            value = entry.get(key) if isinstance(entry, dict) else None
            if value not in (None, "") and peers.check_sender_entry({key: value}):
                where = f"{where}.{key}"
                break
        errors.append(FieldError(where, why))
    return errors


def clean_senders(entries: tuple[dict[str, Any], ...]) -> list[dict[str, str]]:
    """Entries as stored: the parts given, without surrounding spaces; empty parts left out."""
    return [
        {k: v.strip() for k, v in e.items() if isinstance(v, str) and v.strip()} for e in entries
    ]


def validate(
    name: str,
    new: SourceSettings,
    kinds: Registry,
    stored_secret: str | None = None,
    profiles: frozenset[str] | None = None,
    source_kinds: SourceKinds | None = None,
    stored_kind_secrets: dict[str, Any] | None = None,
) -> None:
    """Raise ``Invalid`` naming every field at fault (``profiles``: known HL7 profile names)."""
    errors: list[FieldError] = kind_errors(new, source_kinds, stored_kind_secrets or {})
    if profiles is not None and new.hl7_profile not in profiles:
        errors.append(
            FieldError(
                "hl7_profile",
                f"unknown HL7 profile {new.hl7_profile!r}; known: {', '.join(sorted(profiles))}",
            )
        )
    if not valid_name(name):
        errors.append(
            FieldError("name", "must be 1-64 letters, digits, '.', '_' or '-', starting alnum")
        )
    for ev in new.events:
        if ev not in EVENTS:
            errors.append(FieldError("events", f"unknown event {ev!r}; use {', '.join(EVENTS)}"))
    if new.webhook_url is not None:
        why = check_url(new.webhook_url)
        if why:
            errors.append(FieldError("webhook_url", why))
    if new.webhook_secret is not None:
        why = check_secret(new.webhook_secret)
        if why:
            errors.append(FieldError("webhook_secret", why))
    if new.hl7_host is not None and not _host_ok(new.hl7_host):
        errors.append(FieldError("hl7_host", "is not a valid host name or address"))
    if new.hl7_port is not None and not 1 <= new.hl7_port <= 65535:
        errors.append(FieldError("hl7_port", "must be between 1 and 65535"))
    errors.extend(sender_errors(new.hl7_senders))
    # The kinds judge the settings as they will be stored: a kept secret counts.
    errors.extend(kinds.check(replace(new, webhook_secret=new.webhook_secret or stored_secret)))
    if errors:
        raise Invalid(errors)


def kind_errors(
    new: SourceSettings, source_kinds: SourceKinds | None, stored_secrets: dict[str, Any]
) -> list[FieldError]:
    """Faults in the kind and its settings object; a kept secret counts as set."""
    if new.kind == HL7:
        return []
    kind = source_kinds.get(new.kind) if source_kinds else None
    if kind is None:
        known = ", ".join(source_kinds.names() if source_kinds else (HL7,))
        return [FieldError("kind", f"unknown source kind {new.kind!r}; use {known}")]
    if not isinstance(new.kind_settings, dict):
        return [FieldError(kind.key, f"is required for a source of kind {kind.name!r}")]
    return kind.check(merged_settings(kind.defaults, new.kind_settings, stored_secrets))


def merged_settings(
    defaults: Any, sent: dict[str, Any], stored_secrets: dict[str, Any]
) -> dict[str, Any]:
    """Defaults, then the stored secrets (kept when omitted), then what was sent."""
    return {**dict(defaults), **stored_secrets, **{k: v for k, v in sent.items() if v is not None}}


def kind_config(row: Source, secret_key: str | None) -> dict[str, Any]:
    """A vendor source's settings with its secrets opened: what its adapter works from."""
    return opened_settings(row.kind_settings or {}, row.kind_secrets, secret_key)


def opened_settings(
    stored: Mapping[str, Any], sealed_secrets: str | None, secret_key: str | None
) -> dict[str, Any]:
    """Stored kind settings (without the set-secrets list) and the secrets unsealed."""
    shown = {k: v for k, v in stored.items() if k != SECRETS_SET}
    return shown | sealed.unseal(sealed_secrets, secret_key)


def set_state(session: Session, name: str, **values: Any) -> None:
    """Record what a source's adapter last did (shown by GET as ``status``)."""
    row = get(session, name)
    row.kind_state = {**(row.kind_state or {}), **values}


def _store_kind(
    row: Source, new: SourceSettings, source_kinds: SourceKinds | None, secret_key: str | None
) -> None:
    row.kind = new.kind
    kind = source_kinds.get(new.kind) if source_kinds and new.kind != HL7 else None
    if kind is None:
        row.kind_settings, row.kind_secrets = {}, None
        return
    stored = sealed.unseal(row.kind_secrets, secret_key) if row.kind_secrets else {}
    full = merged_settings(kind.defaults, new.kind_settings or {}, stored)
    secrets = {k: v for k, v in full.items() if k in kind.secret_fields}
    plain = {k: v for k, v in full.items() if k not in kind.secret_fields}
    try:
        row.kind_secrets = sealed.seal(secrets, secret_key) if secrets else None
    except sealed.SealError as exc:
        raise Invalid([FieldError(kind.key, str(exc))]) from None
    row.kind_settings = plain | {SECRETS_SET: sorted(secrets)}


def put(
    session: Session,
    name: str,
    new: SourceSettings,
    kinds: Registry,
    profiles: frozenset[str] | None = None,
    *,
    actor: str,
    source_kinds: SourceKinds | None = None,
    secret_key: str | None = None,
) -> tuple[Source, bool]:
    """Create or replace a source, audited. Omitting a secret keeps the stored one."""
    row = session.get(Source, name)
    stored_kind_secrets: dict[str, Any] = {}
    if row is not None and row.kind == new.kind and row.kind_secrets:
        try:
            stored_kind_secrets = sealed.unseal(row.kind_secrets, secret_key)
        except sealed.SealError as exc:
            raise Invalid([FieldError("kind", str(exc))]) from None
    validate(
        name,
        new,
        kinds,
        row.webhook_secret if row else None,
        profiles,
        source_kinds,
        stored_kind_secrets,
    )
    created = row is None
    if row is None:
        row = Source(name=name)
        session.add(row)
    row.hl7_profile = new.hl7_profile
    row.webhook_url = new.webhook_url
    if new.webhook_secret is not None:
        row.webhook_secret = new.webhook_secret
    row.hl7_host = new.hl7_host
    row.hl7_port = new.hl7_port
    row.hl7_senders = clean_senders(new.hl7_senders)
    row.tls = new.tls
    row.results = list(dict.fromkeys(new.results))
    row.events = list(dict.fromkeys(new.events))
    if row.kind != new.kind:
        row.kind_secrets, row.kind_state = None, {}
    _store_kind(row, new, source_kinds, secret_key)
    row.updated_at = utcnow()
    session.flush()
    shown = {k: v for k, v in asdict(new).items() if k not in ("webhook_secret", "kind_settings")}
    shown["kind_settings"] = {
        k: v for k, v in (row.kind_settings or {}).items() if k != SECRETS_SET
    }
    events.audit(session, actor, "source.put", "source", name, shown)
    return row, created


def get(session: Session, name: str) -> Source:
    row = session.get(Source, name)
    if row is None:
        raise NotFound(f"source {name!r} is not registered")
    return row


def list_all(session: Session) -> list[Source]:
    return list(session.scalars(select(Source).order_by(Source.name)))


def delete(session: Session, name: str, *, actor: str) -> None:
    session.delete(get(session, name))
    events.audit(session, actor, "source.delete", "source", name)


def public(
    row: Source, source_kinds: SourceKinds | None = None, settings: Settings | None = None
) -> dict[str, Any]:
    """The source as the API shows it: never a secret, only whether one is set.

    With ``settings``, a kind's ``public`` adds what the admin needs to see
    (e.g. the webhook URL to give the vendor) to ``status``."""
    out = _public_hl7(row)
    out["kind"] = row.kind or HL7
    kind = source_kinds.get(row.kind) if source_kinds and row.kind != HL7 else None
    if kind is not None:
        stored = dict(row.kind_settings or {})
        set_ = set(stored.pop(SECRETS_SET, []))
        out[kind.key] = stored | {f"{f}_set": f in set_ for f in sorted(kind.secret_fields)}
        out["status"] = dict(row.kind_state or {})
        if kind.public is not None and settings is not None:
            out["status"] |= dict(kind.public(row.name, stored, settings))
    return out


def _public_hl7(row: Source) -> dict[str, Any]:
    return {
        "name": row.name,
        "hl7_profile": row.hl7_profile,
        "webhook_url": row.webhook_url,
        "webhook_secret_set": bool(row.webhook_secret),
        "hl7_host": row.hl7_host,
        "hl7_port": row.hl7_port,
        "hl7_senders": list(row.hl7_senders or []),
        "tls": bool(row.tls),
        "results": list(row.results or []),
        "events": list(row.events or []),
        "created_at": row.created_at,
        "updated_at": row.updated_at,
    }


def hl7_profiles(mappings_root: Path) -> frozenset[str]:
    """Names of the HL7 profiles the HL7 door loads (``<mappings>/hl7/*.yaml``)."""
    own = mappings_root / "hl7"
    folder = own if own.is_dir() else default_mappings_dir() / "hl7"
    return frozenset(p.stem for p in folder.glob("*.yaml")) | {"default"}
