"""Which order does a received study belong to? Pure functions, no DB.

The rules of docs/interface.md, in order of trust:

1. ``accession``: the study's AccessionNumber equals an order's;
2. ``study_uid``: its StudyInstanceUID equals an order's;
3. ``patient_day`` (a setting, on by default): PatientID equals an open
   order's, the animal name (given-name part of PatientName, folded) agrees,
   the modality is the order's and the study date is the order's day, and
   exactly one open order fits.

A rule's match is refused (reason ``conflict``) when the study carries a
non-empty PatientID other than the order's: an accession typed onto another
animal's images must never attach them to that animal. Anything else waits
(``no_match`` / ``ambiguous``) with ranked candidates; nothing is guessed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, timedelta
from difflib import SequenceMatcher

from hub import names

OPEN = ("scheduled", "in_progress")
MAX_CANDIDATES = 10
MIN_SCORE = 30


@dataclass(frozen=True)
class StudyFacts:
    """What the device told us about the study (from any of its instances)."""

    study_instance_uid: str
    accession_number: str = ""
    patient_id: str = ""
    patient_name: str = ""  # DICOM PN, "Owner^Animal"
    modality: str = ""
    study_date: str = ""  # DICOM DA, YYYYMMDD
    responsible_person: str = ""


@dataclass(frozen=True)
class OrderFacts:
    id: int
    accession_number: str
    study_instance_uid: str
    patient_id: str
    animal_name: str
    owner_name: str  # owner's last name or organisation
    modality: str
    scheduled_date: str  # YYYYMMDD
    status: str


@dataclass(frozen=True)
class Candidate:
    order_id: int
    score: int
    reasons: tuple[str, ...]

    def as_dict(self) -> dict[str, object]:
        return {"order_id": self.order_id, "score": self.score, "reasons": list(self.reasons)}


@dataclass(frozen=True)
class Match:
    order_id: int | None
    method: str | None  # accession / study_uid / patient_day
    reason: str | None  # no_match / ambiguous / conflict when order_id is None
    candidates: tuple[Candidate, ...] = field(default_factory=tuple)

    @property
    def matched(self) -> bool:
        return self.order_id is not None


def match_study(study: StudyFacts, orders: list[OrderFacts], *, patient_day: bool = True) -> Match:
    """Apply the three rules in order; unmatched studies get ranked candidates."""
    ranked = rank_candidates(study, orders)
    for method, value, key in (
        ("accession", study.accession_number.strip(), "accession_number"),
        ("study_uid", study.study_instance_uid.strip(), "study_instance_uid"),
    ):
        if not value:
            continue
        hits = [o for o in orders if getattr(o, key) == value]
        if not hits:
            continue
        if len(hits) > 1:  # cannot happen with unique columns, but never guess
            return Match(None, None, "ambiguous", ranked)
        order = hits[0]
        if study.patient_id.strip() and study.patient_id.strip() != order.patient_id:
            return Match(None, None, "conflict", _first(order.id, ranked))
        return Match(order.id, method, None, ())

    if patient_day and study.patient_id.strip():
        fitting = [o for o in orders if fits_patient_day(study, o)]
        if len(fitting) == 1:
            return Match(fitting[0].id, "patient_day", None, ())
        if len(fitting) > 1:
            ids = {o.id for o in fitting}
            tied = tuple(c for c in ranked if c.order_id in ids)
            rest = tuple(c for c in ranked if c.order_id not in ids)
            return Match(None, None, "ambiguous", tied + rest)
    return Match(None, None, "no_match", ranked)


def fits_patient_day(study: StudyFacts, order: OrderFacts) -> bool:
    return (
        order.status in OPEN
        and bool(study.patient_id.strip())
        and study.patient_id.strip() == order.patient_id
        and bool(animal_key(animal_of(study.patient_name)))
        and animal_key(animal_of(study.patient_name)) == animal_key(order.animal_name)
        and bool(order.modality)
        and study.modality.upper() == order.modality.upper()
        and bool(study.study_date)
        and study.study_date == order.scheduled_date
    )


def animal_of(patient_name: str) -> str:
    """The given-name component of a PN (the animal, for veterinary patients)."""
    first_group = patient_name.split("=", 1)[0]
    parts = first_group.split("^")
    return parts[1] if len(parts) > 1 else ""


def owner_of(patient_name: str) -> str:
    return patient_name.split("=", 1)[0].split("^")[0]


def animal_key(name: str) -> str:
    """Compared without case, accents or spacing: "Mr. Bigglès" -> "MRBIGGLES"."""
    return re.sub(r"[^0-9A-Z]", "", names.fold(name))


def similarity(a: str, b: str) -> float:
    ka, kb = animal_key(a), animal_key(b)
    if not ka or not kb:
        return 0.0
    if ka == kb:
        return 1.0
    return SequenceMatcher(None, ka, kb).ratio()


# (points, reason) for the signals that say *which animal* a study shows...
_IDENTITY_POINTS = {
    "same accession number": 40,
    "same study instance uid": 40,
    "same patient id": 40,
    "same animal name": 25,
    "similar animal name": 15,
    "same owner name": 15,
    "similar owner name": 8,
}
# ...and for those that only say when and how it was made.
_CONTEXT_POINTS = {"same day": 15, "adjacent day": 5, "same modality": 10, "order open": 5}


def rank_candidates(study: StudyFacts, orders: list[OrderFacts]) -> tuple[Candidate, ...]:
    """Orders a person may want to attach the study to, best first.

    An order needs at least one identity signal: a same-day DX order of
    another animal is no candidate just because it is a same-day DX order.
    """
    out: list[Candidate] = []
    for o in orders:
        found = _identity_signals(study, o)
        if not found:
            continue
        day = _day_distance(study.study_date, o.scheduled_date)
        if day == 0:
            found.append("same day")
        elif day == 1:
            found.append("adjacent day")
        if study.modality and study.modality.upper() == (o.modality or "").upper():
            found.append("same modality")
        if o.status in OPEN:
            found.append("order open")
        score = sum(_IDENTITY_POINTS.get(r, 0) + _CONTEXT_POINTS.get(r, 0) for r in found)
        if score >= MIN_SCORE:
            out.append(Candidate(o.id, score, tuple(found)))
    out.sort(key=lambda c: (-c.score, c.order_id))
    return tuple(out[:MAX_CANDIDATES])


def _identity_signals(study: StudyFacts, o: OrderFacts) -> list[str]:
    found = []
    accession = study.accession_number.strip()
    if accession and accession == o.accession_number:
        found.append("same accession number")
    if study.study_instance_uid == o.study_instance_uid:
        found.append("same study instance uid")
    if study.patient_id.strip() and study.patient_id.strip() == o.patient_id:
        found.append("same patient id")
    animal = similarity(animal_of(study.patient_name) or study.patient_name, o.animal_name)
    if animal == 1.0:
        found.append("same animal name")
    elif animal >= 0.75:
        found.append("similar animal name")
    owner = similarity(owner_of(study.patient_name), o.owner_name)
    if owner == 1.0:
        found.append("same owner name")
    elif owner >= 0.75:
        found.append("similar owner name")
    return found


def _first(order_id: int, ranked: tuple[Candidate, ...]) -> tuple[Candidate, ...]:
    head = tuple(c for c in ranked if c.order_id == order_id)
    return head + tuple(c for c in ranked if c.order_id != order_id)


def _day_distance(a: str, b: str) -> int | None:
    try:
        da = date(int(a[:4]), int(a[4:6]), int(a[6:8]))
        db = date(int(b[:4]), int(b[4:6]), int(b[6:8]))
    except (ValueError, IndexError):
        return None
    return abs((da - db) // timedelta(days=1))
