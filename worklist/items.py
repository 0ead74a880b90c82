"""An order as a worklist item, and the bytes of the answer a device asked for.

pydicom needs ~1.5-3 ms to build and encode one answer data set; a 3-day
range of a busy group is thousands of answers. So the item is kept as a plain
``{tag: (VR, value)}`` map, only the requested keys are encoded here (a few
dozen small elements, all text or sequences), and each encoding is cached
under (order id, order version, character set, transfer syntax, requested
keys): a changed order has a new version, so a stale answer is never served.
"""

from __future__ import annotations

import struct
import threading
from collections import OrderedDict
from collections.abc import Mapping
from datetime import date
from typing import Any, Union

from pydicom.datadict import dictionary_VR, tag_for_keyword

from hub import names
from hub.mappings import Breed
from worklist.charset import encode_text, specific_character_set

# A requested-keys spec: sorted ((tag, sub), ...); sub is None for a plain
# element, ALL for "the whole sequence", or a nested spec for a sequence item.
ALL = "*"
Spec = tuple[tuple[int, Union["Spec", str, None]], ...]
Item = dict[int, tuple[str, Any]]

_LONG_VRS = frozenset(
    {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"}
)
# Values that carry text in the device's character set; the others are ASCII.
_CHARSET_VRS = frozenset({"SH", "LO", "ST", "LT", "UT", "PN", "UC"})
# Multi-line text may contain a backslash; in other VRs it separates values.
_FREE_TEXT_VRS = frozenset({"ST", "LT", "UT"})
_ITEM = b"\xfe\xff\x00\xe0"
SPECIFIC_CHARACTER_SET = 0x00080005
PROCEDURE_SCHEME = "99VETHUB"


def tag(keyword: str) -> int:
    value = tag_for_keyword(keyword)
    if value is None:
        raise KeyError(keyword)
    return value


def vr_of(tag_value: int) -> str | None:
    """Dictionary VR of a tag (first of ambiguous ones), None for unknown/private tags."""
    try:
        return dictionary_VR(tag_value).split(" or ")[0]
    except KeyError:
        return None


T = {
    k: tag(k)
    for k in (
        "AccessionNumber",
        "ReferringPhysicianName",
        "ReferencedStudySequence",
        "ReferencedPatientSequence",
        "PatientName",
        "PatientID",
        "IssuerOfPatientID",
        "TypeOfPatientID",
        "OtherPatientIDsSequence",
        "PatientBirthDate",
        "PatientAge",
        "MedicalAlerts",
        "PatientSex",
        "PatientWeight",
        "PatientSpeciesDescription",
        "PatientSpeciesCodeSequence",
        "PatientSexNeutered",
        "PatientBreedDescription",
        "PatientBreedCodeSequence",
        "BreedRegistrationSequence",
        "ResponsiblePerson",
        "ResponsiblePersonRole",
        "ResponsibleOrganization",
        "StudyInstanceUID",
        "RequestedProcedureDescription",
        "RequestedProcedureCodeSequence",
        "ScheduledProcedureStepSequence",
        "RequestedProcedureID",
        "RequestedProcedurePriority",
        "ReasonForTheRequestedProcedure",
        "RequestingPhysician",
        "PlacerOrderNumberImagingServiceRequest",
        "ImagingServiceRequestComments",
        "Modality",
        "ScheduledStationAETitle",
        "ScheduledProcedureStepStartDate",
        "ScheduledProcedureStepStartTime",
        "ScheduledPerformingPhysicianName",
        "ScheduledProcedureStepDescription",
        "ScheduledProtocolCodeSequence",
        "ScheduledProcedureStepID",
        "ScheduledProcedureStepLocation",
        "ScheduledProcedureStepStatus",
        "CodeValue",
        "LongCodeValue",
        "CodingSchemeDesignator",
        "CodeMeaning",
    )
}
SPS_STATUS = {"scheduled": "SCHEDULED", "in_progress": "STARTED"}
SEX = {"male": "M", "female": "F", "unknown": "O", None: "O"}


def referring_pn(full: str | None) -> str:
    """'Jane Doe' -> 'Doe^Jane' (the last word is the family name); PN values pass as they are."""
    if not full:
        return ""
    if "^" in full:
        return full
    parts = full.split()
    return parts[-1] if len(parts) == 1 else f"{parts[-1]}^{' '.join(parts[:-1])}"


def _code(value: str, scheme: str, meaning: str) -> Item:
    key = "CodeValue" if len(value) <= 16 else "LongCodeValue"
    return {
        T[key]: ("SH" if key == "CodeValue" else "UC", value),
        T["CodingSchemeDesignator"]: ("SH", scheme),
        T["CodeMeaning"]: ("LO", meaning[:64]),
    }


def patient_age(birth: date | None, on: str) -> str:
    """DICOM AS age on the day ``on`` (YYYYMMDD): days under a month, months under two
    years (a young animal's age is told in months), then years; "" when unknown."""
    if birth is None or len(on) != 8:
        return ""
    year, month, day = int(on[:4]), int(on[4:6]), int(on[6:])
    months = (year - birth.year) * 12 + month - birth.month - (day < birth.day)
    if months < 0:  # born after the appointment: a typo, no age
        return ""
    if months < 1:
        return f"{(date(year, month, day) - birth).days:03d}D"
    if months < 24:
        return f"{months:03d}M"
    return f"{min(months // 12, 999):03d}Y"


def _other_ids(o: Any) -> list[Item]:
    """OtherPatientIDsSequence: the microchip (RFID) first, then the order's other ids."""
    items: list[Item] = []
    if o.patient_microchip:
        items.append(
            {T["PatientID"]: ("LO", o.patient_microchip), T["TypeOfPatientID"]: ("CS", "RFID")}
        )
    for other in o.patient_other_ids or ():
        entry: Item = {T["PatientID"]: ("LO", other["id"])}
        if other.get("issuer"):
            entry[T["IssuerOfPatientID"]] = ("LO", other["issuer"])
        entry[T["TypeOfPatientID"]] = ("CS", other.get("type") or "TEXT")
        items.append(entry)
    return items


def build_item(o: Any, modality: str | None = None, breed: Breed | None = None) -> Item:
    """The worklist item of an order row (an ``Order`` or a Core row with its columns).

    ``modality`` stands in for the order's when the device asked for an alias of it;
    ``breed`` is the order's breed as coded by ``mappings/breeds.yaml``.
    """
    owner_head = o.owner_last_name or o.owner_organization
    procedure = o.procedure_description or o.procedure_code or ""
    accession = o.accession_number
    vet = referring_pn(o.referring_vet)
    item: Item = {
        T["AccessionNumber"]: ("SH", accession),
        T["ReferringPhysicianName"]: ("PN", vet),
        T["ReferencedStudySequence"]: ("SQ", []),
        T["ReferencedPatientSequence"]: ("SQ", []),
        T["PatientName"]: ("PN", names.animal_patient_name(owner_head, o.patient_name)),
        T["PatientID"]: ("LO", o.patient_id),
        T["IssuerOfPatientID"]: ("LO", o.source),
        T["PatientBirthDate"]: (
            "DA",
            o.patient_birth_date.strftime("%Y%m%d") if o.patient_birth_date else "",
        ),
        T["PatientAge"]: ("AS", patient_age(o.patient_birth_date, o.sps_start_date)),
        T["PatientSex"]: ("CS", SEX.get(o.patient_sex, "O")),
        T["OtherPatientIDsSequence"]: ("SQ", _other_ids(o)),
        T["MedicalAlerts"]: ("LO", o.patient_alerts.split("\\") if o.patient_alerts else ""),
        T["PatientSpeciesDescription"]: ("LO", o.species_description or o.species_input or ""),
        T["PatientSpeciesCodeSequence"]: (
            "SQ",
            [
                _code(
                    o.species_code,
                    o.species_scheme or "SCT",
                    o.species_meaning or o.species_description or "",
                )
            ]
            if o.species_code
            else [],
        ),
        T["PatientBreedDescription"]: ("LO", o.breed or ""),
        T["PatientBreedCodeSequence"]: (
            "SQ",
            [_code(breed.code, "SCT", breed.meaning)] if breed else [],
        ),
        T["BreedRegistrationSequence"]: ("SQ", []),
        T["ResponsiblePerson"]: (
            "PN",
            names.person_name(o.owner_last_name, o.owner_first_name) if o.owner_last_name else "",
        ),
        T["ResponsiblePersonRole"]: ("CS", "OWNER" if o.owner_last_name else ""),
        T["ResponsibleOrganization"]: ("LO", o.owner_organization or ""),
        T["StudyInstanceUID"]: ("UI", o.study_instance_uid),
        T["RequestedProcedureDescription"]: ("LO", procedure),
        T["RequestedProcedureCodeSequence"]: (
            "SQ",
            [_code(o.procedure_code, PROCEDURE_SCHEME, procedure)] if o.procedure_code else [],
        ),
        T["RequestedProcedureID"]: ("SH", o.requested_procedure_id or accession),
        T["RequestedProcedurePriority"]: ("CS", "STAT" if o.priority == "stat" else "ROUTINE"),
        T["ReasonForTheRequestedProcedure"]: ("LO", o.reason or ""),
        # The referring vet is who asks for the images: no separate requester is kept.
        T["RequestingPhysician"]: ("PN", vet),
        T["PlacerOrderNumberImagingServiceRequest"]: ("LO", o.placer_order_number),
        T["ImagingServiceRequestComments"]: ("LT", o.notes or ""),
    }
    if o.patient_weight_kg is not None:
        item[T["PatientWeight"]] = ("DS", _ds(o.patient_weight_kg))
    if o.patient_neutered is not None:
        item[T["PatientSexNeutered"]] = ("CS", "ALTERED" if o.patient_neutered else "UNALTERED")
    sps: Item = {
        T["Modality"]: ("CS", modality or o.modality or ""),
        T["ScheduledStationAETitle"]: ("AE", o.station_ae_title or ""),
        T["ScheduledProcedureStepStartDate"]: ("DA", o.sps_start_date),
        T["ScheduledProcedureStepStartTime"]: ("TM", o.sps_start_time),
        T["ScheduledPerformingPhysicianName"]: ("PN", ""),
        T["ScheduledProcedureStepDescription"]: ("LO", procedure),
        T["ScheduledProtocolCodeSequence"]: (
            "SQ",
            [_code(o.procedure_code, PROCEDURE_SCHEME, procedure)] if o.procedure_code else [],
        ),
        T["ScheduledProcedureStepID"]: ("SH", o.scheduled_step_id or accession),
        T["ScheduledProcedureStepLocation"]: ("SH", (o.site or "")[:16]),
        T["ScheduledProcedureStepStatus"]: ("CS", SPS_STATUS.get(o.status, "SCHEDULED")),
    }
    item[T["ScheduledProcedureStepSequence"]] = ("SQ", [sps])
    return item


def _ds(value: float) -> str:
    text = f"{value:.3f}".rstrip("0").rstrip(".")
    return text[:16]


# -- encoding ---------------------------------------------------------------


def _header(tag_value: int, vr: str, length: int, implicit: bool) -> bytes:
    group, element = tag_value >> 16, tag_value & 0xFFFF
    if implicit:
        return struct.pack("<HHI", group, element, length)
    if vr in _LONG_VRS:
        return struct.pack("<HH2sHI", group, element, vr.encode(), 0, length)
    return struct.pack("<HH2sH", group, element, vr.encode(), length)


def _value_bytes(vr: str, value: str | list[str], charset: str, strict: bool) -> bytes:
    if isinstance(value, list):  # several values: each on its own, then joined
        raw = b"\\".join(_one_value(vr, v, charset, strict) for v in value)
    else:
        raw = _one_value(vr, value, charset, strict)
    if len(raw) % 2:
        raw += b"\0" if vr == "UI" else b" "
    return raw


def _one_value(vr: str, value: str, charset: str, strict: bool) -> bytes:
    if vr not in _FREE_TEXT_VRS and "\\" in value:
        value = value.replace("\\", "/")
    if vr in _CHARSET_VRS:
        return encode_text(value, charset, strict=strict)
    return value.encode("ascii", "replace")


def _encode_element(
    tag_value: int, vr: str, value: Any, sub: Any, charset: str, implicit: bool, strict: bool
) -> bytes:
    if vr == "SQ":
        body = b"".join(
            _ITEM + struct.pack("<I", len(enc)) + enc
            for enc in (
                encode(
                    entry,
                    None if sub == ALL else sub,
                    charset,
                    implicit,
                    top=False,
                    strict=strict,
                )
                for entry in value
            )
        )
        return _header(tag_value, "SQ", len(body), implicit) + body
    raw = _value_bytes(vr, value, charset, strict)
    return _header(tag_value, vr, len(raw), implicit) + raw


def encode(
    item: Mapping[int, tuple[str, Any]],
    spec: Spec | None,
    charset: str,
    implicit: bool,
    *,
    top: bool = True,
    strict: bool = False,
) -> bytes:
    """Little-endian encoding of the requested keys of ``item`` (every key when spec is None).

    A requested key the item has no value for comes back empty, as PS3.4 asks.
    The top level starts with SpecificCharacterSet unless the answer is ASCII.
    ``strict``: raise UnicodeEncodeError if a value does not fit ``charset``.
    """
    parts: list[bytes] = []
    if top:
        sc = specific_character_set(charset)
        if sc:
            parts.append(
                _encode_element(SPECIFIC_CHARACTER_SET, "CS", sc, None, charset, implicit, False)
            )
    pairs = spec if spec is not None else tuple((t, ALL) for t in sorted(item))
    for tag_value, sub in pairs:
        if tag_value == SPECIFIC_CHARACTER_SET:
            continue
        entry = item.get(tag_value)
        if entry is None:
            vr = vr_of(tag_value) or "UN"
            parts.append(_header(tag_value, vr, 0, implicit))
            continue
        vr, value = entry
        parts.append(_encode_element(tag_value, vr, value, sub, charset, implicit, strict))
    return b"".join(parts)


def encode_answer(
    item: Mapping[int, tuple[str, Any]],
    spec: Spec | None,
    asked: str | None,
    fallback: str,
    implicit: bool,
) -> bytes:
    """The answer in the query's set ``asked`` when every value fits it, else in ``fallback``
    (the device's setting)."""
    if asked is not None and asked != fallback:
        try:
            return encode(item, spec, asked, implicit, strict=True)
        except UnicodeEncodeError:
            pass
    return encode(item, spec, fallback, implicit)


class EncodingCache:
    """Bounded LRU of encoded answers, shared by all associations (thread-safe)."""

    def __init__(self, max_entries: int = 20_000) -> None:
        self.max_entries = max_entries
        self._data: OrderedDict[tuple, bytes] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: tuple) -> bytes | None:
        with self._lock:
            value = self._data.get(key)
            if value is None:
                self.misses += 1
                return None
            self._data.move_to_end(key)
            self.hits += 1
            return value

    def put(self, key: tuple, value: bytes) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.max_entries:
                self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)
