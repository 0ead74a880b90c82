"""A vendor source (provet, ezyvet, upstream-mwl...) as the Devices page shows it.

Adapters record what they last did in ``status`` as they see fit (times as
ISO text, small objects, lists of codes); this turns it, and the kind's
settings, into labelled lines the clinic's IT person can read: times in the
hub's zone like the rest of the console, errors marked, secrets only as
"set" / "not set". Any key an adapter adds later is shown too, labelled
from its name, so a new vendor needs no change here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from hub.console.web import local_time
from hub.services.source_kinds import SourceKind

# Shown first, in this order; the rest of a status follows by name.
FIRST = ("last_result", "last_error", "items", "last_poll_at", "last_ok_at", "failures_in_a_row")
# Keys whose value (when there is one) is a fault the admin must see.
FAULTS = frozenset({"last_error", "last_refused"})
# What the status column of the list keeps: the outcome, the count, the errors.
SUMMARY = frozenset({"last_result", "items"}) | FAULTS
# Said by the page itself (copyable), not as a status line.
WEBHOOK = "webhook_url"


@dataclass(frozen=True)
class Line:
    label: str
    text: str
    fault: bool = False
    secret: bool = False  # a secret setting: text is only "set" / "not set"


@dataclass(frozen=True)
class VendorView:
    """What the list and the source's page show of a vendor source."""

    kind: str
    status: list[Line]
    summary: list[Line]  # the list's status column
    settings: list[Line]  # admin only: empty for other roles
    webhook_url: str | None  # the URL to give the vendor (admin only)
    webhook_missing: bool  # the kind has one, but without VETHUB_SECRET_KEY no URL


def describe(
    public: dict[str, Any], kind: SourceKind, tz: ZoneInfo | None, admin: bool
) -> VendorView:
    """``public`` is ``sources.public(row, kinds[, settings])``: the settings object
    under the kind's key, ``status`` with the kind's additions when settings were given.
    Not ``admin``: no settings and no webhook URL."""
    state = dict(public.get("status") or {})
    webhook = state.pop(WEBHOOK, None)
    keyed = [(k, _line(k, state[k], tz)) for k in _ordered(state) if _shown(state[k])]
    summary = [
        line
        for key, line in keyed
        if key in SUMMARY or (key.startswith("last_") and key.endswith("_at")) or line.fault
    ]
    return VendorView(
        kind=kind.name,
        status=[line for _, line in keyed],
        summary=summary,
        settings=settings_lines(public.get(kind.key) or {}, kind) if admin else [],
        webhook_url=webhook if admin and isinstance(webhook, str) else None,
        webhook_missing=admin and WEBHOOK in public.get("status", {}) and not webhook,
    )


def settings_lines(stored: dict[str, Any], kind: SourceKind) -> list[Line]:
    """Each setting by name; a secret field only as set / not set."""
    lines = []
    for name in sorted(stored):
        base = name.removesuffix("_set")
        if name != base and base in kind.secret_fields:
            lines.append(Line(base, "set" if stored[name] else "not set", secret=True))
        else:
            lines.append(Line(name, _plain(stored[name])))
    return lines


def editable(stored: dict[str, Any], kind: SourceKind) -> str:
    """The settings object without its secret flags, as the edit box shows it."""
    flags = {f"{f}_set" for f in kind.secret_fields}
    return json.dumps({k: v for k, v in stored.items() if k not in flags}, indent=2, sort_keys=True)


def _ordered(state: dict[str, Any]) -> list[str]:
    return [k for k in FIRST if k in state] + sorted(k for k in state if k not in FIRST)


def _shown(value: Any) -> bool:
    return value is not None and value != "" and value != [] and value != {}


def _line(key: str, value: Any, tz: ZoneInfo | None) -> Line:
    fault = key in FAULTS or (key == "last_result" and value == "failed")
    return Line(_label(key), _text(key, value, tz), fault)


def _label(key: str) -> str:
    words = key.replace("_", " ")
    return words[:1].upper() + words[1:]


def _text(key: str, value: Any, tz: ZoneInfo | None) -> str:
    """A status value as read: a time in the hub's zone, an object as ``name: value; ...``."""
    if isinstance(value, str) and (key == "at" or key.endswith("_at")):
        return _time(value, tz)
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict):
        inner = sorted(value, key=lambda k: (k != "at", k))  # when first
        return "; ".join(f"{k.replace('_', ' ')}: {_text(k, value[k], tz)}" for k in inner)
    if isinstance(value, list):
        return ", ".join(_text("", v, tz) for v in value)
    return str(value)


def _time(value: str, tz: ZoneInfo | None) -> str:
    try:
        return local_time(datetime.fromisoformat(value), tz)
    except ValueError:
        return value


def _plain(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True)
