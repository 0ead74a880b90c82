"""Provet Cloud (Nordhealth): announce-and-pull orders, status and link back.

Provet announces a diagnostic imaging worklist item by webhook (triggers
6/7/8); the hub stores a pull job and answers 200 (webhook.py); the job
reads the item and what it points at through the REST API (api.py,
fetch.py), maps it (mapping.py, mappings/vendors/provet.yaml) and creates,
updates or cancels the order (pull.py); results go back by PATCH
(status.py). Settings and the webhook URL: config.py. docs/adapters.md
"Provet Cloud" lists what is verified and what is a setting.
"""

from __future__ import annotations

from adapters.provet import config, pull, status
from adapters.provet.webhook import router
from hub.services.deliveries.kinds import DeliveryKind

SOURCE_KIND = config.KIND
DELIVERY_KINDS: tuple[DeliveryKind, ...] = (pull.KIND, status.KIND)

__all__ = ["DELIVERY_KINDS", "SOURCE_KIND", "router"]
