"""Species and procedure vocabularies from ``mappings/*.yaml``, loaded and checked once at start.

Practice systems spell species in many ways ("dog", "Canine", "448771007"); the hub
turns them into one DICOM-ready value, and keeps unknown text instead of refusing
the order. Procedure codes supply a modality, station and body part when an order
leaves them out. A broken file stops the hub at start with the file and entry named,
rather than failing on the first order that needs it.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

SPECIES_FILE = "species.yaml"
PROCEDURES_FILE = "procedures.yaml"
MODALITY_ALIASES_FILE = "modality_aliases.yaml"
BREEDS_FILE = "breeds.yaml"

# DICOM Modality (0008,0060) defined terms a worklist item may plausibly schedule
# (PS3.3 C.7.3.1.1.1); derived objects (SR, KO, PR, SEG...) are not ordered.
MODALITIES = frozenset(
    {
        "BDUS", "BMD", "CR", "CT", "DG", "DX", "ECG", "ES", "GM", "IO", "IVUS", "MG",
        "MR", "NM", "OCT", "OP", "OPT", "OT", "PT", "PX", "RF", "RG", "SM", "US",
        "XA", "XC",
    }
)  # fmt: skip

_CS = re.compile(r"[A-Z0-9_ ]{1,16}")  # DICOM CS value
_SH = re.compile(r"[^\\\x00-\x1f]{1,16}")  # DICOM SH/AE value: no backslash or controls
_SEPARATORS = re.compile(r"[-_.\s]+")


class MappingError(Exception):
    """A mapping file is missing or malformed; the message names the file and the entry."""


@dataclass(frozen=True)
class Species:
    description: str
    code: str | None
    scheme: str | None
    meaning: str | None
    # Plausible body weight (kg) from newborn to the heaviest adult: outside it, an
    # order is still taken but answered with a warning (a unit slip, lb for kg).
    weight_kg: tuple[float, float] | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Breed:
    code: str
    meaning: str
    species: str | None  # the species' SNOMED CT code


@dataclass(frozen=True)
class Procedure:
    code: str
    description: str
    modality: str | None
    station_ae_title: str | None
    body_part: str | None


def normalize(text: str) -> str:
    """Lookup key: no accents, case-folded, '-', '_', '.' and runs of whitespace as one space."""
    decomposed = unicodedata.normalize("NFKD", text)
    bare = "".join(c for c in decomposed if not unicodedata.combining(c))
    return _SEPARATORS.sub(" ", bare.casefold()).strip()


# --- file schemas -------------------------------------------------------------


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True, str_strip_whitespace=True)


class _SpeciesEntry(_Entry):
    description: str = Field(min_length=1, max_length=64)  # PatientSpeciesDescription, LO
    code: str | None = None  # SNOMED CT concept id
    scheme: str | None = Field(default=None, min_length=1, max_length=16)
    meaning: str | None = Field(default=None, min_length=1, max_length=64)
    synonyms: list[str] = Field(default_factory=list)
    weight_kg: tuple[float, float] | None = None  # [lightest, heaviest] plausible

    @field_validator("code")
    @classmethod
    def _sctid(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"\d{6,18}", value):
            raise ValueError(f"{value!r} is not a SNOMED CT concept id (6-18 digits)")
        return value

    @field_validator("weight_kg")
    @classmethod
    def _range(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        if value is not None and not 0 < value[0] < value[1]:
            raise ValueError(f"weight_kg {list(value)} must be [lightest, heaviest], both > 0")
        return value

    @field_validator("synonyms")
    @classmethod
    def _no_blank_synonyms(cls, value: list[str]) -> list[str]:
        if any(not s.strip() for s in value):
            raise ValueError("blank synonym")
        return value

    @model_validator(mode="after")
    def _code_complete(self) -> _SpeciesEntry:
        if self.code and not (self.scheme and self.meaning):
            raise ValueError("a code needs both scheme and meaning")
        if not self.code and (self.scheme or self.meaning):
            raise ValueError("scheme/meaning given without a code")
        return self


class _SpeciesFile(_Entry):
    species: list[_SpeciesEntry]


class _ProcedureEntry(_Entry):
    description: str = Field(min_length=1, max_length=64)  # RequestedProcedureDescription, LO
    modality: str | None = None
    station_ae_title: str | None = None
    body_part: str | None = None

    @field_validator("modality")
    @classmethod
    def _known_modality(cls, value: str | None) -> str | None:
        if value is not None and value not in MODALITIES:
            raise ValueError(f"unknown DICOM modality {value!r}")
        return value

    @field_validator("station_ae_title")
    @classmethod
    def _ae_title(cls, value: str | None) -> str | None:
        if value is not None and not _SH.fullmatch(value):
            raise ValueError(f"{value!r} is not an AE title (1-16 characters, no backslash)")
        return value

    @field_validator("body_part")
    @classmethod
    def _cs_body_part(cls, value: str | None) -> str | None:
        if value is not None and not _CS.fullmatch(value):
            raise ValueError(f"{value!r} is not a DICOM CS value (A-Z, 0-9, '_', ' ', max 16)")
        return value


class _ProceduresFile(_Entry):
    procedures: dict[str, _ProcedureEntry]


class _BreedEntry(_Entry):
    code: str  # SNOMED CT concept id, CID 7480
    meaning: str = Field(min_length=1, max_length=64)
    species: str | None = None
    synonyms: list[str] = Field(default_factory=list)

    @field_validator("code", "species")
    @classmethod
    def _sctid(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"\d{6,18}", value):
            raise ValueError(f"{value!r} is not a SNOMED CT concept id (6-18 digits)")
        return value


class _BreedsFile(_Entry):
    breeds: list[_BreedEntry]


class _ModalityAliasesFile(_Entry):
    groups: list[list[str]]

    @field_validator("groups")
    @classmethod
    def _known_groups(cls, value: list[list[str]]) -> list[list[str]]:
        seen: set[str] = set()
        for number, group in enumerate(value, 1):
            if len(set(group)) < 2:
                raise ValueError(f"group {number} needs at least two different modalities")
            for code in group:
                if code not in MODALITIES:
                    raise ValueError(f"group {number}: unknown DICOM modality {code!r}")
                if code in seen:
                    raise ValueError(f"group {number}: {code} is already in another group")
                seen.add(code)
        return value


# --- catalogues -----------------------------------------------------------------


class SpeciesCatalog:
    """Species resolvable by any synonym, scientific name, description or code."""

    def __init__(self, entries: list[Species], index: dict[str, Species]) -> None:
        self._entries = entries
        self._index = index
        self._by_code = {s.code: s for s in entries if s.code}

    def resolve(self, text: str | None) -> Species | None:
        """Catalogue entry for ``text``; unknown text comes back as a description-only Species."""
        if text is None or not text.strip():
            return None
        found = self._index.get(normalize(text))
        if found is not None:
            return found
        return Species(description=text.strip(), code=None, scheme=None, meaning=None)

    def catalogued(self, text: str | None) -> Species | None:
        """The entry ``text`` names, or None when the catalogue does not know it."""
        if text is None or not text.strip():
            return None
        return self._index.get(normalize(text))

    def by_code(self, code: str) -> Species | None:
        return self._by_code.get(code.strip())

    def __iter__(self) -> Iterator[Species]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)


class ProcedureCatalog:
    """Procedures by code, case-insensitively."""

    def __init__(self, procedures: list[Procedure]) -> None:
        self._procedures = procedures
        self._by_code = {p.code.casefold(): p for p in procedures}

    def get(self, code: str | None) -> Procedure | None:
        if code is None:
            return None
        return self._by_code.get(code.strip().casefold())

    def __iter__(self) -> Iterator[Procedure]:
        return iter(self._procedures)

    def __len__(self) -> int:
        return len(self._procedures)


class BreedCatalog:
    """Coded breeds by any spelling, per species: "Lab" for a dog is 62137007."""

    def __init__(self, index: dict[tuple[str, str | None], Breed] | None = None) -> None:
        self._index = index or {}
        self._any: dict[str, list[Breed]] = {}
        for (key, _), breed in self._index.items():
            self._any.setdefault(key, []).append(breed)

    def resolve(self, text: str | None, species_code: str | None) -> Breed | None:
        """The coded breed ``text`` names for an animal of ``species_code``; None when
        unknown, or ambiguous ("mixed") without a species."""
        if not text or not self._index:
            return None
        key = normalize(text)
        if species_code:
            return self._index.get((key, species_code)) or self._index.get((key, None))
        found = self._any.get(key, [])
        return found[0] if len(found) == 1 else None

    def __len__(self) -> int:
        return len({b.code for b in self._index.values()})


class ModalityAliases:
    """Which modality codes a worklist query for one code also matches (symmetric groups)."""

    def __init__(self, groups: list[list[str]] | None = None) -> None:
        self._group: dict[str, tuple[str, ...]] = {}
        for group in groups or ():
            members = tuple(dict.fromkeys(group))
            for code in members:
                self._group[code] = members

    def of(self, code: str) -> tuple[str, ...]:
        """``code`` and its aliases, ``code`` first."""
        members = self._group.get(code)
        if members is None:
            return (code,)
        return (code, *(m for m in members if m != code))

    def __len__(self) -> int:
        return len(self._group)


@dataclass(frozen=True)
class Mappings:
    species: SpeciesCatalog
    procedures: ProcedureCatalog
    root: Path
    modality_aliases: ModalityAliases = field(default_factory=ModalityAliases)
    breeds: BreedCatalog = field(default_factory=BreedCatalog)


def default_mappings_dir() -> Path:
    """The installed ``mappings`` package, so the shipped YAML is found without configuration."""
    return Path(str(files("mappings")))


def load_mappings(root: Path | None = None) -> Mappings:
    """Load and check every mapping file under ``root`` (default: the shipped ones)."""
    root = Path(root) if root is not None else default_mappings_dir()
    return Mappings(
        species=_load_species(root / SPECIES_FILE),
        procedures=_load_procedures(root / PROCEDURES_FILE),
        root=root,
        modality_aliases=_load_modality_aliases(root / MODALITY_ALIASES_FILE),
        breeds=_load_breeds(root / BREEDS_FILE),
    )


# --- loading --------------------------------------------------------------------


# libyaml's parser where PyYAML has it: the pure-Python one took ~0.3 s for the four
# files, paid by every hub start and CLI command (and every test's hub).
try:
    from yaml import CSafeLoader as _SafeLoader
except ImportError:  # a PyYAML built without libyaml
    from yaml import SafeLoader as _SafeLoader  # type: ignore[assignment]


class _StrictLoader(_SafeLoader):
    """SafeLoader that refuses duplicate keys, which PyYAML would silently overwrite."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.MarkedYAMLError(
                "while reading a mapping",
                node.start_mark,
                f"duplicate key {key!r}",
                key_node.start_mark,
            )
        seen.add(key)
    return loader.construct_mapping(node)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _read(path: Path, model: type[_Entry]) -> Any:
    try:
        with path.open(encoding="utf-8") as stream:
            data = yaml.load(stream, Loader=_StrictLoader)
    except OSError as exc:
        raise MappingError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise MappingError(f"{path}: malformed YAML: {exc}") from exc
    if not isinstance(data, dict):
        top = next(iter(model.model_fields))
        raise MappingError(f"{path}: expected a mapping with a {top!r} key at the top level")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise MappingError(f"{path}: {_describe(exc, data)}") from exc


def _describe(exc: ValidationError, data: Any) -> str:
    """One line per problem, each naming the entry (by description or code) and field."""
    lines = []
    for err in exc.errors():
        loc = list(err["loc"])
        where = ".".join(str(p) for p in loc) or "top level"
        if len(loc) >= 2 and loc[0] == "species" and isinstance(loc[1], int):
            entry = data["species"][loc[1]]
            name = entry.get("description") if isinstance(entry, dict) else None
            where = f"species entry {loc[1] + 1}" + (f" ({name!r})" if name else "")
            if loc[2:]:
                where += ": " + ".".join(str(p) for p in loc[2:])
        elif len(loc) >= 2 and loc[0] == "procedures":
            where = f"procedure {loc[1]!r}" + (
                ": " + ".".join(map(str, loc[2:])) if loc[2:] else ""
            )
        message = err["msg"].removeprefix("Value error, ")
        lines.append(f"{where}: {message}")
    return "; ".join(lines)


def _load_species(path: Path) -> SpeciesCatalog:
    parsed: _SpeciesFile = _read(path, _SpeciesFile)
    entries: list[Species] = []
    index: dict[str, Species] = {}
    codes: dict[str, str] = {}
    for entry in parsed.species:
        species = Species(
            entry.description, entry.code, entry.scheme, entry.meaning, entry.weight_kg
        )
        if entry.code:
            if entry.code in codes:
                raise MappingError(
                    f"{path}: code {entry.code} is used by both {codes[entry.code]!r}"
                    f" and {entry.description!r}"
                )
            codes[entry.code] = entry.description
        names = [entry.description, *entry.synonyms, entry.meaning, entry.code]
        for name in filter(None, names):
            key = normalize(name)
            other = index.get(key)
            if other is not None and other is not species:
                raise MappingError(
                    f"{path}: synonym {name!r} of {entry.description!r}"
                    f" already belongs to {other.description!r}"
                )
            index[key] = species
        entries.append(species)
    return SpeciesCatalog(entries, index)


def _load_procedures(path: Path) -> ProcedureCatalog:
    parsed: _ProceduresFile = _read(path, _ProceduresFile)
    procedures: list[Procedure] = []
    seen: dict[str, str] = {}
    for code, entry in parsed.procedures.items():
        if not _SH.fullmatch(code) or not code.strip():
            raise MappingError(
                f"{path}: procedure code {code!r} must be 1-16 characters (DICOM SH)"
            )
        key = code.casefold()
        if key in seen:
            raise MappingError(
                f"{path}: procedure codes {seen[key]!r} and {code!r} differ only in case"
            )
        seen[key] = code
        procedures.append(
            Procedure(
                code, entry.description, entry.modality, entry.station_ae_title, entry.body_part
            )
        )
    return ProcedureCatalog(procedures)


def _load_modality_aliases(path: Path) -> ModalityAliases:
    """The alias groups; a mappings directory from before the file existed has none."""
    if not path.exists():
        return ModalityAliases()
    parsed: _ModalityAliasesFile = _read(path, _ModalityAliasesFile)
    return ModalityAliases(parsed.groups)


def _load_breeds(path: Path) -> BreedCatalog:
    """The breed codes; a mappings directory from before the file existed has none."""
    if not path.exists():
        return BreedCatalog()
    parsed: _BreedsFile = _read(path, _BreedsFile)
    index: dict[tuple[str, str | None], Breed] = {}
    for entry in parsed.breeds:
        breed = Breed(entry.code, entry.meaning, entry.species)
        for name in (entry.meaning, *entry.synonyms):
            key = (normalize(name), entry.species)
            other = index.get(key)
            if other is not None and other != breed:
                raise MappingError(
                    f"{path}: synonym {name!r} of {entry.meaning!r}"
                    f" already names {other.meaning!r} for the same species"
                )
            index[key] = breed
    return BreedCatalog(index)
