"""Upstream DICOM worklist (``kind: upstream-mwl``): a practice system that serves its
own Modality Worklist (IDEXX Cornerstone and others), polled by the hub as SCU.

Its items become orders of the source, kept in step as the list changes; the
hub's own worklist then serves them to the devices behind it, beside the
HL7/REST orders. See docs/adapters.md "Upstream DICOM worklist".
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from adapters.upstream_mwl.config import DEFAULTS, KEY, check
from adapters.upstream_mwl.poll import NAME, Poller
from hub.services.deliveries.kinds import DeliveryKind
from hub.services.source_kinds import SourceKind

if TYPE_CHECKING:
    from hub.context import Hub
    from hub.jobs import Jobs

SOURCE_KIND = SourceKind(NAME, KEY, check=check, defaults=DEFAULTS)
# Nothing goes back: the upstream worklist is read, never written.
DELIVERY_KINDS: tuple[DeliveryKind, ...] = ()
# How often the job looks for a source whose interval is up (interval_s is at least 10).
TICK_S = 10


def schedule(jobs: Jobs, hub: Hub) -> Poller:
    """Add the poll to the hub's timed jobs (hub/serve.py)."""
    poller = Poller(hub)
    jobs.add("upstream_mwl_poll", poller.tick, seconds=TICK_S)
    return poller
