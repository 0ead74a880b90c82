"""The HL7 door's own HTTP route: run a logged message again after a profile fix.

It lives with the adapter because re-running means parsing HL7 and reading
it through the profiles; the core's message log (``hub.api.messages``) only
lists and shows. ``hub.serve.edge_routers`` mounts this router.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Request

from adapters.hl7.apply import apply
from adapters.hl7.prepare import prepare_text
from adapters.hl7.profile import load_profiles
from adapters.hl7.server import profiles_dir, registered_sources
from hub.api.auth import Caller, require
from hub.api.messages import MessageOut, to_out
from hub.api.params import RowId
from hub.context import Hub
from hub.mappings import MappingError
from hub.services import events, messages

router = APIRouter(prefix="/api/v1/messages", tags=["hl7 messages"])

ADMIN = require()


@router.post("/{message_id}/reprocess", status_code=201, response_model=MessageOut)
def reprocess_message(
    message_id: RowId, request: Request, who: Caller = Depends(ADMIN)
) -> MessageOut:
    """Run the stored message again through the profiles as they are now; a new row records it.

    The profile files are read afresh, so a fix shows without restarting the hub.
    """
    hub: Hub = request.app.state.hub
    try:
        profiles = load_profiles(profiles_dir(hub))
    except MappingError as exc:
        raise HTTPException(409, f"the HL7 profiles cannot be loaded: {exc}") from None
    with hub.db.session() as s:
        original = messages.get(s, message_id)
        prepared = prepare_text(original.raw, profiles, registered_sources(s))
        logged = apply(s, prepared, hub.orders, reprocess_of=message_id)
        events.audit(s, who.actor, "reprocess", "hl7_message", message_id, {"new": logged.id})
        return to_out(messages.get(s, logged.id))
