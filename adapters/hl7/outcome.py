"""What applying one HL7 message came to: the records it touched, or why it was refused.

The message handlers (``intake``, ``adt``) and the field reader return or
raise these; ``apply`` turns them into the log row and the ACK.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from adapters.hl7.ack import Hl7Error


class Rejection(Exception):
    """The message cannot be applied as sent; ``ack_code`` AR or AE."""

    def __init__(self, error: Hl7Error, ack_code: str = "AR") -> None:
        super().__init__(error.message)
        self.error = error
        self.ack_code = ack_code


@dataclass
class Touched:
    """The patient and the (first) order a message changed, recorded on its log row,
    and what was accepted but worth telling the sender (ACK MSA-3, ERR severity W)."""

    patient_id: str | None = None
    order_id: int | None = None
    warnings: list[Hl7Error] = field(default_factory=list)
