"""Per-sender field profiles (``mappings/hl7/*.yaml``): which HL7 field carries what.

Practice systems disagree on where the animal, the owner or the species go;
a profile names, for each order attribute, the HL7 positions to read in
order of preference (the first non-empty wins). A sender is recognised by
MSH-3 (sending application) and optionally MSH-4 (facility) and is tied to
a ``source``, the namespace of its placer numbers and patient ids. Senders
no profile claims get the profile that lists their MSH-12 version in
``versions`` (a v2.3 sender has no PID-35/36), else ``default.yaml``, with
``source`` = MSH-3. A profile's ``outbound`` says how results to its
sources are written (version, PID-5 layout, PID-3 authority, MSH-3..6).
Files are checked when the door starts; a bad one stops the hub with the
file named. See docs/hl7-profiles.md.
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
        "patient.alerts",
        "patient.microchip",
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
        "reason",
        "merge.prior_patient_id",
    }
)

_PATH = re.compile(
    r"(?P<seg>[A-Z][A-Z0-9]{2})"
    r"(?:\((?P<cf>\d+)(?:\.(?P<cc>\d+))?=(?P<cv>[^)]*)\))?"
    r"-(?P<f>\d+)(?:\[(?:(?P<rep>\d+)|(?P<rc>\d+)=(?P<rv>[^\]]*))\])?"
    r"(?:\.(?P<c>\d+))?(?:\.(?P<s>\d+))?"
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
    ``NK1(3.1=OWN)-2.1``, ``ZDS-1.1 if uid``; ``PID-3[5=RFID].1`` is the repetition
    whose component 5 (the CX identifier type) is RFID.

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
    rep_component: int = 0  # pick the repetition whose component rep_component ...
    rep_value: str = ""  # ... equals this (case-insensitive)

    @classmethod
    def parse(cls, text: str) -> FieldPath:
        m = _PATH.fullmatch(text.strip())
        if not m:
            raise ValueError(
                f"{text!r} is not an HL7 position "
                "(e.g. PID-5.2, OBR-4, NK1(3.1=OWN)-2.1, PID-3[5=RFID].1, ZDS-1.1 if uid)"
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
            rep_component=int(g["rc"] or 0),
            rep_value=g["rv"] or "",
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


# HL7 versions the hub reads and writes (MSH-12); outbound needs hl7apy's structures.
VERSIONS = ("2.3", "2.3.1", "2.4", "2.5", "2.5.1")
# PID-5 of outbound messages: the owner's surname first (``Owner^Animal``, the
# HL7 2.5 veterinary convention), or the animal's name alone (older systems).
NAME_LAYOUTS = ("owner-animal", "animal")
_HD = r"^[^|^~\\&\x00-\x1f]*$"  # one HD component: no HL7 delimiters


class _Outbound(BaseModel):
    """How results to a source using this profile are written (``sender.py``)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    version: str = ""  # "" = the first of the profile's versions, else 2.5
    patient_name: str = "owner-animal"
    assigning_authority: str = Field("", max_length=64, pattern=_HD)  # "" = the source name
    application: str = Field("VETHUB", min_length=1, max_length=64, pattern=_HD)  # MSH-3
    facility: str = Field("VETHUB", max_length=64, pattern=_HD)  # MSH-4
    receiving_application: str = Field("", max_length=64, pattern=_HD)  # MSH-5
    receiving_facility: str = Field("", max_length=64, pattern=_HD)  # MSH-6

    @field_validator("version")
    @classmethod
    def _version(cls, value: str) -> str:
        if value and value not in VERSIONS:
            raise ValueError(f"HL7 version {value!r} is not one of {list(VERSIONS)}")
        return value

    @field_validator("patient_name")
    @classmethod
    def _layout(cls, value: str) -> str:
        if value not in NAME_LAYOUTS:
            raise ValueError(f"{value!r} is not one of {list(NAME_LAYOUTS)}")
        return value


class _ProfileFile(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    name: str = Field(min_length=1, max_length=64)
    description: str = ""
    senders: list[_Sender] = Field(default_factory=list)
    # MSH-12 versions this profile serves for senders nobody names (see Profiles.match).
    versions: list[str] = Field(default_factory=list)
    outbound: _Outbound = Field(default_factory=_Outbound)
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

    @field_validator("versions")
    @classmethod
    def _versions(cls, value: list[str]) -> list[str]:
        for v in value:
            if v not in VERSIONS:
                raise ValueError(f"HL7 version {v!r} is not one of {list(VERSIONS)}")
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
class Outbound:
    """Results to a source: HL7 version, PID-5 layout, PID-3.4 and the MSH-3..6 names.

    Empty ``assigning_authority``/``receiving_*`` are filled per source by the
    sender (the source's name, the application/facility it sends from).
    """

    version: str = "2.5"
    patient_name: str = "owner-animal"
    assigning_authority: str = ""
    application: str = "VETHUB"
    facility: str = "VETHUB"
    receiving_application: str = ""
    receiving_facility: str = ""


@dataclass(frozen=True)
class Profile:
    name: str
    fields: dict[str, tuple[FieldPath, ...]]
    senders: tuple[tuple[str, str | None, str], ...] = ()  # (application, facility, source)
    versions: tuple[str, ...] = ()
    outbound: Outbound = field(default_factory=Outbound)
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
        # MSH-12 -> the profile for senders no file or source names (first file wins).
        self.by_version: dict[str, Profile] = {}
        for p in profiles:
            for v in p.versions:
                self.by_version.setdefault(v, p)
        self._exact: dict[tuple[str, str], tuple[Profile, str]] = {}
        self._app: dict[str, tuple[Profile, str]] = {}
        for p in profiles:
            for app, fac, source in p.senders:
                key = app.casefold()
                if fac:
                    self._exact[(key, fac.casefold())] = (p, source)
                else:
                    self._app[key] = (p, source)

    def named(self, name: str, version: str = "") -> Profile:
        """A source's ``hl7_profile``; ``default`` (or an unknown name) follows MSH-12.

        ``default`` is what a source gets when nobody chose, and its PID-35/36
        do not exist before v2.4: a v2.3 sender gets the profile for v2.3.
        """
        chosen = self.by_name.get(name)
        if chosen is None or chosen is self.default:
            return self.by_version.get(version.strip(), self.default)
        return chosen

    def match(
        self,
        application: str,
        facility: str = "",
        registered: Mapping[str, str] | None = None,
        version: str = "",
    ) -> SenderMatch:
        """The profile and source for MSH-3/MSH-4 (and MSH-12).

        A sender listed in a profile file wins (facility-specific entries
        first); then a source registered through the API whose name is MSH-3
        gets the profile named in its ``hl7_profile``; anyone else gets the
        profile for its version (``versions``), else the default profile,
        with source = MSH-3.
        """
        app = application.strip().casefold()
        found = self._exact.get((app, facility.strip().casefold())) or self._app.get(app)
        if found:
            return SenderMatch(found[0], found[1])
        name = application.strip()[:64].replace("\\", "")
        if registered and name in registered:
            return SenderMatch(self.named(registered[name], version), name)
        return SenderMatch(self.named(DEFAULT, version), name or "default")


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
    out = spec.outbound
    return Profile(
        name=spec.name,
        description=spec.description,
        fields=fields,
        senders=tuple((s.application, s.facility, s.source) for s in spec.senders),
        versions=tuple(spec.versions),
        outbound=Outbound(
            version=out.version or (spec.versions[0] if spec.versions else "2.5"),
            patient_name=out.patient_name,
            assigning_authority=out.assigning_authority,
            application=out.application,
            facility=out.facility,
            receiving_application=out.receiving_application,
            receiving_facility=out.receiving_facility,
        ),
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
    served: dict[str, str] = {}  # MSH-12 version -> profile name
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
        for v in prof.versions:
            if v in served:
                raise MappingError(
                    f"{path}: version {v} is already served by profile {served[v]!r}"
                )
            served[v] = prof.name
        profiles.append(prof)
    return Profiles(profiles)
