"""ezyVet (IDEXX) through its Standard PACS Interface: the hub hosts the partner side.

ezyVet pushes imaging requests to the hub (partner.py, read by request.py,
applied by intake.py), and the hub calls ezyVet back through the outbox
(results.py over client.py). config.py declares the source kind; catalog.py
is what ezyVet syncs; access.py the tokens the hub gives ezyVet. Settings,
URLs and what is verified against ezyVet's docs: docs/adapters.md "ezyVet".
"""

from adapters.ezyvet.config import KIND as SOURCE_KIND
from adapters.ezyvet.partner import router
from adapters.ezyvet.results import KINDS as DELIVERY_KINDS

__all__ = ["DELIVERY_KINDS", "SOURCE_KIND", "router"]
