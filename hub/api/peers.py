"""Who called the DICOM and HL7 doors without being registered (admin).

The first-run mode (docs/interface.md) lets unknown callers in and notes them;
the closed mode refuses and notes them. These lists are what a clinic's IT
person registers from: callers registered since are left out.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel

from hub.api.auth import Caller, require
from hub.models import UnknownPeer
from hub.schemas import Page, UtcDateTime
from hub.services import modalities, peers, sources

router = APIRouter(prefix="/api/v1", tags=["admin"])
ADMIN = require()


class _Seen(BaseModel):
    address: str
    first_seen: UtcDateTime
    last_seen: UtcDateTime
    count: int
    refused: bool = False  # what the door did the last time


class UnknownModalityOut(_Seen):
    ae_title: str


class UnknownSenderOut(_Seen):
    application: str
    facility: str


def _seen(row: UnknownPeer) -> dict[str, object]:
    return {
        "address": row.address,
        "first_seen": row.first_seen,
        "last_seen": row.last_seen,
        "count": row.count,
        "refused": row.refused,
    }


@router.get("/modalities/unknown", response_model=Page[UnknownModalityOut])
def unknown_modalities(request: Request, who: Caller = Depends(ADMIN)) -> Page[UnknownModalityOut]:
    """Calling AE titles that associated (or tried to) without being registered."""
    with request.app.state.hub.db.read_session() as s:
        rows = peers.seen(s, "dicom", exclude=modalities.ae_titles(s))
        items = [UnknownModalityOut(ae_title=r.name, **_seen(r)) for r in rows]
    return Page[UnknownModalityOut](items=items)


@router.get("/sources/unknown", response_model=Page[UnknownSenderOut])
def unknown_senders(request: Request, who: Caller = Depends(ADMIN)) -> Page[UnknownSenderOut]:
    """HL7 senders (MSH-3, MSH-4, address) that no source's ``hl7_senders`` allows."""
    with request.app.state.hub.db.read_session() as s:
        entries = [e for src in sources.list_all(s) for e in src.hl7_senders]
        rows = [
            r
            for r in peers.seen(s, "hl7")
            if not any(peers.sender_matches(e, r.name, r.facility, r.address) for e in entries)
        ]
        items = [
            UnknownSenderOut(application=r.name, facility=r.facility, **_seen(r)) for r in rows
        ]
    return Page[UnknownSenderOut](items=items)
