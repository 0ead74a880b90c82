"""ADT messages: a patient registered or updated (open orders follow), two ids merged.

Both speak only of the patient and owner, read with the sender's profile,
and leave the orders to ``hub.services.patients``.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from adapters.hl7.ack import Hl7Error
from adapters.hl7.outcome import Rejection, Touched
from adapters.hl7.profile import SenderMatch
from adapters.hl7.reader import Reader
from hub.services import patients
from hub.services.orders import OrderContext

PATIENT_UPDATE = frozenset({"A01", "A04", "A08", "A28", "A31"})
PATIENT_MERGE = frozenset({"A34", "A40"})


def patient_update(
    session: Session, reader: Reader, match: SenderMatch, ctx: OrderContext
) -> Touched:
    """A01/A04/A08/A28/A31: every open order of the animal takes the new details."""
    changes = _patient_changes(reader)
    patient_id = changes["patient"].get("id")
    if not patient_id:
        raise Rejection(Hl7Error(101, "the patient id is missing", reader.location("patient.id")))
    changed = patients.update(session, patient_id, changes, ctx, source=match.source)
    return Touched(patient_id=patient_id, order_id=changed[0].id if changed else None)


def patient_merge(
    session: Session, reader: Reader, match: SenderMatch, ctx: OrderContext
) -> Touched:
    """A34/A40: the prior id (MRG-1) is retired; its open orders and studies move over."""
    changes = _patient_changes(reader)
    surviving = changes["patient"].get("id")
    prior, _ = reader.text("merge.prior_patient_id")
    if not surviving:
        raise Rejection(
            Hl7Error(101, "the surviving patient id is missing", reader.location("patient.id"))
        )
    if not prior:
        raise Rejection(
            Hl7Error(
                101,
                "the prior patient id (MRG-1) is missing",
                reader.location("merge.prior_patient_id"),
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
    return Touched(patient_id=surviving, order_id=moved[0].id if moved else None)


def _patient_changes(reader: Reader) -> dict[str, Any]:
    req = reader.order_request("")
    return {"patient": req.get("patient") or {}, "owner": req.get("owner") or {}}
