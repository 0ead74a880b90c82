"""The hub's DICOM door: one pynetdicom AE serving Verification (and more).

pynetdicom runs one thread per association; handlers call the synchronous
services in ``hub/`` directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading

from pynetdicom import AE, _config, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import ThreadedAssociationServer

from hub.context import Hub

log = logging.getLogger("worklist.server")


class NoDelayServer(ThreadedAssociationServer):
    """Sets TCP_NODELAY on every accepted socket: pynetdicom leaves Nagle on,
    and a DIMSE message written in pieces then waits ~40 ms for a delayed ACK."""

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        sock, addr = super().get_request()
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock, addr


def _on_echo(event: evt.Event) -> int:
    return 0x0000


class DicomDoor:
    name = "dicom"

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.server: ThreadedAssociationServer | None = None
        self._thread: threading.Thread | None = None

    def make_ae(self) -> AE:
        # Pretty-printing every identifier for a log nobody reads costs ms per item.
        _config.LOG_REQUEST_IDENTIFIERS = False
        _config.LOG_RESPONSE_IDENTIFIERS = False
        ae = AE(ae_title=self.hub.settings.dicom_ae)
        ae.add_supported_context(Verification)
        return ae

    def handlers(self) -> list[tuple]:
        return [(evt.EVT_C_ECHO, _on_echo)]

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
            await asyncio.to_thread(self.server.shutdown)
