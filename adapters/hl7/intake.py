"""What each accepted HL7 message does to the core: where an NW becomes an order.

Order messages (ORM^O01, OMI^O23) become ``orders.place`` (ORC-1 NW) or the
placer-number commands ``orders.update_by_placer`` (XO, SC with order data),
``cancel_by_placer`` (CA) and ``discontinue_by_placer`` (DC), one per ORC
group. ADT messages go to ``adapters.hl7.adt``. Anything else is refused.
The caller (``adapters.hl7.apply``) holds the transaction and the log.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from adapters.hl7.ack import Hl7Error
from adapters.hl7.adt import PATIENT_MERGE, PATIENT_UPDATE, patient_merge, patient_update
from adapters.hl7.outcome import Rejection, Touched
from adapters.hl7.parse import Hl7Message
from adapters.hl7.profile import SenderMatch
from adapters.hl7.reader import Reader
from hub.models import Order
from hub.services import orders
from hub.services.orders import OrderContext

ORDER_TYPES = frozenset({("ORM", "O01"), ("OMI", "O23")})
ORDER_CONTROLS = ("NW", "XO", "SC", "CA", "DC")


def dispatch(
    session: Session, msg: Hl7Message, reader: Reader, match: SenderMatch, ctx: OrderContext
) -> Touched:
    """Apply one parsed message by its type (MSH-9)."""
    code, trigger = msg.message_code, msg.trigger
    if code in ("ORM", "OMI"):
        if (code, trigger) not in ORDER_TYPES:
            raise Rejection(
                Hl7Error(201, f"{code}^{trigger} is not accepted (ORM^O01, OMI^O23)", "MSH^1^9^1^2")
            )
        return order_message(session, msg, reader, match, ctx)
    if code == "ADT":
        if trigger in PATIENT_UPDATE:
            return patient_update(session, reader, match, ctx)
        if trigger in PATIENT_MERGE:
            return patient_merge(session, reader, match, ctx)
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


def order_message(
    session: Session, msg: Hl7Message, reader: Reader, match: SenderMatch, ctx: OrderContext
) -> Touched:
    """Each ORC starts one order; all of them apply, or (on the first error) none."""
    orcs = msg.all("ORC")
    if not orcs:
        raise Rejection(Hl7Error(101, "the message has no ORC segment", "ORC"))
    # Segments before the first ORC (PID, PV1, NK1, GT1...) belong to every order;
    # each ORC starts one order group that runs to the next ORC.
    first = orcs[0].index
    header = [s for s in msg.segments if s.index < first]
    actor = f"hl7:{msg.sending_application} {msg.control_id}"
    touched = Touched()
    for n, orc in enumerate(orcs):
        end = orcs[n + 1].index if n + 1 < len(orcs) else len(msg.segments) + 1
        group = header + [s for s in msg.segments if orc.index <= s.index < end]
        scoped = reader.scoped(group)
        control = msg.value(orc, 1, 1).upper()
        req = scoped.order_request(match.source)
        touched.patient_id = (req.get("patient") or {}).get("id")
        if control not in ORDER_CONTROLS:
            raise Rejection(
                Hl7Error(
                    103,
                    f"ORC-1 order control {control or '(empty)'!r} is not accepted "
                    f"({', '.join(ORDER_CONTROLS)})",
                    f"ORC^{n + 1}^1^1^1",
                )
            )
        order = _apply_control(session, control, req, scoped, match.source, actor, ctx)
        if touched.order_id is None:
            touched.order_id = order.id
        if control == "NW" and not (req.get("patient") or {}).get("species"):
            touched.warnings.append(_no_species(scoped, req))
        if control == "NW":
            touched.warnings.extend(_doubtful(scoped, req, ctx))
    return touched


def _doubtful(reader: Reader, req: dict[str, Any], ctx: OrderContext) -> list[Hl7Error]:
    """The warnings a REST client gets for the same order (``orders.warnings``), as ERR
    of severity W: unknown species or procedure code (103), implausible weight (0)."""
    placer = req.get("placer_order_number")
    return [
        Hl7Error(
            0 if w.field == "patient.weight_kg" else 103,
            f"order {placer} accepted: {w.field}: {w.message}",
            reader.location(w.field),
            severity="W",
        )
        for w in orders.warnings(reader.validated(req), ctx.mappings)
    ]


def _no_species(reader: Reader, req: dict[str, Any]) -> Hl7Error:
    """Accepted, but a worklist item without species misleads the device: say so (severity W)."""
    where = reader.location("patient.species")
    read = ", ".join(p.text for p in reader.profile.paths("patient.species")) or "nowhere"
    return Hl7Error(
        101,
        f"order {req.get('placer_order_number')} accepted without species "
        f"(profile {reader.profile.name!r} reads it from {read})",
        where,
        severity="W",
    )


def _apply_control(
    session: Session,
    control: str,
    req: dict[str, Any],
    reader: Reader,
    source: str,
    actor: str,
    ctx: OrderContext,
) -> Order:
    if control == "NW":
        order, _created = orders.place(session, reader.validated(req), ctx)
        return order
    placer = reader.placer_number(req)
    if control == "CA":
        return orders.cancel_by_placer(session, source, placer, reason=f"ORC-1 CA by {actor}")
    if control == "DC":
        return orders.discontinue_by_placer(session, source, placer, reason=f"ORC-1 DC by {actor}")
    if control == "SC" and not _has_order_data(req):
        # a bare status notice from the placer: nothing to change, but the order must exist
        return orders.find_by_placer(session, source, placer)
    reader.validated(req)
    return orders.update_by_placer(session, source, placer, _patch(req), ctx)


def _has_order_data(req: dict[str, Any]) -> bool:
    return bool((req.get("procedure") or {}) or req.get("scheduled_start") or req.get("modality"))


def _patch(req: dict[str, Any]) -> dict[str, Any]:
    """Only what the message says: absent fields leave the order as it is."""
    return {k: v for k, v in req.items() if k not in ("source", "placer_order_number")}
