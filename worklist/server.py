"""The hub's DICOM door: one pynetdicom AE serving a list of pluggable services.

A service is any object with ``add_contexts(ae)`` (the presentation contexts
it accepts) and ``handlers()`` (its pynetdicom event handlers): Verification,
the Modality Worklist, Storage and MPPS. pynetdicom runs one thread per
association; handlers call the synchronous services in ``hub/`` directly.
Settings that concern every service (the largest PDU we accept, the
association cap) are made once, on the AE, in ``DicomDoor.make_ae``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable
from typing import Protocol

from pynetdicom import AE, _config, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import ThreadedAssociationServer

from hub.context import Hub
from hub.services import modalities
from worklist import status
from worklist.mpps import MppsService
from worklist.mwl import WorklistService
from worklist.storage import StorageService

log = logging.getLogger("worklist.server")

# The largest P-DATA PDU we accept (DCMTK's largest send PDU); pynetdicom's
# default is 16382. At 16 kB a 0.5 MB CT slice is 32 PDUs through pynetdicom's
# state machine, and that dominates C-STORE (docs/performance.md).
MAXIMUM_PDU_SIZE = 131072
# Associations open at once; the next device is refused until one ends.
MAXIMUM_ASSOCIATIONS = 32
# How long a stopping hub lets open associations finish before aborting them.
STOP_GRACE_S = 10.0
# No AE title is 17 characters long: the "nobody is registered" allow-list.
_NOBODY = "-" * 17


class DicomService(Protocol):
    def add_contexts(self, ae: AE) -> None: ...

    def handlers(self) -> list[tuple]: ...


class NoDelayServer(ThreadedAssociationServer):
    """Sets TCP_NODELAY on every accepted socket: pynetdicom leaves Nagle on,
    and a DIMSE message written in pieces then waits ~40 ms for a delayed ACK."""

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        sock, addr = super().get_request()
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock, addr


class HubAE(AE):
    """An AE whose calling-AE allow-list is the registered devices, read per association.

    pynetdicom only knows a fixed list; devices are registered at run time
    (``PUT /api/v1/modalities/{ae}``), so the list is looked up when asked for.
    """

    def __init__(self, ae_title: str, registered: Callable[[], list[str]] | None) -> None:
        self._registered = registered
        super().__init__(ae_title=ae_title)

    @property
    def require_calling_aet(self) -> list[str]:
        if self._registered is None:
            return self._require_calling_aet
        return self._registered() or [_NOBODY]

    @require_calling_aet.setter
    def require_calling_aet(self, ae_titles: list[str]) -> None:
        # pynetdicom's own setter, which checks the titles; taken from the class
        # dict because a type checker sees a property read off a class as a function.
        plain: property = vars(AE)["require_calling_aet"]
        plain.__set__(self, ae_titles)


class VerificationService:
    """C-ECHO: "is the hub there?" from any device."""

    def add_contexts(self, ae: AE) -> None:
        ae.add_supported_context(Verification)

    def handlers(self) -> list[tuple]:
        return [(evt.EVT_C_ECHO, _on_echo)]


def _on_echo(event: evt.Event) -> int:
    return status.SUCCESS


def _on_rejected(event: evt.Event) -> None:
    log.warning(
        "association rejected",
        extra={"calling_ae": str(event.assoc.requestor.ae_title).strip()},
    )


def default_services(hub: Hub) -> list[DicomService]:
    """Verification, Modality Worklist, Storage and MPPS."""
    return [VerificationService(), WorklistService(hub), StorageService(hub), MppsService(hub)]


class DicomDoor:
    name = "dicom"

    def __init__(self, hub: Hub, services: list[DicomService] | None = None) -> None:
        self.hub = hub
        self.services = services if services is not None else default_services(hub)
        self.server: ThreadedAssociationServer | None = None
        self._thread: threading.Thread | None = None

    def registered_titles(self) -> list[str]:
        try:
            with self.hub.db.read_session() as s:
                return modalities.ae_titles(s)
        except Exception:  # no database, no way to tell who is known: refuse, don't crash
            log.exception("could not read the registered devices")
            return []

    def make_ae(self) -> AE:
        # Pretty-printing every identifier for a log nobody reads costs ms per item.
        _config.LOG_REQUEST_IDENTIFIERS = False
        _config.LOG_RESPONSE_IDENTIFIERS = False
        s = self.hub.settings
        ae = HubAE(
            s.dicom_ae, self.registered_titles if s.dicom_allow_unknown_ae is False else None
        )
        # An association addressed to another AE title is a misconfigured device
        # (or someone probing): refused with A-ASSOCIATE-RJ, "called AE title not
        # recognised", rather than answered as if it had reached its target.
        ae.require_called_aet = True
        ae.maximum_associations = MAXIMUM_ASSOCIATIONS
        ae.maximum_pdu_size = MAXIMUM_PDU_SIZE
        for service in self.services:
            service.add_contexts(ae)
        return ae

    def handlers(self) -> list[tuple]:
        bound: list[tuple] = [(evt.EVT_REJECTED, _on_rejected)]
        for service in self.services:
            bound.extend(service.handlers())
        return bound

    async def start(self) -> int:
        s = self.hub.settings
        ae = self.make_ae()
        self.server = ae.make_server(
            (s.dicom_host, s.dicom_port),
            evt_handlers=self.handlers(),
            server_class=NoDelayServer,
        )
        # make_server() does not register the server with its AE, but
        # shutdown() expects it there (as start_server() would have done).
        ae._servers.append(self.server)
        self._thread = threading.Thread(
            target=self.server.serve_forever, name="dicom-acceptor", daemon=True
        )
        self._thread.start()
        return self.server.server_address[1]

    async def stop(self) -> None:
        if self.server is not None:
            await asyncio.to_thread(self.stop_blocking)

    def stop_blocking(self, grace: float = STOP_GRACE_S) -> None:
        """Stop accepting, let open associations finish for ``grace`` seconds, abort the rest."""
        server, self.server = self.server, None
        if server is None:
            return
        server.shutdown()
        deadline = time.monotonic() + grace
        while server.active_associations and time.monotonic() < deadline:
            time.sleep(0.05)
        left = server.active_associations
        for assoc in left:
            log.warning(
                "aborting association at shutdown",
                extra={"calling_ae": str(assoc.requestor.ae_title).strip()},
            )
            assoc.abort()
        if self._thread is not None:
            self._thread.join(timeout=5)
