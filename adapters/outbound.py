"""Results out: which adapter sends which result kind, wired into one delivery worker."""

from __future__ import annotations

from adapters.hl7.sender import Hl7Sender
from adapters.webhook import WebhookSender
from hub.context import Hub
from hub.models.deliveries import ResultKind
from hub.services.deliveries import DeliveryWorker, Sender


def senders(timeout: float) -> dict[str, Sender]:
    hl7 = Hl7Sender(timeout)
    return {
        ResultKind.WEBHOOK: WebhookSender(timeout),
        ResultKind.HL7_ORU: hl7,
        ResultKind.HL7_ORM_STATUS: hl7,
    }


def delivery_worker(hub: Hub) -> DeliveryWorker:
    """The worker every ``vethub serve`` runs (start after the doors, stop before them)."""
    return DeliveryWorker(hub.db, hub.settings, senders(hub.settings.delivery_timeout_seconds))
