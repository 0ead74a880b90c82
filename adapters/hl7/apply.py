"""Applying prepared messages in the writer's transaction, and logging each with its ACK.

Each message is applied inside a SAVEPOINT together with its log row, so a
message is either fully applied and logged AA, or not applied at all and
logged AE/AR with the reason; a bad message never spoils the others of its
batch. A resend of an accepted message (same sender, facility and MSH-10, and
the same text but for MSH-7) is answered with the stored ACK and changes
nothing; the same MSH-10 with another text is a new message (counters reset).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from adapters.hl7 import ack
from adapters.hl7.ack import Hl7Error
from adapters.hl7.intake import dispatch
from adapters.hl7.outcome import Rejection
from adapters.hl7.prepare import Prepared, clean
from adapters.hl7.reader import Reader
from hub.errors import Conflict, Invalid, NotFound
from hub.services import messages
from hub.services.orders import OrderContext

log = logging.getLogger("adapters.hl7")

# Unique keys whose clash is HL7 205 "duplicate key identifier" (else 207).
_DUPLICATE_KEYS = frozenset({"placer_order_number", "accession_number", "study_instance_uid"})


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


def apply(
    session: Session,
    prepared: Prepared,
    ctx: OrderContext,
    *,
    reprocess_of: int | None = None,
    accepted: dict[messages.Key, list[messages.Accepted]] | None = None,
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
    digest = messages.resend_digest(prepared.raw)
    if prepared.error is None and reprocess_of is None:
        if accepted is None:
            accepted = messages.accepted_among(session, {key})
        earlier = messages.resend_of(accepted.get(key, []), digest)
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
                touched = dispatch(session, prepared.msg, reader, prepared.match, ctx)
                warning = touched.warnings[0] if touched.warnings else None
                text = ack.build("AA", prepared.addressing, warning=warning)
                base.update(
                    outcome="AA",
                    ack=text,
                    patient_id=clean(touched.patient_id or "", 64) or None,
                    order_id=touched.order_id,
                )
                if warning is not None:
                    base.update(
                        error=clean("; ".join(w.message for w in touched.warnings), 1024),
                        error_location=warning.location[:64] or None,
                    )
                    log.warning(
                        "HL7 order accepted with a warning",
                        extra={"control_id": base["control_id"], "warning": base["error"]},
                    )
                row_id = messages.record(session, base)
            if accepted is not None and key[2] and reprocess_of is None:
                accepted.setdefault(key, []).append(
                    messages.Accepted(row_id, text, base["patient_id"], touched.order_id, digest)
                )
            return Logged(row_id, "AA", text, prepared.type)
        except Rejection as exc:
            error, code = exc.error, exc.ack_code
        except Invalid as exc:
            error, code = _invalid_error(exc, reader), "AR"
        except NotFound as exc:
            error, code = Hl7Error(204, str(exc), _location(reader, "placer_order_number")), "AE"
        except Conflict as exc:
            duplicate = exc.field in _DUPLICATE_KEYS
            where = _location(reader, exc.field or "")
            error, code = Hl7Error(205 if duplicate else 207, str(exc), where), "AE"
        except Exception as exc:
            log.exception(
                "HL7 message could not be applied", extra={"control_id": base["control_id"]}
            )
            error, code = Hl7Error(207, f"internal error: {type(exc).__name__}"), "AE"
        pid = prepared.msg.first("PID")
        base["patient_id"] = (clean(prepared.msg.value(pid, 3, 1), 64) if pid else "") or None
    assert error is not None
    text = ack.build(code, prepared.addressing, error)
    base.update(
        outcome=code,
        ack=text,
        error=clean(error.message, 1024),
        error_location=error.location[:64] or None,
        error_code=error.code,
    )
    return Logged(messages.record(session, base), code, text, prepared.type)


def _key(p: Prepared) -> messages.Key:
    return (p.sender, p.facility, p.control_id)


def _location(reader: Reader | None, target: str) -> str:
    if reader is None or not target:
        return ""
    return reader.location(target)


def _invalid_error(exc: Invalid, reader: Reader | None) -> Hl7Error:
    first = exc.errors[0] if exc.errors else None
    where = _location(reader, first.field) if first else ""
    missing = bool(first and "required" in first.message)
    return Hl7Error(101 if missing else 102, str(exc), where)
