"""HL7 message -> core service calls, and the record of what came of it.

Order messages (ORM^O01, OMI^O23) become ``orders.place/update/cancel/
discontinue`` by ORC-1; ADT A01/A04/A08/A28/A31 update the patient on every
open order, A34/A40 merge two patient ids. Each message is applied inside a
SAVEPOINT together with its log row, so a message is either fully applied
and logged AA, or not applied at all and logged AE/AR with the reason.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy.orm import Session

from adapters.hl7 import ack
from adapters.hl7.ack import Addressing, Hl7Error
from adapters.hl7.mllp import Broken
from adapters.hl7.parse import Hl7Message, ParseError, Segment, decode, parse, peek_header
from adapters.hl7.profile import FieldPath, Profile, Profiles, SenderMatch
from hub.errors import Conflict, Invalid, NotFound
from hub.models import utcnow
from hub.schemas import OrderIn
from hub.services import messages, orders, patients
from hub.services.orders import OrderContext

log = logging.getLogger("adapters.hl7")

ORDER_TYPES = {("ORM", "O01"), ("OMI", "O23")}
PATIENT_UPDATE = {"A01", "A04", "A08", "A28", "A31"}
PATIENT_MERGE = {"A34", "A40"}
_SCT = {"SCT", "SNM", "SNOMED", "SNOMED-CT", "SNOMEDCT", "SCTID", "99SCT"}
_TS = re.compile(r"(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(?:\.\d+)?([+-]\d{4})?$")
_CTRL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


class Rejection(Exception):
    """The message cannot be applied as sent; ``ack_code`` AR or AE."""

    def __init__(self, error: Hl7Error, ack_code: str = "AR") -> None:
        super().__init__(error.message)
        self.error = error
        self.ack_code = ack_code


@dataclass
class Prepared:
    """A received message, decoded and parsed (or not), ready for the writer."""

    raw: str
    addressing: Addressing
    sender: str = ""
    facility: str = ""
    control_id: str = ""
    type: str = ""
    version: str = ""
    charset: str = ""
    msg: Hl7Message | None = None
    match: SenderMatch | None = None
    error: Hl7Error | None = None
    received_at: datetime = field(default_factory=utcnow)


@dataclass
class Result:
    patient_id: str | None = None
    order_id: int | None = None


# --- preparing (pure CPU, runs on the event loop) ----------------------------------


def _clean(text: str, n: int) -> str:
    return _CTRL.sub("", text).replace("\x00", "")[:n]


def _addressing_from_header(raw: bytes) -> tuple[Addressing, dict[str, str]]:
    header = peek_header(raw)
    if header is None:
        return Addressing(), {}

    def g(n: int) -> str:
        return _clean(header.first_component(n), 64)

    info = {
        "sender": g(3),
        "facility": g(4),
        "control_id": _clean(header.get(10), 64),
        "type": _clean("^".join(header.get(9).split(header.get(2)[:1] or "^")[:2]), 16),
        "version": g(12)[:8],
        "charset": g(18)[:32],
    }
    trig = header.get(9).split(header.get(2)[:1] or "^")
    return (
        Addressing(
            sending_application=g(3),
            sending_facility=g(4),
            receiving_application=g(5),
            receiving_facility=g(6),
            control_id=info["control_id"],
            trigger=_clean(trig[1], 8) if len(trig) > 1 else "",
            processing_id=g(11)[:3] or "P",
            version=info["version"] or "2.5",
            charset=info["charset"],
        ),
        info,
    )


def prepare(
    payload: bytes, profiles: Profiles, registered: Mapping[str, str] | None = None
) -> Prepared:
    """Decode (per MSH-18) and parse one framed message; never raises."""
    addressing, info = _addressing_from_header(payload)
    prepared = Prepared(raw="", addressing=addressing, **info)
    match = profiles.match(prepared.sender, prepared.facility, registered) if info else None
    prepared.match = match
    try:
        text, _ = decode(payload, match.profile.charset if match else "")
    except ParseError as exc:
        prepared.raw = _storable(payload.decode("latin-1"))
        prepared.error = Hl7Error(exc.code, str(exc), _erl(exc.location))
        return prepared
    prepared.raw = _storable(text)
    return _parse_into(prepared, text, profiles, registered)


def prepare_text(
    text: str, profiles: Profiles, registered: Mapping[str, str] | None = None
) -> Prepared:
    """A stored message run again (reprocess): the text is already decoded."""
    addressing, info = _addressing_from_header(text.encode("utf-8", "replace"))
    prepared = Prepared(raw=_storable(text), addressing=addressing, **info)
    prepared.match = (
        profiles.match(prepared.sender, prepared.facility, registered) if info else None
    )
    return _parse_into(prepared, text, profiles, registered)


def prepare_broken(
    broken: Broken, profiles: Profiles, registered: Mapping[str, str] | None = None
) -> Prepared:
    addressing, info = _addressing_from_header(broken.head)
    prepared = Prepared(raw=_storable(broken.head.decode("latin-1")), addressing=addressing, **info)
    prepared.match = (
        profiles.match(prepared.sender, prepared.facility, registered) if info else None
    )
    prepared.error = Hl7Error(100, f"{broken.reason} ({broken.size} bytes); not processed")
    return prepared


def _parse_into(
    prepared: Prepared, text: str, profiles: Profiles, registered: Mapping[str, str] | None
) -> Prepared:
    try:
        msg = parse(text)
    except ParseError as exc:
        prepared.error = Hl7Error(exc.code, str(exc), _erl(exc.location))
        return prepared
    prepared.msg = msg
    prepared.sender = _clean(msg.sending_application, 64)
    prepared.facility = _clean(msg.sending_facility, 64)
    prepared.control_id = _clean(msg.control_id, 64)
    prepared.type = _clean(msg.type, 16)
    prepared.version = _clean(msg.version, 8)
    prepared.charset = _clean(msg.charset, 32)
    prepared.match = profiles.match(prepared.sender, prepared.facility, registered)
    return prepared


def _storable(text: str) -> str:
    # PostgreSQL text cannot hold NUL; nothing else is changed.
    return text.replace("\x00", "\ufffd")


def _erl(location: str) -> str:
    """``PID-5.2`` / ``MSH-18`` / ``PID^2`` -> ERL ``PID^1^5^1^2``."""
    m = re.fullmatch(r"([A-Z][A-Z0-9]{2})-(\d+)(?:\.(\d+))?", location)
    if m:
        seg, fld, comp = m.groups()
        return "^".join([seg, "1", fld, "1", *([comp] if comp else [])])
    return location[:64]


# --- applying (in the writer's transaction) -----------------------------------------


@dataclass(frozen=True)
class Logged:
    """A message as logged: its row id, the outcome and the ACK to send."""

    id: int
    outcome: str
    ack: str
    type: str


def apply_batch(session: Session, batch: list[Prepared], ctx: OrderContext) -> list[Logged]:
    """Apply messages in order in the caller's transaction; resends found with one query."""
    keys = {_key(p) for p in batch if p.error is None}
    accepted = messages.accepted_among(session, keys)
    return [apply(session, p, ctx, accepted=accepted) for p in batch]


def _key(p: Prepared) -> messages.Key:
    return (p.sender, p.facility, p.control_id)


def apply(
    session: Session,
    prepared: Prepared,
    ctx: OrderContext,
    *,
    reprocess_of: int | None = None,
    accepted: dict[messages.Key, messages.Accepted] | None = None,
) -> Logged:
    """Apply one message and log it; the log row carries the ACK to send.

    ``accepted`` (from ``apply_batch``) are the earlier accepted messages of
    the batch's keys; it is kept up to date with the ones accepted here.
    """
    base: dict[str, Any] = dict(
        received_at=prepared.received_at,
        sender=prepared.sender,
        facility=prepared.facility,
        control_id=prepared.control_id,
        type=prepared.type,
        version=prepared.version,
        charset=prepared.charset,
        source=prepared.match.source if prepared.match else None,
        profile=prepared.match.profile.name if prepared.match else None,
        raw=prepared.raw,
        reprocess_of=reprocess_of,
        duplicate_of=None,
        error=None,
        error_location=None,
        error_code=None,
        patient_id=None,
        order_id=None,
    )
    key = _key(prepared)
    if prepared.error is None and reprocess_of is None:
        if accepted is None:
            accepted = messages.accepted_among(session, {key})
        earlier = accepted.get(key)
        if earlier is not None:
            base.update(
                outcome="AA",
                ack=earlier.ack,
                error=f"resend of message {earlier.id}; not applied again",
                patient_id=earlier.patient_id,
                order_id=earlier.order_id,
                duplicate_of=earlier.id,
            )
            return Logged(messages.record(session, base), "AA", earlier.ack, prepared.type)
    error = prepared.error
    code = "AR"
    if error is None:
        assert prepared.msg is not None and prepared.match is not None
        reader: Reader | None = None
        try:
            with session.begin_nested():
                reader = Reader(prepared.msg, prepared.match.profile, ctx)
                result = dispatch(session, prepared.msg, reader, prepared.match, ctx)
                text = ack.build("AA", prepared.addressing)
                base.update(
                    outcome="AA",
                    ack=text,
                    patient_id=_clean(result.patient_id or "", 64) or None,
                    order_id=result.order_id,
                )
                row_id = messages.record(session, base)
            if accepted is not None and key[2] and reprocess_of is None:
                accepted[key] = messages.Accepted(row_id, text, base["patient_id"], result.order_id)
            return Logged(row_id, "AA", text, prepared.type)
        except Rejection as exc:
            error, code = exc.error, exc.ack_code
        except Invalid as exc:
            error, code = _invalid_error(exc, reader), "AR"
        except NotFound as exc:
            error, code = Hl7Error(204, str(exc), _location(reader, "placer_order_number")), "AE"
        except Conflict as exc:
            dup = exc.field in ("placer_order_number", "accession_number")
            where = _location(reader, exc.field or "")
            error, code = Hl7Error(205 if dup else 207, str(exc), where), "AE"
        except Exception as exc:
            log.exception(
                "HL7 message could not be applied", extra={"control_id": base["control_id"]}
            )
            error, code = Hl7Error(207, f"internal error: {type(exc).__name__}"), "AE"
        pid = prepared.msg.first("PID")
        base["patient_id"] = (_clean(prepared.msg.value(pid, 3, 1), 64) if pid else "") or None
    assert error is not None
    text = ack.build(code, prepared.addressing, error)
    base.update(
        outcome=code,
        ack=text,
        error=_clean(error.message, 1024),
        error_location=error.location[:64] or None,
        error_code=error.code,
    )
    return Logged(messages.record(session, base), code, text, prepared.type)


def dispatch(
    session: Session, msg: Hl7Message, reader: Reader, match: SenderMatch, ctx: OrderContext
) -> Result:
    code, trigger = msg.message_code, msg.trigger
    if code in ("ORM", "OMI"):
        if (code, trigger) not in ORDER_TYPES:
            raise Rejection(
                Hl7Error(201, f"{code}^{trigger} is not accepted (ORM^O01, OMI^O23)", "MSH^1^9^1^2")
            )
        return _orders(session, msg, reader, match, ctx)
    if code == "ADT":
        if trigger in PATIENT_UPDATE:
            return _patient_update(session, reader, match, ctx)
        if trigger in PATIENT_MERGE:
            return _patient_merge(session, reader, match, ctx)
        raise Rejection(
            Hl7Error(
                201,
                f"ADT^{trigger} is not accepted (A01, A04, A08, A28, A31, A34, A40)",
                "MSH^1^9^1^2",
            )
        )
    raise Rejection(
        Hl7Error(200, f"message type {msg.type or '(empty)'} is not accepted", "MSH^1^9^1^1")
    )


# --- orders ------------------------------------------------------------------------


def _orders(
    session: Session, msg: Hl7Message, reader: Reader, match: SenderMatch, ctx: OrderContext
) -> Result:
    orcs = msg.all("ORC")
    if not orcs:
        raise Rejection(Hl7Error(101, "the message has no ORC segment", "ORC"))
    # Segments before the first ORC (PID, PV1, NK1, GT1...) belong to every order;
    # each ORC starts one order group that runs to the next ORC.
    first = orcs[0].index
    header = [s for s in msg.segments if s.index < first]
    result = Result()
    for n, orc in enumerate(orcs):
        end = orcs[n + 1].index if n + 1 < len(orcs) else len(msg.segments) + 1
        group = header + [s for s in msg.segments if orc.index <= s.index < end]
        scoped = reader.scoped(group)
        control = msg.value(orc, 1, 1).upper()
        req = scoped.order_request(match.source)
        result.patient_id = (req.get("patient") or {}).get("id")
        actor = f"hl7:{msg.sending_application} {msg.control_id}"
        if control in ("XO", "SC", "CA", "DC") and not req.get("placer_order_number"):
            scoped.validated(req)  # names the missing placer number (AR 101)
        if control == "NW":
            order, _created = orders.place(session, scoped.validated(req), ctx)
        elif control in ("XO", "SC"):
            order = orders.find_by_placer(session, match.source, req["placer_order_number"])
            if control == "SC" and not _has_order_data(req):
                pass  # a bare status notice from the placer: nothing to change
            else:
                scoped.validated(req)
                order = orders.update(session, order.id, _patch(req), ctx)  # type: ignore[arg-type]
        elif control == "CA":
            order = orders.find_by_placer(session, match.source, req["placer_order_number"])
            order = orders.cancel(session, order.id, reason=f"ORC-1 CA by {actor}")  # type: ignore[arg-type]
        elif control == "DC":
            order = orders.find_by_placer(session, match.source, req["placer_order_number"])
            order = orders.discontinue(session, order.id, reason=f"ORC-1 DC by {actor}")  # type: ignore[arg-type]
        else:
            raise Rejection(
                Hl7Error(
                    103,
                    f"ORC-1 order control {control or '(empty)'!r} is not accepted "
                    "(NW, XO, SC, CA, DC)",
                    f"ORC^{n + 1}^1^1^1",
                )
            )
        if result.order_id is None:
            result.order_id = order.id
    return result


def _has_order_data(req: dict[str, Any]) -> bool:
    return bool((req.get("procedure") or {}) or req.get("scheduled_start") or req.get("modality"))


def _patch(req: dict[str, Any]) -> dict[str, Any]:
    """Only what the message says: absent fields leave the order as it is."""
    patch = {k: v for k, v in req.items() if k not in ("source", "placer_order_number")}
    return patch


# --- patients ----------------------------------------------------------------------


def _patient_changes(reader: Reader) -> dict[str, Any]:
    req = reader.order_request("")
    return {"patient": req.get("patient") or {}, "owner": req.get("owner") or {}}


def _patient_update(
    session: Session, reader: Reader, match: SenderMatch, ctx: OrderContext
) -> Result:
    changes = _patient_changes(reader)
    patient_id = changes["patient"].get("id")
    if not patient_id:
        raise Rejection(Hl7Error(101, "the patient id is missing", _location(reader, "patient.id")))
    changed = patients.update(session, patient_id, changes, ctx, source=match.source)
    return Result(patient_id=patient_id, order_id=changed[0].id if changed else None)


def _patient_merge(
    session: Session, reader: Reader, match: SenderMatch, ctx: OrderContext
) -> Result:
    changes = _patient_changes(reader)
    surviving = changes["patient"].get("id")
    prior, _ = reader.text("merge.prior_patient_id")
    if not surviving:
        raise Rejection(
            Hl7Error(101, "the surviving patient id is missing", _location(reader, "patient.id"))
        )
    if not prior:
        raise Rejection(
            Hl7Error(
                101,
                "the prior patient id (MRG-1) is missing",
                _location(reader, "merge.prior_patient_id"),
            )
        )
    moved = patients.merge(
        session,
        prior,
        surviving,
        ctx,
        changes=changes,
        source=match.source,
        actor=f"hl7:{match.source}",
    )
    return Result(patient_id=surviving, order_id=moved[0].id if moved else None)


# --- reading fields through a profile ----------------------------------------------


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

    def components(self, target: str) -> tuple[list[str], FieldPath | None]:
        for path in self.profile.paths(target):
            for seg in self._segments(path)[:1]:
                if path.component:
                    value = self.msg.value(
                        seg, path.field, path.component, path.subcomponent, path.repetition
                    )
                    comps = [value]
                else:
                    comps = self.msg.components(seg, path.field, path.repetition)
                if any(c.strip() for c in comps):
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
                if value:
                    self.used[target] = path
                    return value, path
        return None, None

    def _leaf(self, seg: Segment, path: FieldPath) -> str:
        return self.msg.value(
            seg, path.field, path.component or 1, path.subcomponent, path.repetition
        ).strip()

    def location(self, target: str) -> str:
        path = self.used.get(target)
        if path is None:
            paths = self.profile.paths(target)
            path = paths[0] if paths else None
        return path.location if path else ""

    # --- the order request -----------------------------------------------------
    def order_request(self, source: str) -> dict[str, Any]:
        t = lambda name: self.text(name)[0]  # noqa: E731
        patient: dict[str, Any] = {
            "id": t("patient.id"),
            "name": t("patient.name"),
            "species": self._species(),
            "breed": self._coded_text("patient.breed"),
            "birth_date": self._date("patient.birth_date"),
            "weight_kg": self._weight(),
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
        }
        return _drop_empty(req)

    def validated(self, req: dict[str, Any]) -> OrderIn:
        if not req.get("placer_order_number"):
            raise Rejection(
                Hl7Error(
                    101, "the placer order number is missing", self.location("placer_order_number")
                )
            )
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

    def _date(self, target: str) -> str | None:
        value, path = self.text(target)
        if not value:
            return None
        m = _TS.match(value)
        if not m or not m.group(3):
            raise Rejection(
                Hl7Error(
                    102, f"{value!r} is not an HL7 date (YYYYMMDD)", path.location if path else ""
                )
            )
        return f"{m.group(1)}-{m.group(2)}-{m.group(3)}"

    def _datetime(self, target: str) -> str | None:
        value, path = self.text(target)
        if not value:
            return None
        m = _TS.match(value)
        if not m or not m.group(3):
            raise Rejection(
                Hl7Error(
                    102,
                    f"{value!r} is not an HL7 time stamp (YYYYMMDDHHMM[SS])",
                    path.location if path else "",
                )
            )
        y, mo, d, h, mi, s, tz = m.groups()
        iso = f"{y}-{mo}-{d}T{h or '00'}:{mi or '00'}:{s or '00'}"
        if tz:
            iso += f"{tz[:3]}:{tz[3:]}"
        try:
            datetime.fromisoformat(iso)
        except ValueError:
            raise Rejection(
                Hl7Error(102, f"{value!r} is not a valid time stamp", path.location if path else "")
            ) from None
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
        factor = {"kg": 1.0, "g": 0.001, "lb": 0.45359237, "[lb_av]": 0.45359237, "lbs": 0.45359237}
        if unit not in factor:
            raise Rejection(
                Hl7Error(
                    103,
                    f"weight unit {unit!r} is not kg, g or lb",
                    self.location("patient.weight_unit"),
                )
            )
        return round(weight * factor[unit], 4)


def _drop_empty(value: Any) -> Any:
    if isinstance(value, dict):
        out = {k: _drop_empty(v) for k, v in value.items()}
        return {k: v for k, v in out.items() if v not in (None, "", {})}
    return value


def _location(reader: Reader | None, target: str) -> str:
    if reader is None or not target:
        return ""
    if target == "owner":
        target = "owner.last_name"
    elif target == "procedure":
        target = "procedure.code"
    return reader.location(target)


def _invalid_error(exc: Invalid, reader: Reader | None) -> Hl7Error:
    first = exc.errors[0] if exc.errors else None
    where = _location(reader, first.field) if first else ""
    missing = bool(first and "required" in first.message)
    return Hl7Error(101 if missing else 102, str(exc), where)
