"""One upstream worklist item as an order of its source (the request shape of ``OrderIn``).

The veterinary attributes are read when the item has them (species and breed
descriptions or codes, PatientSexNeutered, ResponsiblePerson); otherwise the
source's ``fields`` say where that system puts them, and last the veterinary
convention ``PatientName = Owner^Animal`` gives the owner. Codes go through
``mappings/vendors/upstream-mwl.yaml``; a code it does not know is kept as
text and reported, never dropped. Free texts too long for the hub are cut to
fit and said so; identifiers are never cut (a wrong one would match the wrong
study), so an item with a bad one is refused by ``OrderIn`` and reported.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.valuerep import PersonName

from adapters.codes import CodeLists
from adapters.upstream_mwl.config import Upstream
from adapters.upstream_mwl.fields import Expr
from hub.mappings import MODALITIES, Mappings

VENDOR = "upstream-mwl"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
_PN_DELIMS = re.compile(r"[\^=\\]+")
_UID = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")
# The values of the "sex" list: "<male|female|unknown>[ neutered|intact]".
_SEXES = {"male", "female", "unknown"}
_NEUTER_WORDS = {"neutered": True, "intact": False}
_YES = {"yes": True, "no": False, "true": True, "false": False}


@dataclass
class Item:
    """What one item says: the placer number, the order body, and what was noticed."""

    placer: str | None
    body: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    unknown: dict[str, set[str]] = field(default_factory=dict)

    def note_unknown(self, name: str, code: str) -> None:
        self.unknown.setdefault(name, set()).add(code)


def read(item: Dataset, source: str, up: Upstream, codes: CodeLists, mappings: Mappings) -> Item:
    """The order ``item`` asks for (not yet validated: ``OrderIn`` judges the body)."""
    step = _first_step(item)
    rp_id = _text(item, "RequestedProcedureID")
    accession = _text(item, "AccessionNumber")
    out = Item(placer=rp_id or accession, body={})
    patient_name = item.get("PatientName")
    pn = patient_name if isinstance(patient_name, PersonName) else None
    animal = _name(pn.given_name if pn else None) or _name(pn.family_name if pn else None)
    body: dict[str, Any] = {
        "source": source,
        "placer_order_number": out.placer,
        "patient": {
            "id": _text(item, "PatientID"),
            "name": animal or _name(_text(item, "PatientName")),
        },
    }
    patient = body["patient"]
    _species_and_breed(item, up.fields, codes, mappings, out, patient)
    _sex(item, up.fields, codes, out, patient)
    patient["birth_date"] = _date(_text(item, "PatientBirthDate"), "PatientBirthDate", out)
    patient["weight_kg"] = _weight(_text(item, "PatientWeight"), out)
    alerts = [_clip(v, 64, "MedicalAlerts", out) for v in _values(item, "MedicalAlerts")]
    patient["alerts"] = alerts[:8] or None
    body["owner"] = _owner(item, pn, up.fields, out)
    body.update(_procedure(item, step, codes, out))
    body["accession_number"] = accession
    uid = _text(item, "StudyInstanceUID")
    if uid and not (len(uid) <= 64 and _UID.fullmatch(uid)):
        out.warnings.append(f"StudyInstanceUID {uid!r} is not a UID; the hub makes one")
        uid = None
    body["study_instance_uid"] = uid
    body["requested_procedure_id"] = rp_id
    body["scheduled_step_id"] = _text(step, "ScheduledProcedureStepID")
    body["station_ae_title"] = _text(step, "ScheduledStationAETitle")
    body["scheduled_start"] = _start(step, out)
    ref = item.get("ReferringPhysicianName")
    if isinstance(ref, PersonName):
        vet = " ".join(p for p in (_name(ref.given_name), _name(ref.family_name)) if p)
        body["referring_vet"] = _clip(vet, 64, "ReferringPhysicianName", out) or None
    priority = (_text(item, "RequestedProcedurePriority") or "").upper()
    body["priority"] = "stat" if priority in ("STAT", "HIGH") else "routine"
    reason = _text(item, "ReasonForTheRequestedProcedure")
    body["reason"] = _clip(reason, 64, "ReasonForTheRequestedProcedure", out)
    notes = _text(item, "ImagingServiceRequestComments", keep_lines=True)
    body["notes"] = _clip(notes, 1024, "ImagingServiceRequestComments", out)
    out.body = _without_none(body)
    return out


# -- the animal --------------------------------------------------------------


def _species_and_breed(
    item: Dataset,
    fields: Mapping[str, Expr],
    codes: CodeLists,
    mappings: Mappings,
    out: Item,
    patient: dict[str, Any],
) -> None:
    species = _text(item, "PatientSpeciesDescription")
    if not species:
        code = _coded(item, "PatientSpeciesCodeSequence")
        if code is not None:
            value, meaning = code
            species = value if mappings.species.by_code(value) else (meaning or value)
    if not species and "species" in fields:
        species = fields["species"].read(item)
    if species:
        hit = codes.translate("species", species.upper())
        if hit.known and hit.value:
            species = hit.value
        elif mappings.species.resolve(species) not in set(mappings.species):
            out.note_unknown("species", species)
        patient["species"] = _clip(species, 64, "species", out)
    breed = _text(item, "PatientBreedDescription")
    if not breed:
        code = _coded(item, "PatientBreedCodeSequence")
        breed = (code[1] or code[0]) if code else None
    if not breed and "breed" in fields:
        breed = fields["breed"].read(item)
    if breed:
        hit = codes.translate("breed", breed)
        patient["breed"] = _clip(hit.value if hit.known and hit.value else breed, 64, "breed", out)


def _sex(
    item: Dataset, fields: Mapping[str, Expr], codes: CodeLists, out: Item, patient: dict
) -> None:
    sex_code = _text(item, "PatientSex")
    if (not sex_code or sex_code.upper() == "O") and "sex" in fields:
        sex_code = fields["sex"].read(item) or sex_code
    sex, neutered = None, None
    if sex_code:
        hit = codes.translate("sex", sex_code.upper())
        words = (hit.value or "").lower().split() if hit.known else []
        if words and words[0] in _SEXES and all(w in _NEUTER_WORDS for w in words[1:]):
            sex = words[0]
            neutered = _NEUTER_WORDS[words[1]] if len(words) > 1 else None
        else:
            out.note_unknown("sex", sex_code)
    altered = _text(item, "PatientSexNeutered")
    if not altered and "neutered" in fields:
        altered = fields["neutered"].read(item)
    if altered:
        hit = codes.translate("neutered", altered.upper())
        if hit.known and (hit.value or "").lower() in _YES:
            neutered = _YES[(hit.value or "").lower()]
        else:
            out.note_unknown("neutered", altered)
    patient["sex"] = sex
    patient["neutered"] = neutered


def _owner(
    item: Dataset, pn: PersonName | None, fields: Mapping[str, Expr], out: Item
) -> dict[str, Any]:
    person = item.get("ResponsiblePerson")
    owner: dict[str, Any] = {}
    if isinstance(person, PersonName) and str(person).strip():
        owner["last_name"] = _name(person.family_name)
        owner["first_name"] = _name(person.given_name)
    owner["organization"] = _name(_text(item, "ResponsibleOrganization"))
    for target in ("owner_id", "owner_last_name", "owner_first_name", "owner_organization"):
        key = target.removeprefix("owner_")
        if not owner.get(key) and target in fields:
            value = fields[target].read(item)
            owner[key] = _clip(value, 64, target, out) if key == "id" else _name(value)
    if not (owner.get("last_name") or owner.get("organization")):
        # Owner^Animal: the family name is the owner's when the name has two parts.
        if pn is not None and _name(pn.given_name) and _name(pn.family_name):
            owner["last_name"] = _name(pn.family_name)
        else:
            owner["last_name"] = "UNKNOWN"
            out.warnings.append("no owner in the item; owner recorded as UNKNOWN")
    return {k: _clip(v, 64, f"owner.{k}", out) for k, v in owner.items() if v}


# -- the procedure -----------------------------------------------------------


def _procedure(item: Dataset, step: Dataset | None, codes: CodeLists, out: Item) -> dict:
    coded = _coded(item, "RequestedProcedureCodeSequence")
    protocol = _coded(step, "ScheduledProtocolCodeSequence") if step is not None else None
    description = (
        _text(item, "RequestedProcedureDescription")
        or _text(step, "ScheduledProcedureStepDescription")
        or (coded[1] if coded else None)
        or (protocol[1] if protocol else None)
    )
    code = coded[0] if coded else None
    if not (code or description):
        description = "imaging request"
        out.warnings.append("no procedure code or description; recorded as 'imaging request'")
    modality = _text(step, "Modality")
    if modality:
        hit = codes.translate("modality", modality.upper())
        mapped = (hit.value if hit.known and hit.value else modality).upper()
        if mapped in MODALITIES:
            modality = mapped
        else:
            out.note_unknown("modality", modality)
            out.warnings.append(f"modality {modality!r} is not a DICOM modality; left out")
            modality = None
    return {
        "procedure": {
            "code": _clip(code, 64, "procedure code", out),
            "description": _clip(description, 64, "procedure description", out),
        },
        "modality": modality,
    }


# -- values -------------------------------------------------------------------


def _first_step(item: Dataset) -> Dataset | None:
    steps = item.get("ScheduledProcedureStepSequence")
    return steps[0] if steps else None


def _values(ds: Dataset | None, keyword: str) -> list[str]:
    if ds is None or keyword not in ds or ds[keyword].value is None:
        return []
    value = ds[keyword].value
    values = list(value) if isinstance(value, MultiValue) else [value]
    texts = (_CONTROL.sub(" ", str(v)).strip() for v in values)
    return [t for t in texts if t]


def _text(ds: Dataset | None, keyword: str, *, keep_lines: bool = False) -> str | None:
    """The element's (first) value as clean text; None when absent or empty."""
    if keep_lines and ds is not None and keyword in ds and ds[keyword].value:
        text = str(ds[keyword].value).replace("\x00", "").strip()
        return text or None
    values = _values(ds, keyword)
    return values[0] if values else None


def _name(value: Any) -> str | None:
    """A person-name component as the hub stores it (no DICOM delimiters)."""
    if value is None:
        return None
    text = _PN_DELIMS.sub(" ", _CONTROL.sub(" ", str(value))).strip()
    return text[:64].strip() or None


def _coded(ds: Dataset | None, keyword: str) -> tuple[str, str | None] | None:
    """(CodeValue, CodeMeaning) of a code sequence's first item."""
    seq = ds.get(keyword) if ds is not None else None
    if not seq:
        return None
    value = _text(seq[0], "CodeValue")
    return (value, _text(seq[0], "CodeMeaning")) if value else None


def _clip(value: str | None, limit: int, what: str, out: Item) -> str | None:
    if value is None or len(value) <= limit:
        return value
    out.warnings.append(f"{what} longer than {limit} characters; cut")
    return value[:limit].rstrip()


def _date(text: str | None, what: str, out: Item) -> str | None:
    if not text:
        return None
    try:
        return datetime.strptime(text[:8], "%Y%m%d").date().isoformat()
    except ValueError:
        out.warnings.append(f"{what} {text!r} is not a date; left out")
        return None


def _weight(text: str | None, out: Item) -> float | None:
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value <= 20000:
        out.warnings.append(f"PatientWeight {text!r} is not a weight in kg; left out")
        return None
    return value


def _start(step: Dataset | None, out: Item) -> str | None:
    """ScheduledProcedureStepStartDate + Time as a naive local ISO time."""
    day = _text(step, "ScheduledProcedureStepStartDate")
    if not day:
        return None
    iso = _date(day, "ScheduledProcedureStepStartDate", out)
    if iso is None:
        return None
    tm = (_text(step, "ScheduledProcedureStepStartTime") or "").replace(":", "").split(".")[0]
    digits = (tm + "000000")[:6] if tm.isdigit() and len(tm) in (2, 4, 6) else "000000"
    try:
        at = datetime.strptime(digits, "%H%M%S").time()
    except ValueError:
        out.warnings.append(f"ScheduledProcedureStepStartTime {tm!r} is not a time; midnight")
        at = datetime.min.time()
    return datetime.combine(date.fromisoformat(iso), at).isoformat()


def _without_none(body: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in body.items():
        if isinstance(value, dict):
            value = _without_none(value)
            if not value and key != "patient":
                continue
        if value is not None:
            out[key] = value
    return out
