"""The HL7 door's own HTTP routes: reload the profiles, run a logged message again.

They live with the adapter because both mean reading HL7 profiles; the
core's message log (``hub.api.messages``) only lists and shows.
``hub.serve.edge_routers`` mounts this router.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel

from adapters.hl7 import current
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

router = APIRouter(tags=["hl7 messages"])

ADMIN = require()


class ProfileOut(BaseModel):
    name: str
    description: str
    versions: list[str]  # MSH-12 versions it serves for senders nobody names
    senders: list[str]  # "APPLICATION[/FACILITY] -> source"
    outbound_version: str
    outbound_patient_name: str


class ProfilesOut(BaseModel):
    directory: str
    profiles: list[ProfileOut]


@router.post("/api/v1/hl7/profiles/reload", response_model=ProfilesOut)
def reload_profiles(request: Request, who: Caller = Depends(ADMIN)) -> ProfilesOut:
    """Read the profile files again and use them for the next message, without a restart.

    A file with a mistake is a 422 naming the file and the entry; the profiles
    in use then stay as they were.
    """
    hub: Hub = request.app.state.hub
    directory = profiles_dir(hub).resolve()
    try:
        loaded = current.load(directory)
    except MappingError as exc:
        raise HTTPException(422, f"HL7 profiles not reloaded, the old ones stay: {exc}") from None
    names = sorted(loaded.by_name)
    with hub.db.session() as s:
        events.audit(s, who.actor, "reload", "hl7_profiles", "all", {"profiles": names})
    return ProfilesOut(
        directory=str(directory),
        profiles=[
            ProfileOut(
                name=p.name,
                description=p.description.strip(),
                versions=list(p.versions),
                senders=[f"{a}{'/' + f if f else ''} -> {src}" for a, f, src in p.senders],
                outbound_version=p.outbound.version,
                outbound_patient_name=p.outbound.patient_name,
            )
            for p in (loaded.by_name[n] for n in names)
        ],
    )


@router.post("/api/v1/messages/{message_id}/reprocess", status_code=201, response_model=MessageOut)
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
