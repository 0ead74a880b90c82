"""The kinds of delivery, each declared once by the adapter that sends it.

A kind is a plain value: the name stored in ``Delivery.kind`` and listed in a
source's ``results``, the events it can express, whether it waits for a
study, which source settings it cannot do without, and how to build the
callable that sends one claimed delivery. Dispatch, claim and settle treat
every kind alike, so the core never learns a wire format: adapters declare
kinds, the composition root (hub/serve.py) puts them in a ``Registry``, and
the registry is what the worker, the sources API and the deliveries API ask.

Adding a kind (``dicom-forward``, a vendor callback) therefore means writing
its adapter and adding it to the registry in hub/serve.py; nothing here.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, fields
from typing import Any

from hub.config import Settings
from hub.db import Database
from hub.errors import FieldError
from hub.models import Source
from hub.services.sources import EVENTS, SourceSettings, opened_settings

# Delivery.kind is a VARCHAR(16): a longer name would fail on the first insert.
MAX_NAME = 16


class DeliveryError(Exception):
    """A send did not succeed; the message says what the receiver did (or did not) answer.

    ``retry_after`` (seconds): the receiver said when to come back (HTTP 429 or
    503 with ``Retry-After``); the next attempt waits that long instead of the
    policy's backoff, so a rate-limited vendor is not asked again too early.
    """

    def __init__(self, message: str = "", *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class Target:
    """Where a source is reached; a copy, so no session is needed while sending."""

    name: str
    hl7_profile: str
    webhook_url: str | None
    webhook_secret: str | None
    hl7_host: str | None
    hl7_port: int | None
    # HL7 to this source runs inside TLS (webhooks follow their URL's scheme).
    tls: bool = False
    # The (application, facility) it sends HL7 from (its hl7_senders): the MSH-5/6 of
    # results back to it.
    hl7_senders: tuple[tuple[str, str], ...] = ()
    # A vendor source's kind, settings and sealed secrets: its adapter's sender
    # opens them with ``config`` and the key in ``SendOptions.settings``.
    kind: str = "hl7"
    kind_settings: tuple[tuple[str, Any], ...] = ()
    kind_secrets: str | None = None

    def config(self, secret_key: str | None) -> dict[str, Any]:
        """The vendor settings with their secrets opened (raises ``SealError``)."""
        return opened_settings(dict(self.kind_settings), self.kind_secrets, secret_key)

    @classmethod
    def node(cls, ae_title: str) -> Target:
        """A registered DICOM node: its sender looks up host, port and TLS itself."""
        return cls(ae_title, "", None, None, None, None)

    @classmethod
    def of(cls, src: Source) -> Target:
        return cls(
            name=src.name,
            hl7_profile=src.hl7_profile,
            webhook_url=src.webhook_url,
            webhook_secret=src.webhook_secret,
            hl7_host=src.hl7_host,
            hl7_port=src.hl7_port,
            tls=src.tls,
            hl7_senders=tuple(
                (e.get("application") or "", e.get("facility") or "")
                for e in src.hl7_senders or []
                if e.get("application")
            ),
            kind=src.kind or "hl7",
            kind_settings=tuple((src.kind_settings or {}).items()),
            kind_secrets=src.kind_secrets,
        )


@dataclass(frozen=True)
class Claim:
    """One leased delivery, ready to send."""

    id: int
    uuid: str
    kind: str
    event_kind: str
    attempts: int
    payload: dict[str, Any]
    target: Target | None


@dataclass(frozen=True)
class SendOptions:
    """What every sender is built with, once per worker: the send timeout in
    seconds and the context outgoing TLS verifies receivers with
    (``hub.tls.client_context``: public CAs plus ``VETHUB_TLS_EXTRA_CA``)."""

    timeout: float
    tls: ssl.SSLContext
    # For kinds that read the archive and note per-item progress (dicom-forward).
    db: Database | None = None
    settings: Settings | None = None


# Sends one claimed delivery; returns when the receiver accepted it, raises
# ``DeliveryError`` (retried with backoff) when it did not. Called from several
# threads at once.
Sender = Callable[[Target, Claim], None]


@dataclass(frozen=True)
class DeliveryKind:
    """What a sender tells the core about itself.

    ``sender`` is called once per worker with its ``SendOptions``, so a kind
    may keep a connection pool for the worker's life. ``requires``
    names ``SourceSettings`` fields a source must set before it may subscribe
    to this kind: a missing one is refused at registration, not discovered on
    the first send.
    """

    name: str
    events: frozenset[str]
    sender: Callable[[SendOptions], Sender]
    needs_study: bool = False
    requires: tuple[str, ...] = ()
    # Sends to a registered node (``Delivery.source`` is its AE title), not to a
    # practice system: no source subscribes to it, routes and sends make it.
    to_node: bool = False
    # Only sources of this kind may list it in ``results`` (a vendor's callback);
    # None: any source.
    source_kind: str | None = None


class Registry:
    """The kinds this hub can deliver, by name.

    Built at start-up, before the worker: a worker makes its senders when it
    is created, so a kind added later would have none (its deliveries fail
    visibly with "no sender").
    """

    def __init__(self, kinds: Iterable[DeliveryKind] = ()) -> None:
        self._kinds: dict[str, DeliveryKind] = {}
        for kind in kinds:
            self.add(kind)

    def add(self, kind: DeliveryKind) -> None:
        """Register ``kind``; a declaration the core could not honour fails here, at start."""
        if not kind.name or len(kind.name) > MAX_NAME:
            raise ValueError(f"delivery kind name {kind.name!r} must be 1-{MAX_NAME} characters")
        if kind.name in self._kinds:
            raise ValueError(f"delivery kind {kind.name!r} is registered twice")
        unknown = kind.events - set(EVENTS)
        if unknown:
            raise ValueError(f"delivery kind {kind.name!r}: unknown events {sorted(unknown)}")
        settable = {f.name for f in fields(SourceSettings)}
        missing = [name for name in kind.requires if name not in settable]
        if missing:
            raise ValueError(f"delivery kind {kind.name!r}: no source setting {missing}")
        self._kinds[kind.name] = kind

    def names(self) -> tuple[str, ...]:
        return tuple(self._kinds)

    def __iter__(self) -> Iterator[DeliveryKind]:
        return iter(self._kinds.values())

    def __contains__(self, name: object) -> bool:
        return name in self._kinds

    def subscribed(self, src: Source, event_kind: str) -> list[DeliveryKind]:
        """The kinds ``src`` receives for ``event_kind``, in the order the source lists them."""
        if event_kind not in (src.events or []):
            return []
        out = []
        for name in src.results or []:
            kind = self._kinds.get(name)
            if kind is not None and event_kind in kind.events:
                out.append(kind)
        return out

    def check(self, settings: SourceSettings) -> list[FieldError]:
        """Why ``settings`` cannot be stored: an unknown kind in ``results``, or a
        setting a chosen kind requires left empty (once per field, naming the kinds)."""
        errors: list[FieldError] = []
        # A kind that sends to a registered node (dicom-forward) is routed, not
        # subscribed; one with no events is an adapter's own job (provet-pull).
        subscribable = {n: k for n, k in self._kinds.items() if not k.to_node and k.events}
        offered = [n for n, k in subscribable.items() if k.source_kind in (None, settings.kind)]
        unknown = [name for name in settings.results if name not in subscribable]
        for name in unknown:
            errors.append(
                FieldError(
                    "results",
                    f"unknown result kind {name!r}; use {', '.join(offered)}",
                )
            )
        for name in settings.results:
            kind = self._kinds.get(name)
            if kind is not None and kind.source_kind not in (None, settings.kind):
                errors.append(
                    FieldError(
                        "results",
                        f"result kind {name!r} is for sources of kind {kind.source_kind!r}",
                    )
                )
        wanted_by: dict[str, list[str]] = {}
        for name in dict.fromkeys(settings.results):
            kind = self._kinds.get(name)
            for field_name in kind.requires if kind else ():
                wanted_by.setdefault(field_name, []).append(name)
        for field_name, names in wanted_by.items():
            if not getattr(settings, field_name):
                plural = "result" if len(names) == 1 else "results"
                quoted = " and ".join(repr(n) for n in names)
                errors.append(FieldError(field_name, f"is required for the {quoted} {plural}"))
        return errors
