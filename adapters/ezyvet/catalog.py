"""What the hub publishes to ezyVet for its catalogue sync: modalities, species and breeds.

ezyVet shows these to the clinic, which maps its own items onto them, and
then sends our codes back in its requests (request.py resolves them).
``GET /modalities`` is ``{"modalities": [{"name", "code"}]}`` as pacs.html
shows it; the species/breeds shape was not visible, so the hub answers
``{"species": [{"name", "code", "breeds": [{"name", "code"}]}]}`` (SNOMED CT
codes where the hub has one, else the name) and docs/adapters.md says so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from adapters.codes import CodeLists
from adapters.ezyvet.config import Config
from hub.mappings import BREEDS_FILE, Mappings, default_mappings_dir


def modalities(
    cfg: Config, codes: CodeLists, mappings: Mappings, devices: list[str | None]
) -> list[dict[str, str]]:
    """The source's own codes, then our procedures, then every DICOM modality we serve
    (from procedures and registered devices), each once."""
    names = codes.lists.get("modality_name", {})
    out: dict[str, str] = {}
    for code, entry in cfg.modality_map.items():
        modality = str(entry.get("modality") or "")
        out[code] = str(entry.get("name") or names.get(modality) or code)
    for proc in mappings.procedures:
        out.setdefault(proc.code, proc.description)
    terms = {p.modality for p in mappings.procedures if p.modality} | {d for d in devices if d}
    for term in sorted(terms):
        out.setdefault(term, names.get(term, term))
    return [{"name": name, "code": code} for code, name in out.items()]


def species(mappings: Mappings) -> list[dict[str, Any]]:
    breeds = _breeds(mappings.root)
    out = []
    for entry in mappings.species:
        code = entry.code or entry.description
        out.append(
            {
                "name": entry.description,
                "code": code,
                "breeds": [b for s, b in breeds if entry.code and s == entry.code],
            }
        )
    return out


def _breeds(root: Path) -> list[tuple[str | None, dict[str, str]]]:
    """(species code, breed) pairs of the hub's breed file (the catalogue keeps only an index)."""
    path = root / BREEDS_FILE
    if not path.is_file():  # a clinic's mappings folder without its own breed file
        path = default_mappings_dir() / BREEDS_FILE
    if not path.is_file():
        return []
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return [
        (e.get("species"), {"name": str(e["meaning"]), "code": str(e["code"])})
        for e in data.get("breeds") or []
        if isinstance(e, dict) and e.get("code") and e.get("meaning")
    ]
