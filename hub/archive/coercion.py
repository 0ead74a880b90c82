"""Writing corrected attribute values into a pydicom data set.

What to change is decided by ``hub.services.coercion`` over plain values;
this is the half that touches DICOM: reading the values a header holds and
setting new ones without breaking its character set.
"""

from __future__ import annotations

from pydicom.charset import convert_encodings
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from hub.services.coercion import KEYWORDS, Value

_CODE_KEYS = ("CodeValue", "CodingSchemeDesignator", "CodeMeaning")


def current(ds: Dataset) -> dict[str, Value]:
    """The values of ``KEYWORDS`` in a header, JSON-ready (None: absent)."""
    out: dict[str, Value] = {}
    for kw in KEYWORDS:
        if kw not in ds:
            out[kw] = None
            continue
        value = ds[kw].value
        if kw.endswith("Sequence"):
            out[kw] = [{k: str(item.get(k, "")) for k in _CODE_KEYS} for item in (value or [])]
        else:
            out[kw] = "" if value is None else str(value)
    return out


def apply(ds: Dataset, values: dict[str, Value]) -> None:
    """Set (or, for None, remove) attributes on a full data set, fixing its character set."""
    texts = [v for v in values.values() if isinstance(v, str)]
    _make_room_for(ds, texts)
    for kw, value in values.items():
        if value is None:
            if kw in ds:
                del ds[kw]
        elif isinstance(value, list):
            items = []
            for entry in value:
                item = Dataset()
                for k, v in entry.items():
                    setattr(item, k, v)
                items.append(item)
            setattr(ds, kw, Sequence(items))
        else:
            setattr(ds, kw, value)


def _make_room_for(ds: Dataset, texts: list[str]) -> None:
    """Switch to UTF-8 when a new value does not fit the data set's character set."""
    declared = ds.get("SpecificCharacterSet", "") or ""
    terms = list(declared) if not isinstance(declared, str) else [declared]
    encodings = convert_encodings(terms)
    try:
        for text in texts:
            text.encode(encodings[0])
    except (UnicodeEncodeError, LookupError):
        ds.decode()  # every text element to str, in the old character set
        ds.SpecificCharacterSet = "ISO_IR 192"
