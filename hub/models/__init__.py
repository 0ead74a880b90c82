"""Storage tables, one module per area; importing this package registers them all.

Request/response shapes live in ``hub/schemas.py``, not here.
"""

from hub.models.core import (
    ApiKey,
    AuditEvent,
    Modality,
    Order,
    OrderStatus,
    OutboxEvent,
    as_utc,
    utcnow,
)
from hub.models.deliveries import Delivery, Source
from hub.models.links import Annotation, Share, StaffSession
from hub.models.messages import InboundMessage
from hub.models.peers import UnknownPeer
from hub.models.routes import DeliveryInstance, Route, RouteWhen
from hub.models.studies import Instance, Mpps, Series, Study
from hub.models.users import SignInFailure, User

__all__ = [
    "ApiKey",
    "AuditEvent",
    "Modality",
    "Order",
    "OrderStatus",
    "OutboxEvent",
    "as_utc",
    "utcnow",
]
__all__ += ["Instance", "Mpps", "Series", "Study"]
__all__ += ["InboundMessage"]
__all__ += ["Delivery", "Source"]
__all__ += ["Annotation", "Share", "StaffSession"]
__all__ += ["UnknownPeer"]
__all__ += ["SignInFailure", "User"]
__all__ += ["DeliveryInstance", "Route", "RouteWhen"]
