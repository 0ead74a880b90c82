"""An upstream worklist source's settings (``"upstream": {...}``), checked field by field.

The admin sends them with ``PUT /api/v1/sources/{name}``; ``check`` names
every fault before anything is stored, so a poll never starts from settings
it cannot use.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from pydicom.charset import python_encoding
from pydicom.datadict import dictionary_VR

from adapters.upstream_mwl import fields
from hub.errors import FieldError

KEY = "upstream"
# Matching keys of the scheduled procedure step (the rest go at the item's top level).
STEP_KEYS = frozenset(
    {
        "ScheduledStationAETitle",
        "ScheduledStationName",
        "Modality",
        "ScheduledProcedureStepStartDate",
        "ScheduledProcedureStepStartTime",
        "ScheduledPerformingPhysicianName",
        "ScheduledProcedureStepLocation",
        "ScheduledProcedureStepStatus",
    }
)
TOP_KEYS = frozenset({"PatientID", "PatientName", "AccessionNumber", "RequestedProcedureID"})
# "today" as a start date is the hub's local date at each poll.
TODAY = "today"
_AE = re.compile(r"[ -~]{1,16}")
_HOST = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,252})|\[?[0-9A-Fa-f:.]+\]?")

DEFAULTS: dict[str, Any] = {
    "calling_ae_title": "VETHUB",
    "interval_s": 60,
    "timeout_s": 10,
    "max_items": 1000,
    # What an answer without SpecificCharacterSet is read as (older systems send
    # Latin-1 undeclared); an answer that declares one is read as it says.
    "character_set": "ISO_IR 100",
    "query": {"ScheduledStationAETitle": "", "Modality": ""},
    "fields": {},
}


@dataclass(frozen=True)
class Upstream:
    """The settings a poll works from."""

    ae_title: str
    host: str
    port: int
    calling_ae_title: str = "VETHUB"
    interval_s: int = 60
    timeout_s: float = 10
    max_items: int = 1000
    character_set: str = "ISO_IR 100"
    query: Mapping[str, str] = field(default_factory=dict)
    fields: Mapping[str, fields.Expr] = field(default_factory=dict)

    @classmethod
    def of(cls, cfg: Mapping[str, Any]) -> Upstream:
        """From stored settings (checked when they were put)."""
        full = {**DEFAULTS, **cfg}
        return cls(
            ae_title=str(full["ae_title"]),
            host=str(full["host"]),
            port=int(full["port"]),
            calling_ae_title=str(full["calling_ae_title"]),
            interval_s=int(full["interval_s"]),
            timeout_s=float(full["timeout_s"]),
            max_items=int(full["max_items"]),
            character_set=str(full["character_set"]),
            query={str(k): str(v) for k, v in dict(full["query"] or {}).items()},
            fields=fields.parse_all(dict(full["fields"] or {})),
        )

    def query_values(self, today: date) -> dict[str, str]:
        """The matching keys as sent: ``today`` replaced by the date."""
        out = dict(self.query)
        if out.get("ScheduledProcedureStepStartDate", "").strip().lower() == TODAY:
            out["ScheduledProcedureStepStartDate"] = today.strftime("%Y%m%d")
        return out


def check(cfg: Mapping[str, Any]) -> list[FieldError]:
    """Every fault in the settings, each naming ``upstream.<field>``."""
    errors: list[FieldError] = []

    def bad(name: str, why: str) -> None:
        errors.append(FieldError(f"{KEY}.{name}", why))

    known = set(DEFAULTS) | {"ae_title", "host", "port"}
    for name in sorted(set(cfg) - known):
        bad(name, f"is not a setting; use {', '.join(sorted(known))}")
    for name in ("ae_title", "calling_ae_title"):
        value = cfg.get(name)
        if not isinstance(value, str) or not _AE.fullmatch(value) or not value.strip():
            bad(name, "is required: an AE title of 1-16 printable ASCII characters")
        elif "\\" in value:
            bad(name, "must not contain '\\'")
    host = cfg.get("host")
    if not isinstance(host, str) or not _HOST.fullmatch(host):
        bad("host", "is required: a host name or IP address")
    _int(cfg, "port", 1, 65535, bad, required=True)
    _int(cfg, "interval_s", 10, 86400, bad)
    _int(cfg, "timeout_s", 1, 120, bad)
    _int(cfg, "max_items", 1, 10000, bad)
    charset = cfg.get("character_set")
    if charset is not None and charset not in python_encoding:
        bad("character_set", "is not a DICOM character set term (e.g. ISO_IR 100, ISO_IR 192)")
    _check_query(cfg.get("query", {}), bad)
    specs = cfg.get("fields", {})
    if not isinstance(specs, dict):
        bad("fields", "must be an object of target: expression")
    else:
        for target, spec in specs.items():
            if target not in fields.TARGETS:
                bad(f"fields.{target}", f"is not a target; use {', '.join(fields.TARGETS)}")
                continue
            _, why = fields.parse(spec)
            if why:
                bad(f"fields.{target}", why)
    return errors


def _int(
    cfg: Mapping[str, Any], name: str, low: int, high: int, bad: Any, required: bool = False
) -> None:
    value = cfg.get(name)
    if value is None and not required:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        bad(name, f"{'is required: ' if value is None else 'must be '}an integer {low}-{high}")


def _check_query(query: Any, bad: Any) -> None:
    if not isinstance(query, dict):
        bad("query", "must be an object of DICOM keyword: value")
        return
    for keyword, value in query.items():
        where = f"query.{keyword}"
        if keyword not in STEP_KEYS | TOP_KEYS:
            bad(where, f"is not a matching key here; use {', '.join(sorted(STEP_KEYS | TOP_KEYS))}")
        elif not isinstance(value, str) or len(value) > 64 or "\\" in value:
            bad(where, "must be a text of at most 64 characters without '\\'")
        elif keyword == "ScheduledProcedureStepStartDate" and value.strip().lower() == TODAY:
            continue
        elif value and dictionary_VR(keyword) == "AE" and not _AE.fullmatch(value):
            bad(where, "is not an AE title")
