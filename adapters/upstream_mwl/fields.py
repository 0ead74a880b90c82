"""Where to read a value a practice system put in the wrong attribute.

Systems that serve a worklist for human medicine often have no place for
species, breed or owner and put them in PatientComments, OtherPatientIDs or
the family name of PatientName. A source says where, per target, in its
``fields`` setting; an expression is a DICOM keyword of the worklist item
(top level or of its first scheduled step), optionally with the value's index
(``OtherPatientIDs[1]``, from 0) or a person-name component
(``PatientName.family``, ``.given``), or an object that also takes the first
group of a regular expression::

    {"from": "PatientComments", "pattern": "Species: *([A-Za-z ]+)"}
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

# What a source may map: the order fields whose veterinary attribute is often missing.
TARGETS = (
    "species",
    "breed",
    "sex",
    "neutered",
    "owner_id",
    "owner_last_name",
    "owner_first_name",
    "owner_organization",
)
# Value representations a text can be read from.
TEXT_VRS = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UT", "UC", "DA", "IS", "DS"})
PN_PARTS = {"family": "family_name", "given": "given_name", "middle": "middle_name"}
_EXPR = re.compile(r"(?P<kw>[A-Za-z][A-Za-z0-9]*)(?:\[(?P<index>\d{1,2})\])?(?:\.(?P<part>\w+))?")


@dataclass(frozen=True)
class Expr:
    keyword: str
    index: int | None = None
    part: str | None = None
    pattern: re.Pattern[str] | None = None

    def read(self, item: Dataset) -> str | None:
        """The text found, stripped; None when the item has nothing there."""
        holder = item if self.keyword in item else _first_step(item)
        if holder is None or self.keyword not in holder:
            return None
        value: Any = holder[self.keyword].value
        if isinstance(value, MultiValue):
            pos = self.index or 0
            value = value[pos] if pos < len(value) else None
        elif self.index:
            value = None
        if value is None:
            return None
        if self.part is not None:
            value = getattr(value, PN_PARTS[self.part], "") if hasattr(value, "family_name") else ""
        text = str(value).strip()
        if text and self.pattern is not None:
            m = self.pattern.search(text)
            text = (m.group(1) or "").strip() if m else ""
        return text or None


def _first_step(item: Dataset) -> Dataset | None:
    steps = item.get("ScheduledProcedureStepSequence")
    return steps[0] if steps else None


def parse(spec: Any) -> tuple[Expr | None, str | None]:
    """The expression, or None and why it cannot be one."""
    pattern = None
    if isinstance(spec, dict):
        unknown = set(spec) - {"from", "pattern"}
        if unknown:
            return None, f"unknown key(s) {', '.join(sorted(unknown))}; use from, pattern"
        if "pattern" in spec:
            if not isinstance(spec["pattern"], str):
                return None, "pattern must be a string"
            try:
                pattern = re.compile(spec["pattern"])
            except re.error as exc:
                return None, f"pattern is not a regular expression ({exc})"
            if pattern.groups < 1:
                return None, "pattern needs a group ( ) around the value to take"
        spec = spec.get("from")
    if not isinstance(spec, str):
        return None, 'must be a keyword like "PatientComments" or {"from": ..., "pattern": ...}'
    m = _EXPR.fullmatch(spec.strip())
    if m is None:
        return None, f"{spec!r} is not Keyword, Keyword[n] or Keyword.part"
    keyword, part = m["kw"], m["part"]
    tag = tag_for_keyword(keyword)
    if tag is None:
        return None, f"{keyword!r} is not a DICOM keyword"
    vr = dictionary_VR(tag)
    if vr not in TEXT_VRS:
        return None, f"{keyword} has VR {vr}, not a text"
    if part is not None and (vr != "PN" or part not in PN_PARTS):
        return None, f".{part} applies to person names only ({', '.join(PN_PARTS)})"
    index = int(m["index"]) if m["index"] is not None else None
    return Expr(keyword, index, part, pattern), None


def parse_all(specs: dict[str, Any]) -> dict[str, Expr]:
    """The ``fields`` setting, already checked (``config.check``)."""
    out: dict[str, Expr] = {}
    for target, spec in specs.items():
        expr, _ = parse(spec)
        if expr is not None:
            out[target] = expr
    return out
