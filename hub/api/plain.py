"""A study in plain words for a pet owner: who, what, when, from whom.

The owner page's banner and a download's README say it the same way:
"Rex, a 7-year-old Labrador Retriever (dog)." "X-ray (Thorax, 2 views),
27 November 2026." "Requested by Jane Doe."
"""

from __future__ import annotations

from datetime import date

from hub.models import Order, Study

# What an owner calls the species the hub stores by its scientific name.
COMMON_NAMES = {
    "Canis lupus familiaris": "dog",
    "Felis catus": "cat",
    "Equus caballus": "horse",
    "Bos taurus": "cow",
    "Ovis aries": "sheep",
    "Capra hircus": "goat",
    "Sus scrofa": "pig",
    "Oryctolagus cuniculus": "rabbit",
    "Mustela putorius furo": "ferret",
    "Cavia porcellus": "guinea pig",
    "Rattus norvegicus": "rat",
    "Mus musculus": "mouse",
}
EXAMS = {
    "DX": "X-ray",
    "CR": "X-ray",
    "DR": "X-ray",
    "RG": "X-ray",
    "IO": "Dental X-ray",
    "PX": "Dental X-ray",
    "MG": "X-ray",
    "RF": "Fluoroscopy",
    "XA": "X-ray",
    "US": "Ultrasound",
    "CT": "CT scan",
    "MR": "MRI scan",
    "NM": "Nuclear scan",
    "PT": "PET scan",
    "ES": "Endoscopy",
    "XC": "Photographs",
}
MONTHS = (
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
)  # fmt: skip


def describe(order: Order | None, study: Study) -> tuple[str, list[str]]:
    """The pet's name and the banner's sentences, e.g. "Rex, a 7-year-old Labrador
    Retriever (dog)." and "X-ray (Thorax, 2 views), 27 November 2026."."""
    taken = _day(study.study_date)
    if order is None:
        given = study.patient_name.split("^")
        name = (given[1] if len(given) > 1 and given[1] else given[0]).strip() or "Your pet"
        lines = [f"{name}."]
    else:
        name = order.patient_name
        lines = [_animal(order, taken)]
    exam = EXAMS.get((study.modality or (order.modality if order else "") or "").upper(), "Images")
    what = (order.procedure_description if order else None) or study.study_description
    sentence = f"{exam} ({what})" if what else exam
    if taken is not None:
        sentence += f", {taken.day} {MONTHS[taken.month - 1]} {taken.year}"
    lines.append(sentence + ".")
    if order is not None and order.referring_vet:
        lines.append(f"Requested by {order.referring_vet}.")
    return name, lines


def _animal(order: Order, taken: date | None) -> str:
    kind = COMMON_NAMES.get(order.species_description or "")
    if kind is None and order.species_description:
        kind = order.species_description.lower()
    words = [order.breed or kind or "pet"]
    age = _age(order.patient_birth_date, taken or date.today())
    if age:
        words.insert(0, age)
    text = f"{order.patient_name}, {_article(words[0])} {' '.join(words)}"
    if order.breed and kind:
        text += f" ({kind})"
    return text + "."


def _article(word: str) -> str:
    """ "an" before a vowel sound: "an 8-year-old", "an 11-year-old", "an Akita"."""
    digits = word.split("-", 1)[0]
    if digits.isdigit():
        return "an" if digits.startswith("8") or digits in ("11", "18") else "a"
    return "an" if word[:1].lower() in "aeiou" else "a"


def _age(born: date | None, on: date) -> str | None:
    if born is None or born > on:
        return None
    months = (on.year - born.year) * 12 + on.month - born.month - (on.day < born.day)
    if months >= 24 or (months >= 12 and months % 12 == 0):
        return f"{months // 12}-year-old"
    if months >= 1:
        return f"{months}-month-old"
    return "newborn"


def _day(value: str) -> date | None:
    try:
        return date(int(value[:4]), int(value[4:6]), int(value[6:8]))
    except ValueError:
        return None
