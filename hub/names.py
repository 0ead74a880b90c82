"""Folding and transliteration of names, for matching and for old devices.

``fold`` gives the key the worklist matches person names on (PS3.4 allows
case- and accent-insensitive PN matching); ``to_ascii`` is what a device
configured for plain ASCII gets instead of "Müller".
"""

from __future__ import annotations

import unicodedata

# Letters NFKD does not decompose, spelled the way clinics expect.
_SPECIAL = str.maketrans(
    {
        "ß": "ss",
        "ẞ": "SS",
        "Ø": "O",
        "ø": "o",
        "Æ": "AE",
        "æ": "ae",
        "Œ": "OE",
        "œ": "oe",
        "Ł": "L",
        "ł": "l",
        "Đ": "D",
        "đ": "d",
        "Þ": "TH",
        "þ": "th",
        "Ð": "D",
        "ð": "d",
        "ı": "i",
    }
)
# German umlauts read better expanded ("Mueller") than stripped ("Muller").
_UMLAUTS = str.maketrans({"ä": "ae", "ö": "oe", "ü": "ue", "Ä": "Ae", "Ö": "Oe", "Ü": "Ue"})


def _strip_marks(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text.translate(_SPECIAL))
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def fold(text: str) -> str:
    """Upper-case, accent-free form used for name matching ("Müller" -> "MULLER")."""
    return _strip_marks(text).upper()


def to_ascii(text: str) -> str:
    """Readable ASCII for devices that know nothing else ("Müller" -> "Mueller")."""
    out = _strip_marks(text.translate(_UMLAUTS))
    return out.encode("ascii", "replace").decode("ascii")


def person_name(family: str | None, given: str | None) -> str:
    """DICOM PN ``Family^Given`` with empty trailing components left out."""
    family, given = family or "", given or ""
    return f"{family}^{given}" if given else family


def animal_patient_name(owner: str | None, animal: str) -> str:
    """PatientName of an animal: ``Owner^Animal`` (PS3.5 6.2, veterinary use)."""
    return f"{owner or ''}^{animal}"
