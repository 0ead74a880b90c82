"""A vendor's code lists (species, breed, sex, modality...) read from
``mappings/vendors/<vendor>.yaml``: data the clinic can extend, not code.

A code the list does not know is never dropped: ``translate`` hands back the
vendor's own text (its label, else the code) and says it was unknown, so the
adapter keeps it on the order and reports it (a warning in its log and the
source's status) for someone to add to the file.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from hub.mappings import default_mappings_dir


@dataclass(frozen=True)
class Translated:
    value: str | None
    known: bool


class CodeLists:
    """One vendor's lists: ``{list name: {vendor code: hub value}}``."""

    def __init__(self, lists: Mapping[str, Mapping[str, str]]) -> None:
        self.lists = {
            name: {str(k): str(v) for k, v in codes.items()} for name, codes in lists.items()
        }

    @classmethod
    def load(cls, vendor: str, mappings_dir: Path | None = None) -> CodeLists:
        """The clinic's file under ``VETHUB_MAPPINGS_DIR`` if it has one, else the shipped one."""
        for root in (mappings_dir, default_mappings_dir()):
            path = Path(root) / "vendors" / f"{vendor}.yaml" if root else None
            if path is not None and path.is_file():
                data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
                if not isinstance(data, dict) or not all(
                    isinstance(v, dict) for v in data.values()
                ):
                    raise ValueError(f"{path}: expected lists of 'code: value' by name")
                return cls(data)
        return cls({})

    def translate(self, name: str, code: object, label: str | None = None) -> Translated:
        """The hub's value for ``code`` in list ``name``; unknown: the label or code, as text."""
        if code is None or code == "":
            return Translated(label or None, label is None)
        hit = self.lists.get(name, {}).get(str(code))
        if hit is not None:
            return Translated(hit, True)
        return Translated(label or str(code), False)
