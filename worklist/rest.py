"""The DICOM side's own HTTP route: C-ECHO a registered device from the hub.

It lives with the DICOM services because it speaks DICOM (pynetdicom);
``hub.serve.edge_routers`` mounts this router, as it does the HL7 adapter's.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel

from hub.api.auth import Caller, require
from hub.context import Hub
from hub.errors import Conflict, NotFound
from hub.services import events, modalities
from hub.tls import TlsConfigError, client_context
from worklist.echo import echo

router = APIRouter(prefix="/api/v1/modalities", tags=["admin"])
ECHO = require("tech")


class EchoOut(BaseModel):
    ok: bool
    status: int | None
    detail: str
    ms: float


@router.post("/{ae_title}/echo", response_model=EchoOut)
def echo_modality(ae_title: str, request: Request, who: Caller = Depends(ECHO)) -> EchoOut:
    """C-ECHO the registered device at its host and port (the hub calls as its own AE).

    200 whether or not the device answers (``ok``, ``status``, ``detail``,
    ``ms``); 404 for a title not registered; 409 when it has no host or port.
    """
    hub: Hub = request.app.state.hub
    with hub.db.read_session() as s:
        row = modalities.get(s, ae_title)
        if row is None:
            raise NotFound(f"modality {ae_title!r} is not registered")
        if not row.host or not row.port:
            raise Conflict(f"modality {ae_title!r} has no host and port to call", field="host")
        host, port, tls = row.host, row.port, row.tls
    try:
        ctx = client_context(hub.settings) if tls else None
    except TlsConfigError as exc:
        return EchoOut(ok=False, status=None, detail=str(exc), ms=0.0)
    result = echo(hub.settings.dicom_ae, ae_title, host, port, tls=ctx)
    with hub.db.session() as s:
        events.audit(
            s, who.actor, "modality.echo", "modality", ae_title, {"ok": result.ok, "ms": result.ms}
        )
    return EchoOut(ok=result.ok, status=result.status, detail=result.detail, ms=result.ms)
