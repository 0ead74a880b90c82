"""An ezyVet imaging request, read into the hub's order shape: plain values in, plain values out.

ezyVet pushes the whole request whenever one is made, updated or disabled.
Its schema was not visible in any copy of the docs, so every field is read
through the source's ``request_fields`` (dotted paths, defaults in
config.py). Codes go through ``mappings/vendors/ezyvet.yaml`` and the hub's
own vocabularies; a code nobody knows is kept as ezyVet's text and listed in
``unknown`` for the source's status, never dropped. The accession is never
taken from ezyVet (its ids need not fit DICOM's 16 characters): the hub makes
one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, Literal

from adapters.codes import CodeLists
from adapters.ezyvet.config import Config
from hub.errors import FieldError, Invalid
from hub.mappings import MODALITIES, Mappings

Action = Literal["create", "update", "disable", "upsert"]
# What ezyVet's path is called in an error when the hub's own field is at fault.
_OURS_TO_THEIRS = {
    "placer_order_number": "request_id",
    "patient.id": "animal_id",
    "patient.name": "animal_name",
    "patient.species": "species_name",
    "patient.breed": "breed_name",
    "patient.birth_date": "date_of_birth",
    "patient.weight_kg": "weight_kg",
    "patient.microchip": "microchip",
    "owner": "contact_last_name",
    "owner.id": "contact_id",
    "owner.last_name": "contact_last_name",
    "owner.first_name": "contact_first_name",
    "owner.organization": "contact_business_name",
    "procedure": "modality_code",
    "procedure.code": "modality_code",
    "procedure.description": "modality_name",
    "referring_vet": "vet",
    "reason": "reason",
    "site": "separation_name",
    "scheduled_start": "requested_at",
    "notes": "notes",
}
_TRUE = {"true", "yes", "y", "1"}
_FALSE = {"false", "no", "n", "0"}


@dataclass(frozen=True)
class Request:
    """One push from ezyVet, understood."""

    request_id: str
    action: Action
    # The order in OrderIn's shape without ``source`` (None fields left out);
    # None when a disable carried too little to make one.
    order: dict[str, Any] | None
    unknown: list[str] = field(default_factory=list)


def read(body: Any, cfg: Config, codes: CodeLists, mappings: Mappings) -> Request:
    """Understand ``body`` or raise ``Invalid`` naming ezyVet's field paths at fault."""
    if not isinstance(body, dict):
        raise Invalid.one("body", "must be a JSON object")
    paths = cfg.request_fields
    reader = _Reader(body, paths)
    request_id = reader.text("request_id")
    if not request_id:
        raise Invalid.one(paths["request_id"], "is required: the diagnostic request's id")
    if len(request_id) > 64:
        raise Invalid.one(paths["request_id"], "must be at most 64 characters")
    action = _action(reader.text("action"), cfg, paths["action"])
    unknown: list[str] = []
    try:
        order = _order(reader, request_id, cfg, codes, mappings, unknown)
    except Invalid:
        if action != "disable":
            raise
        order = None  # a disable needs only the id
    return Request(request_id, action, order, unknown)


def their_field(ours: str, cfg: Config) -> str:
    """ezyVet's path for a field of the hub's order (for an error ezyVet can act on)."""
    name = _OURS_TO_THEIRS.get(ours)
    return cfg.request_fields.get(name, ours) if name else ours


def _action(value: str | None, cfg: Config, where: str) -> Action:
    if value is None:
        return "upsert"
    for action, words in cfg.actions.items():
        if value.casefold() in {w.casefold() for w in words}:
            return action  # type: ignore[return-value]  # keys checked by config.check
    known = ", ".join(w for words in cfg.actions.values() for w in words)
    raise Invalid.one(where, f"unknown action {value!r}; expected one of {known}")


def _order(
    r: _Reader,
    request_id: str,
    cfg: Config,
    codes: CodeLists,
    mappings: Mappings,
    unknown: list[str],
) -> dict[str, Any]:
    paths = cfg.request_fields
    errors: list[FieldError] = []
    for name in ("animal_id", "animal_name"):
        if not r.text(name):
            errors.append(FieldError(paths[name], "is required"))
    if not (r.text("contact_last_name") or r.text("contact_business_name")):
        errors.append(
            FieldError(
                paths["contact_last_name"],
                f"is required (or {paths['contact_business_name']})",
            )
        )
    modality_code = r.text("modality_code")
    if not modality_code:
        errors.append(FieldError(paths["modality_code"], "is required"))
    if errors:
        raise Invalid(errors)
    assert modality_code is not None
    sex, neutered = _sex(r, codes, unknown)
    order: dict[str, Any] = {
        "placer_order_number": request_id,
        "patient": {
            "id": r.text("animal_id"),
            "name": r.text("animal_name"),
            "species": _species(r, codes, mappings, unknown),
            "breed": _breed(r, mappings),
            "sex": sex,
            "neutered": neutered,
            "birth_date": r.day("date_of_birth"),
            "weight_kg": r.number("weight_kg"),
            "microchip": r.text("microchip"),
        },
        "owner": {
            "id": r.text("contact_id"),
            "last_name": r.text("contact_last_name"),
            "first_name": r.text("contact_first_name"),
            "organization": r.text("contact_business_name"),
        },
        **_modality(modality_code, r.text("modality_name"), cfg, codes, mappings, unknown),
        "scheduled_start": r.moment("requested_at"),
        "referring_vet": r.text("vet"),
        "reason": r.text("reason"),
        "notes": r.text("notes"),
        "site": _site(r, cfg),
    }
    return _without_none(order)


def _modality(
    code: str,
    label: str | None,
    cfg: Config,
    codes: CodeLists,
    mappings: Mappings,
    unknown: list[str],
) -> dict[str, Any]:
    """The order's procedure, modality and room for ezyVet's modality code, in trust
    order: the source's own map, a procedure code of ours, the vendor list, a DICOM term."""
    entry = cfg.modality_map.get(code)
    if entry is not None:
        proc = entry.get("procedure")
        return {
            "procedure": {"code": proc} if proc else {"description": label or code},
            "modality": entry.get("modality"),
            "station_ae_title": entry.get("station_ae_title"),
        }
    if mappings.procedures.get(code) is not None:
        return {"procedure": {"code": code}}
    hit = _lookup(codes, "modality", code)
    term = hit or code.strip().upper()
    if term in MODALITIES:
        return {"procedure": {"description": label or code}, "modality": term}
    unknown.append(f"modality {code!r}")
    return {"procedure": {"description": label or code}}


def _species(r: _Reader, codes: CodeLists, mappings: Mappings, unknown: list[str]) -> str | None:
    code, name = r.text("species_code"), r.text("species_name")
    if code and mappings.species.by_code(code):  # one of the codes we publish
        return code
    for value in (code, name):
        hit = _lookup(codes, "species", value) if value else None
        if hit:
            return hit
    text = name or code
    if text and not _known_species(mappings, text):
        unknown.append(f"species {text!r}")
    return text


def _known_species(mappings: Mappings, text: str) -> bool:
    """Whether the hub's vocabulary names ``text`` (resolve keeps unknown text as it is)."""
    found = mappings.species.resolve(text)
    return any(found is entry for entry in mappings.species)


def _breed(r: _Reader, mappings: Mappings) -> str | None:
    # The codes we publish are SNOMED CT breed codes; the worklist codes the breed
    # from its text, so the name is what the order keeps.
    return r.text("breed_name") or r.text("breed_code")


def _sex(r: _Reader, codes: CodeLists, unknown: list[str]) -> tuple[str | None, bool | None]:
    raw = r.text("sex")
    sex: str | None = None
    neutered: bool | None = None
    if raw:
        hit = _lookup(codes, "sex", raw)
        if hit is None and raw.casefold() in {"male", "female", "unknown"}:
            hit = raw.casefold()
        if hit is None:
            unknown.append(f"sex {raw!r}")
        else:
            sex, _, flag = hit.partition("/")
            neutered = True if flag == "neutered" else None
    desexed = r.flag("desexed")
    if desexed is not None:
        neutered = desexed
    return sex, neutered


def _site(r: _Reader, cfg: Config) -> str | None:
    sep_id = r.text("separation_id")
    if sep_id and sep_id in cfg.sites:
        return cfg.sites[sep_id]
    return r.text("separation_name") or sep_id


def _lookup(codes: CodeLists, name: str, value: str | None) -> str | None:
    """The list's value for ``value``, ignoring case and surrounding spaces."""
    if not value:
        return None
    table = codes.lists.get(name, {})
    if value in table:
        return table[value]
    folded = value.strip().casefold()
    for key, hit in table.items():
        if key.strip().casefold() == folded:
            return hit
    return None


def _without_none(value: Any) -> Any:
    if isinstance(value, dict):
        kept = {k: _without_none(v) for k, v in value.items() if v is not None}
        return {k: v for k, v in kept.items() if v != {}}
    return value


class _Reader:
    """Reads the configured dotted paths of one body; a wrong type is an ``Invalid``."""

    def __init__(self, body: dict[str, Any], paths: dict[str, str]) -> None:
        self.body = body
        self.paths = paths

    def raw(self, name: str) -> Any:
        value: Any = self.body
        for part in self.paths[name].split("."):
            if not isinstance(value, dict):
                return None
            value = value.get(part)
        return value

    def text(self, name: str) -> str | None:
        value = self.raw(name)
        if value is None or value == "":
            return None
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise Invalid.one(self.paths[name], "must be text or a number")
        text = str(value).strip()
        if "\x00" in text:
            raise Invalid.one(self.paths[name], "must not contain NUL characters")
        return text or None

    def number(self, name: str) -> float | None:
        value = self.raw(name)
        if value is None or value == "":
            return None
        try:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        except (TypeError, ValueError):
            raise Invalid.one(self.paths[name], "must be a number") from None

    def flag(self, name: str) -> bool | None:
        value = self.raw(name)
        if value is None or value == "":
            return None
        if isinstance(value, bool):
            return value
        text = str(value).strip().casefold()
        if text in _TRUE or text in _FALSE:
            return text in _TRUE
        raise Invalid.one(self.paths[name], "must be true or false")

    def moment(self, name: str) -> str | None:
        """An ISO time; ezyVet's v2 style epoch seconds become UTC."""
        value = self.raw(name)
        if value is None or value == "":
            return None
        try:
            if isinstance(value, int | float) and not isinstance(value, bool):
                return datetime.fromtimestamp(value, UTC).isoformat()
            if isinstance(value, str) and value.strip().isdigit():
                return datetime.fromtimestamp(int(value), UTC).isoformat()
            if isinstance(value, str):
                return datetime.fromisoformat(value.strip().replace("Z", "+00:00")).isoformat()
        except (ValueError, OverflowError, OSError):
            pass
        raise Invalid.one(self.paths[name], "must be an ISO 8601 time or epoch seconds")

    def day(self, name: str) -> str | None:
        value = self.raw(name)
        if value is None or value == "":
            return None
        try:
            if isinstance(value, int | float) and not isinstance(value, bool):
                return datetime.fromtimestamp(value, UTC).date().isoformat()
            if isinstance(value, str):
                return date.fromisoformat(value.strip()[:10]).isoformat()
        except (ValueError, OverflowError, OSError):
            pass
        raise Invalid.one(self.paths[name], "must be a date (YYYY-MM-DD) or epoch seconds")
