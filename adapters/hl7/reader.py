"""Reading order and patient attributes out of a message through a sender's profile.

A ``Reader`` turns HL7 fields into the request shape of the REST order JSON
(``hub.schemas.OrderIn``), converting HL7 dates, codes and units on the way,
and remembers which position each value came from, so that an error can name
the field the sender must fix (ERR-2).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from adapters.hl7.ack import Hl7Error
from adapters.hl7.outcome import Rejection
from adapters.hl7.parse import Hl7Message, Segment
from adapters.hl7.profile import FieldPath, Profile
from hub.schemas import OrderIn
from hub.services.orders import OrderContext

_SCT = {"SCT", "SNM", "SNOMED", "SNOMED-CT", "SNOMEDCT", "SCTID", "99SCT"}
_TS = re.compile(r"(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(?:\.\d+)?([+-]\d{4})?$")
_WEIGHT_FACTOR = {"kg": 1.0, "g": 0.001, "lb": 0.45359237, "[lb_av]": 0.45359237, "lbs": 0.45359237}
# Fields the core names in its errors that a profile fills through a sub-field.
_FIELD_TARGET = {"owner": "owner.last_name", "procedure": "procedure.code"}


class Reader:
    """Reads order attributes from a message (or one order group of it) per a profile."""

    def __init__(
        self,
        msg: Hl7Message,
        profile: Profile,
        ctx: OrderContext,
        segments: list[Segment] | None = None,
    ) -> None:
        self.msg = msg
        self.profile = profile
        self.ctx = ctx
        self.by_name: dict[str, list[Segment]] = {}
        for seg in segments if segments is not None else msg.segments:
            self.by_name.setdefault(seg.name, []).append(seg)
        self.used: dict[str, FieldPath] = {}

    def scoped(self, segments: list[Segment]) -> Reader:
        """A reader of one order group; positions used are shared with this one."""
        r = Reader(self.msg, self.profile, self.ctx, segments)
        r.used = self.used
        return r

    def _segments(self, path: FieldPath) -> list[Segment]:
        segs = self.by_name.get(path.segment, [])
        if not path.when_field:
            return segs
        want = path.when_value.upper()
        return [
            s
            for s in segs
            if self.msg.value(s, path.when_field, path.when_component or 1).strip().upper() == want
        ]

    def _repetition(self, seg: Segment, path: FieldPath) -> int:
        """The repetition a path reads: its number, or the first whose component
        ``rep_component`` equals ``rep_value`` (0: none does)."""
        if not path.rep_component:
            return path.repetition
        want = path.rep_value.strip().upper()
        for rep in range(1, self.msg.repetitions(seg, path.field) + 1):
            got = self.msg.value(seg, path.field, path.rep_component, 0, rep).strip().upper()
            if got == want:
                return rep
        return 0

    def components(self, target: str) -> tuple[list[str], FieldPath | None]:
        for path in self.profile.paths(target):
            for seg in self._segments(path)[:1]:
                rep = self._repetition(seg, path)
                if not rep:
                    continue
                if path.component:
                    value = self.msg.value(seg, path.field, path.component, path.subcomponent, rep)
                    comps = [value]
                else:
                    comps = self.msg.components(seg, path.field, rep)
                if any(c.strip() for c in comps) and path.accepts(comps[0]):
                    self.used[target] = path
                    return [c.strip() for c in comps], path
        return [], None

    def text(self, target: str) -> tuple[str | None, FieldPath | None]:
        for path in self.profile.paths(target):
            segs = self._segments(path)
            if target == "notes" and path.segment == "NTE":
                values = [self._leaf(s, path) for s in segs]
                joined = "\n".join(v for v in values if v)
                if joined:
                    self.used[target] = path
                    return joined, path
                continue
            for seg in segs[:1]:
                value = self._leaf(seg, path)
                if value and path.accepts(value):
                    self.used[target] = path
                    return value, path
        return None, None

    def _leaf(self, seg: Segment, path: FieldPath) -> str:
        rep = self._repetition(seg, path)
        if not rep:
            return ""
        return self.msg.value(seg, path.field, path.component or 1, path.subcomponent, rep).strip()

    def location(self, target: str) -> str:
        """ERR-2 location of the position a field was read from (or would have been)."""
        target = _FIELD_TARGET.get(target, target)
        path = self.used.get(target)
        if path is None:
            paths = self.profile.paths(target)
            path = paths[0] if paths else None
        return path.location if path else ""

    # --- the order request -----------------------------------------------------
    def order_request(self, source: str) -> dict[str, Any]:
        """The REST order JSON as far as the message fills it (absent fields left out)."""

        def t(name: str) -> str | None:
            return self.text(name)[0]

        patient: dict[str, Any] = {
            "id": t("patient.id"),
            "name": t("patient.name"),
            "species": self._species(),
            "breed": self._coded_text("patient.breed"),
            "birth_date": self._date("patient.birth_date"),
            "weight_kg": self._weight(),
            "alerts": t("patient.alerts"),
            "microchip": t("patient.microchip"),
        }
        sex_code = t("patient.sex")
        if sex_code:
            sex, neutered = self.profile.sex_codes.get(sex_code.upper(), ("unknown", None))
            patient["sex"] = sex
            if neutered is not None:
                patient["neutered"] = neutered
        neut = t("patient.neutered")
        if neut and neut.upper() in self.profile.neutered_codes:
            patient["neutered"] = self.profile.neutered_codes[neut.upper()]
        last, org = t("owner.last_name"), t("owner.organization")
        owner = {
            "id": t("owner.id"),
            "last_name": last,
            "first_name": t("owner.first_name") if last else None,
            "organization": org,
        }
        if not last and not org:
            owner["last_name"] = t("owner.last_name_fallback")
        modality = t("modality")
        if modality:
            modality = self.profile.modality_codes.get(modality.upper(), modality.upper())
        priority = t("priority")
        req: dict[str, Any] = {
            "source": source,
            "placer_order_number": t("placer_order_number"),
            "accession_number": t("accession_number"),
            "study_instance_uid": t("study_instance_uid"),
            "requested_procedure_id": t("requested_procedure_id"),
            "scheduled_step_id": t("scheduled_step_id"),
            "patient": patient,
            "owner": owner,
            "procedure": {"code": t("procedure.code"), "description": t("procedure.description")},
            "modality": modality,
            "station_ae_title": t("station_ae_title"),
            "scheduled_start": self._datetime("scheduled_start"),
            "referring_vet": self._person("referring_vet"),
            "site": t("site"),
            "priority": self.profile.priority_codes.get(priority.upper()) if priority else None,
            "notes": (t("notes") or "")[:1024] or None,
            "reason": t("reason"),
        }
        return _drop_empty(req)

    def placer_number(self, req: dict[str, Any]) -> str:
        """The request's placer order number; without one, an AR 101 naming its position."""
        placer = req.get("placer_order_number")
        if not placer:
            raise Rejection(
                Hl7Error(
                    101, "the placer order number is missing", self.location("placer_order_number")
                )
            )
        return str(placer)

    def validated(self, req: dict[str, Any]) -> OrderIn:
        """The request checked like a REST order; the first fault is an AR naming its field."""
        self.placer_number(req)
        try:
            return OrderIn.model_validate(req)
        except ValidationError as exc:
            err = exc.errors()[0]
            target = ".".join(str(p) for p in err["loc"])
            missing = err["type"] == "missing"
            code = 101 if missing else (103 if target == "modality" else 102)
            what = "is missing" if missing else err["msg"]
            raise Rejection(Hl7Error(code, f"{target} {what}", self.location(target))) from None

    # --- converters --------------------------------------------------------------
    def _species(self) -> str | None:
        comps, _ = self.components("patient.species")
        if not comps:
            return None
        code = comps[0]
        text = comps[1] if len(comps) > 1 else ""
        system = comps[2].upper() if len(comps) > 2 else ""
        if code and (system in _SCT or code.isdigit()) and self.ctx.mappings.species.by_code(code):
            return code
        return text or code or None

    def _coded_text(self, target: str) -> str | None:
        comps, _ = self.components(target)
        if not comps:
            return None
        return (comps[1] if len(comps) > 1 and comps[1] else comps[0]) or None

    def _person(self, target: str) -> str | None:
        comps, path = self.components(target)
        if not comps:
            return None
        if path is not None and path.component:
            return comps[0] or None
        family = comps[1] if len(comps) > 1 else ""
        given = comps[2] if len(comps) > 2 else ""
        name = " ".join(p for p in (given, family) if p)
        return name or None

    def _stamp(self, target: str, what: str) -> tuple[re.Match[str], str, str] | None:
        """The field as an HL7 TS at least to the day (with its text and location), or an AR."""
        value, path = self.text(target)
        if not value:
            return None
        where = path.location if path else ""
        m = _TS.match(value)
        if not m or not m.group(3):
            raise Rejection(Hl7Error(102, f"{value!r} is not an HL7 {what}", where))
        return m, value, where

    def _date(self, target: str) -> str | None:
        found = self._stamp(target, "date (YYYYMMDD)")
        if found is None:
            return None
        m = found[0]
        return f"{m.group(1)}-{m.group(2)}-{m.group(3)}"

    def _datetime(self, target: str) -> str | None:
        found = self._stamp(target, "time stamp (YYYYMMDDHHMM[SS])")
        if found is None:
            return None
        m, value, where = found
        y, mo, d, h, mi, s, tz = m.groups()
        iso = f"{y}-{mo}-{d}T{h or '00'}:{mi or '00'}:{s or '00'}"
        if tz:
            iso += f"{tz[:3]}:{tz[3:]}"
        try:
            datetime.fromisoformat(iso)
        except ValueError:
            raise Rejection(Hl7Error(102, f"{value!r} is not a valid time stamp", where)) from None
        return iso

    def _weight(self) -> float | None:
        value, path = self.text("patient.weight_kg")
        if not value:
            return None
        try:
            weight = float(value.replace(",", "."))
        except ValueError:
            raise Rejection(
                Hl7Error(102, f"weight {value!r} is not a number", path.location if path else "")
            ) from None
        unit = (self.text("patient.weight_unit")[0] or "kg").strip().lower()
        if unit not in _WEIGHT_FACTOR:
            raise Rejection(
                Hl7Error(
                    103,
                    f"weight unit {unit!r} is not kg, g or lb",
                    self.location("patient.weight_unit"),
                )
            )
        return round(weight * _WEIGHT_FACTOR[unit], 4)


def _drop_empty(value: Any) -> Any:
    if isinstance(value, dict):
        out = {k: _drop_empty(v) for k, v in value.items()}
        return {k: v for k, v in out.items() if v not in (None, "", {})}
    return value
