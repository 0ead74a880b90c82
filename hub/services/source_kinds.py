"""The kinds of practice system, each declared once by the adapter that speaks to it.

A source of kind ``hl7`` (the default) sends orders by HL7 v2 or REST and gets
results by the delivery kinds it lists. Any other kind is a vendor adapter in
``adapters/`` (an upstream worklist it polls, a vendor API it pulls from or
hosts the partner side of). The core stores such a source's settings under
the kind's own key in the API body (``"upstream": {...}``), seals the fields
the kind marks secret, and leaves everything else to the adapter; a new
vendor is therefore a new adapter module declaring a ``SourceKind`` and adding
it to the registry in hub/serve.py, with no change here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hub.errors import FieldError

if TYPE_CHECKING:
    from hub.config import Settings

HL7 = "hl7"
# Source.kind is a VARCHAR(16).
MAX_NAME = 16


def _no_errors(settings: Mapping[str, Any]) -> list[FieldError]:
    return []


@dataclass(frozen=True)
class SourceKind:
    """What an adapter tells the core about the sources it serves.

    ``check`` receives the settings object as sent (secrets included, a kept
    secret filled in from the stored one) and returns every fault, each
    ``FieldError`` naming ``<key>.<field>``; it may not touch the database.
    ``public`` adds to what GET shows as the source's ``status``, from its
    name, its stored (secret-free) settings and the hub's settings: e.g. the
    URL the vendor must be given, which depends on ``public_url``. It may not
    touch the database.
    """

    name: str
    key: str
    secret_fields: frozenset[str] = frozenset()
    check: Callable[[Mapping[str, Any]], list[FieldError]] = _no_errors
    # Defaults merged under what the admin sends, so GET shows every setting.
    defaults: Mapping[str, Any] = field(default_factory=dict)
    public: Callable[[str, Mapping[str, Any], Settings], Mapping[str, Any]] | None = None


class SourceKinds:
    """The non-HL7 source kinds this hub knows, by name (built at start-up)."""

    def __init__(self, kinds: Iterable[SourceKind] = ()) -> None:
        self._kinds: dict[str, SourceKind] = {}
        for kind in kinds:
            self.add(kind)

    def add(self, kind: SourceKind) -> None:
        if not kind.name or len(kind.name) > MAX_NAME or kind.name == HL7:
            raise ValueError(f"source kind name {kind.name!r} must be 1-{MAX_NAME} chars, not hl7")
        if kind.name in self._kinds:
            raise ValueError(f"source kind {kind.name!r} is registered twice")
        if any(k.key == kind.key for k in self._kinds.values()):
            raise ValueError(f"source kind key {kind.key!r} is used twice")
        self._kinds[kind.name] = kind

    def get(self, name: str) -> SourceKind | None:
        return self._kinds.get(name)

    def names(self) -> tuple[str, ...]:
        return (HL7, *self._kinds)

    def keys(self) -> frozenset[str]:
        """Every kind's settings key: the extra fields a source body may carry."""
        return frozenset(k.key for k in self._kinds.values())

    def __iter__(self) -> Iterator[SourceKind]:
        return iter(self._kinds.values())
