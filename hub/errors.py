"""The few domain errors every edge maps once: HTTP status, HL7 ACK code, DICOM status."""

from __future__ import annotations

from dataclasses import dataclass, field


class HubError(Exception):
    """Base of the domain errors; ``str(err)`` is a sentence a person can act on."""


class NotFound(HubError):
    pass


class Conflict(HubError):
    """A unique value is taken, or a state change is not allowed."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


@dataclass
class FieldError:
    field: str
    message: str


@dataclass
class Invalid(HubError):
    """Bad input; ``errors`` names each field at fault."""

    errors: list[FieldError] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__(self.sentence())

    def sentence(self) -> str:
        return "; ".join(f"{e.field}: {e.message}" for e in self.errors) or "invalid input"

    @classmethod
    def one(cls, field: str, message: str) -> Invalid:
        return cls([FieldError(field, message)])
