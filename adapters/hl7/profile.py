"""Per-sender field profiles (``mappings/hl7/*.yaml``): which HL7 field carries what.

Practice systems disagree on where the animal, the owner or the species go;
a profile names, for each order attribute, the HL7 positions to read in
order of preference (the first non-empty wins). A sender is recognised by
MSH-3 (sending application) and optionally MSH-4 (facility) and is tied to
a ``source``, the namespace of its placer numbers and patient ids. Senders
no profile claims get ``default.yaml`` with ``source`` = MSH-3. Files are
checked when the door starts; a bad one stops the hub with the file named.
See docs/hl7-profiles.md.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from hub.mappings import MappingError, _StrictLoader

DEFAULT = "default"

# Order attributes a profile can fill (dotted as in the REST order JSON), plus helpers.
TARGETS: frozenset[str] = frozenset(
    {
        "placer_order_number",
        "accession_number",
        "study_instance_uid",
        "requested_procedure_id",
        "scheduled_step_id",
        "patient.id",
        "patient.name",
        "patient.species",
        "patient.breed",
        "patient.sex",
        "patient.neutered",
        "patient.birth_date",
        "patient.weight_kg",
        "patient.weight_unit",
        "owner.id",
        "owner.last_name",
        "owner.first_name",
        "owner.organization",
        "owner.last_name_fallback",
        "procedure.code",
        "procedure.description",
        "modality",
        "station_ae_title",
        "scheduled_start",
        "referring_vet",
        "site",
        "priority",
        "notes",
        "merge.prior_patient_id",
    }
)

_PATH = re.compile(
    r"(?P<seg>[A-Z][A-Z0-9]{2})"
    r"(?:\((?P<cf>\d+)(?:\.(?P<cc>\d+))?=(?P<cv>[^)]*)\))?"
    r"-(?P<f>\d+)(?:\[(?P<rep>\d+)\])?(?:\.(?P<c>\d+))?(?:\.(?P<s>\d+))?"
    r"(?:\s+(?P<cond>if uid|unless uid))?"
)
# What "a UID" means for a position that may hold one or something else (ZDS-1):
# digits in two or more dotted components. Whether it is a valid UID is checked later.
_UID_SHAPED = re.compile(r"\d+(\.\d+)+")


def looks_like_uid(value: str) -> bool:
    return bool(_UID_SHAPED.fullmatch(value.strip()))


@dataclass(frozen=True)
class FieldPath:
    """``SEG[(F.C=VALUE)]-F[[REP]][.C[.S]][ if uid| unless uid]``, e.g. ``PID-5.2``,
    ``NK1(3.1=OWN)-2.1``, ``ZDS-1.1 if uid``.

    The condition serves fields whose meaning depends on the value: IHE puts the
    Study Instance UID in ZDS-1, some senders put the accession number there.
    """

    text: str
    segment: str
    field: int
    component: int = 0
    subcomponent: int = 0
    repetition: int = 1
    when_field: int = 0
    when_component: int = 0
    when_value: str = ""
    condition: str = ""  # "", "if uid" or "unless uid"

    @classmethod
    def parse(cls, text: str) -> FieldPath:
        m = _PATH.fullmatch(text.strip())
        if not m:
            raise ValueError(
                f"{text!r} is not an HL7 position "
                "(e.g. PID-5.2, OBR-4, NK1(3.1=OWN)-2.1, ZDS-1.1 if uid)"
            )
        g = m.groupdict()
        return cls(
            text=text.strip(),
            segment=g["seg"],
            field=int(g["f"]),
            component=int(g["c"] or 0),
            subcomponent=int(g["s"] or 0),
            repetition=int(g["rep"] or 1),
            when_field=int(g["cf"] or 0),
            when_component=int(g["cc"] or 0),
            when_value=g["cv"] or "",
            condition=g["cond"] or "",
        )

    def accepts(self, value: str) -> bool:
        """Whether a value read here counts, given the position's condition."""
        if not self.condition:
            return True
        return looks_like_uid(value) == (self.condition == "if uid")

    @property
    def location(self) -> str:
        """ERR-2 style location (ERL): ``PID^1^5^1^2``."""
        parts = [self.segment, "1", str(self.field), str(self.repetition)]
        if self.component:
            parts.append(str(self.component))
        return "^".join(parts)


class _Sender(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    application: str = Field(min_length=1, max_length=227)
    facility: str | None = None
    source: str = Field(min_length=1, max_length=64, pattern=r"^[^\\\x00-\x1f]+$")


class _ProfileFile(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    name: str = Field(min_length=1, max_length=64)
    description: str = ""
    senders: list[_Sender] = Field(default_factory=list)
    charset: str = ""
    fields: dict[str, list[str] | str]
    sex_codes: dict[str, tuple[str, bool | None]] = Field(default_factory=dict)
    priority_codes: dict[str, str] = Field(default_factory=dict)
    modality_codes: dict[str, str] = Field(default_factory=dict)
    neutered_codes: dict[str, bool] = Field(default_factory=dict)

    @field_validator("fields")
    @classmethod
    def _known_targets(cls, value: dict[str, list[str] | str]) -> dict[str, list[str] | str]:
        unknown = sorted(set(value) - TARGETS)
        if unknown:
            raise ValueError(f"unknown field(s) {unknown}; known: {sorted(TARGETS)}")
        for paths in value.values():
            for p in [paths] if isinstance(paths, str) else paths:
                FieldPath.parse(p)
        return value

    @field_validator("charset")
    @classmethod
    def _charset(cls, value: str) -> str:
        from adapters.hl7.parse import CHARSETS

        if value and value.upper() not in CHARSETS:
            raise ValueError(f"unknown charset {value!r}; known: {sorted(CHARSETS)}")
        return value

    @field_validator("sex_codes")
    @classmethod
    def _sexes(cls, value: dict[str, tuple[str, bool | None]]) -> dict:
        for code, (sex, _) in value.items():
            if sex not in ("male", "female", "unknown"):
                raise ValueError(f"sex_codes[{code!r}]: {sex!r} is not male/female/unknown")
        return value

    @field_validator("priority_codes")
    @classmethod
    def _priorities(cls, value: dict[str, str]) -> dict[str, str]:
        for code, prio in value.items():
            if prio not in ("routine", "stat"):
                raise ValueError(f"priority_codes[{code!r}]: {prio!r} is not routine/stat")
        return value


DEFAULT_SEX = {
    "M": ("male", None),
    "F": ("female", None),
    "O": ("unknown", None),
    "U": ("unknown", None),
    "A": ("unknown", None),
    "N": ("unknown", None),
    "MN": ("male", True),
    "MC": ("male", True),
    "FS": ("female", True),
    "MI": ("male", False),
    "FI": ("female", False),
}
DEFAULT_PRIORITY = {"S": "stat", "A": "stat", "STAT": "stat", "R": "routine", "T": "routine"}
DEFAULT_NEUTERED = {
    "Y": True,
    "N": False,
    "ALTERED": True,
    "UNALTERED": False,
    "TRUE": True,
    "FALSE": False,
}


@dataclass(frozen=True)
class Profile:
    name: str
    fields: dict[str, tuple[FieldPath, ...]]
    senders: tuple[tuple[str, str | None, str], ...] = ()  # (application, facility, source)
    charset: str = ""
    sex_codes: dict[str, tuple[str, bool | None]] = field(default_factory=dict)
    priority_codes: dict[str, str] = field(default_factory=dict)
    modality_codes: dict[str, str] = field(default_factory=dict)
    neutered_codes: dict[str, bool] = field(default_factory=dict)
    description: str = ""

    def paths(self, target: str) -> tuple[FieldPath, ...]:
        return self.fields.get(target, ())


@dataclass(frozen=True)
class SenderMatch:
    profile: Profile
    source: str


class Profiles:
    """All profiles, and which one a sender gets."""

    def __init__(self, profiles: list[Profile]) -> None:
        self.by_name = {p.name: p for p in profiles}
        if DEFAULT not in self.by_name:
            raise MappingError(f"HL7 profiles: no {DEFAULT!r} profile (mappings/hl7/default.yaml)")
        self.default = self.by_name[DEFAULT]
        self._exact: dict[tuple[str, str], tuple[Profile, str]] = {}
        self._app: dict[str, tuple[Profile, str]] = {}
        for p in profiles:
            for app, fac, source in p.senders:
                key = app.casefold()
                if fac:
                    self._exact[(key, fac.casefold())] = (p, source)
                else:
                    self._app[key] = (p, source)

    def match(
        self,
        application: str,
        facility: str = "",
        registered: Mapping[str, str] | None = None,
    ) -> SenderMatch:
        """The profile and source for MSH-3/MSH-4.

        A sender listed in a profile file wins (facility-specific entries
        first); then a source registered through the API whose name is MSH-3
        gets the profile named in its ``hl7_profile``; anyone else gets the
        default profile with source = MSH-3.
        """
        app = application.strip().casefold()
        found = self._exact.get((app, facility.strip().casefold())) or self._app.get(app)
        if found:
            return SenderMatch(found[0], found[1])
        name = application.strip()[:64].replace("\\", "")
        if registered and name in registered:
            return SenderMatch(self.by_name.get(registered[name], self.default), name)
        return SenderMatch(self.default, name or "default")


def load_profile(path: Path) -> Profile:
    try:
        with path.open(encoding="utf-8") as stream:
            data = yaml.load(stream, Loader=_StrictLoader)
    except OSError as exc:
        raise MappingError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise MappingError(f"{path}: malformed YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise MappingError(f"{path}: expected a mapping with 'name' and 'fields' keys")
    try:
        spec = _ProfileFile.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise MappingError(f"{path}: {problems}") from exc
    fields = {
        target: tuple(FieldPath.parse(p) for p in ([paths] if isinstance(paths, str) else paths))
        for target, paths in spec.fields.items()
    }
    return Profile(
        name=spec.name,
        description=spec.description,
        fields=fields,
        senders=tuple((s.application, s.facility, s.source) for s in spec.senders),
        charset=spec.charset,
        sex_codes={**DEFAULT_SEX, **{k.upper(): v for k, v in spec.sex_codes.items()}},
        priority_codes={
            **DEFAULT_PRIORITY,
            **{k.upper(): v for k, v in spec.priority_codes.items()},
        },
        modality_codes={k.upper(): v.upper() for k, v in spec.modality_codes.items()},
        neutered_codes={
            **DEFAULT_NEUTERED,
            **{k.upper(): v for k, v in spec.neutered_codes.items()},
        },
    )


def load_profiles(directory: Path) -> Profiles:
    """Every ``*.yaml`` in ``directory``; names must be unique and a sender claimed once."""
    if not directory.is_dir():
        raise MappingError(f"{directory}: HL7 profile directory does not exist")
    profiles: list[Profile] = []
    seen: dict[str, Path] = {}
    claimed: dict[tuple[str, str], str] = {}
    for path in sorted(directory.glob("*.yaml")):
        prof = load_profile(path)
        if prof.name in seen:
            raise MappingError(
                f"{path}: profile name {prof.name!r} is also used by {seen[prof.name]}"
            )
        seen[prof.name] = path
        for app, fac, _ in prof.senders:
            key = (app.casefold(), (fac or "").casefold())
            if key in claimed:
                raise MappingError(
                    f"{path}: sender {app}/{fac or '*'} is already claimed "
                    f"by profile {claimed[key]!r}"
                )
            claimed[key] = prof.name
        profiles.append(prof)
    return Profiles(profiles)
