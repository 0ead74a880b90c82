"""Provet's objects -> the hub's order request (pims.md §4 "Provet Cloud" table).

Codes go through ``mappings/vendors/provet.yaml``; one the file does not know
is kept as Provet's text (species, sex left unknown, modality left out with
its name in the procedure) and listed in ``unknown`` for the source's status.
Free text is cleaned to what the DICOM worklist can carry rather than refused:
the clinic cannot change how Provet spells things.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from adapters.codes import CodeLists
from adapters.provet.config import field_names
from adapters.provet.fetch import Fetched
from hub.mappings import MODALITIES

_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
_PN = re.compile(r"[\^=\\]")
_SEXES = {"female", "male", "unknown"}


@dataclass(frozen=True)
class Mapped:
    request: dict[str, Any]  # an OrderIn body
    unknown: list[str]  # codes kept as text, for the source's status


def order_request(got: Fetched, source: str, codes: CodeLists, cfg: Mapping[str, Any]) -> Mapped:
    unknown: list[str] = []
    p, c = got.patient, got.client or {}
    species_label = _label(p.get("species"))
    species = codes.translate("species", species_label, species_label)
    if species_label and not species.known:
        unknown.append(f"species {species_label!r}")
    gender_label = _label(p.get("gender"))
    sex = codes.translate("gender", gender_label, gender_label)
    sex_value, neutered = _sex(sex.value if sex.known else None)
    if gender_label and not sex.known:
        unknown.append(f"gender {gender_label!r}")
    modality_name = _text(_first(got.modality, "name", "code"), 64)
    modality = None
    if got.modality is not None:
        hit = codes.translate("modality", _first(got.modality, "code", "name"), modality_name)
        if hit.known and (hit.value or "").upper() in MODALITIES:
            modality = (hit.value or "").upper()
        else:
            unknown.append(f"modality {modality_name!r}")
    areas = [a for a in (_first(t, "name", "code") for t in got.target_areas) if a]
    description = _text(", ".join(areas) or modality_name or "Diagnostic imaging", 64)
    names = field_names(cfg)
    remarks = (got.referral or {}).get(names["referral_remarks"])
    start = (got.appointment or {}).get(names["appointment_start"])
    breed = _label(p.get("breed"))
    body: dict[str, Any] = {
        "source": source,
        "placer_order_number": got.worklist_id,
        "patient": {
            "id": _text(_id(p), 64),
            "name": _name(p.get("name")) or "Unnamed",
            "species": _text(species.value, 64),
            "breed": _text(breed, 64),
            "sex": sex_value,
            "neutered": neutered,
            "birth_date": _date(p.get("date_of_birth")),
            "weight_kg": _weight(p.get("weight")),
        },
        "owner": {
            "id": _text(_id(c), 64) if c else None,
            "last_name": _name(c.get("lastname")),
            "first_name": _name(c.get("firstname")),
            "organization": _name(c.get("organization_name")),
        },
        "procedure": {"description": description},
        "modality": modality,
        "scheduled_start": _datetime(start),
        "referring_vet": _name(_person(got.supervising_vet)),
        "reason": _text((got.consultation or {}).get("complaint"), 64),
        "site": _text(_first(got.department, "name"), 64),
        "notes": _text(remarks, 1024, keep_lines=True),
    }
    return Mapped(body, unknown)


def _label(value: Any) -> str | None:
    """Provet writes codes and reads labels; its "None" breed means none."""
    if value is None or isinstance(value, dict | list):
        return None
    text = str(value).strip()
    return None if text in ("", "None") else text


def _sex(value: str | None) -> tuple[str | None, bool | None]:
    """``female``, ``male``, ``unknown``, optionally ``/neutered`` or ``/intact``."""
    if not value:
        return None, None
    sex, _, state = value.partition("/")
    neutered = {"neutered": True, "intact": False}.get(state.strip().lower())
    sex = sex.strip().lower()
    return (sex if sex in _SEXES else None), neutered


def _first(obj: Mapping[str, Any] | None, *keys: str) -> str | None:
    for key in keys:
        value = (obj or {}).get(key)
        if value not in (None, ""):
            return str(value)
    return None


def _person(user: Mapping[str, Any] | None) -> str | None:
    if not user:
        return None
    full = _first(user, "full_name", "name")
    if full:
        return full
    parts = [_first(user, "first_name", "firstname"), _first(user, "last_name", "lastname")]
    return " ".join(p for p in parts if p) or None


def _id(obj: Mapping[str, Any]) -> str | None:
    if obj.get("id") is not None:
        return str(obj["id"])
    url = str(obj.get("url") or "").rstrip("/")
    return url.rsplit("/", 1)[-1] or None if url else None


def _text(value: Any, limit: int, keep_lines: bool = False) -> str | None:
    if value is None:
        return None
    text = str(value).replace("\\", "/")
    # Notes keep their line breaks (never NUL); other text becomes one line.
    text = text.replace("\x00", "") if keep_lines else " ".join(_CONTROL.sub(" ", text).split())
    return text[:limit].strip() or None


def _name(value: Any) -> str | None:
    text = _text(value, 64)
    return _PN.sub(" ", text).strip() or None if text else None


def _date(value: Any) -> str | None:
    try:
        return date.fromisoformat(str(value)[:10]).isoformat() if value else None
    except ValueError:
        return None


def _datetime(value: Any) -> str | None:
    try:
        return datetime.fromisoformat(str(value)).isoformat() if value else None
    except ValueError:
        return None


def _weight(value: Any) -> float | None:
    try:
        kg = float(value)
    except (TypeError, ValueError):
        return None
    return kg if 0 < kg <= 20000 else None
