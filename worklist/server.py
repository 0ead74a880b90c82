"""The hub's DICOM door: one pynetdicom AE serving a list of pluggable services.

A service is any object with ``add_contexts(ae)`` (the presentation contexts
it accepts) and ``handlers()`` (its pynetdicom event handlers): Verification,
the Modality Worklist, Storage and MPPS. pynetdicom runs one thread per
association; handlers call the synchronous services in ``hub/`` directly.
Settings that concern every service (the largest PDU we accept, the
association limits, who may call) are made once, on the AE, in
``DicomDoor.make_ae``; the same AE serves the plain port and, when
``VETHUB_DICOM_TLS_PORT`` is set, the TLS port.

Hostile networks (issue #9): a connection must send its A-ASSOCIATE-RQ within
``dicom_artim_seconds`` (pynetdicom's ACSE timeout and ARTIM timer, plus a
socket timeout for a request that stalls half-sent, and the TLS handshake);
one address holds at most ``dicom_max_associations_per_peer`` connections;
only connections that have asked for an association count against
``dicom_max_associations``, so silent sockets cannot crowd out real devices,
and until a connection's first bytes arrive it is a sleeping thread, not a
pynetdicom association (whose reactor polls every millisecond).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import selectors
import socket
import ssl
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from pynetdicom import AE, _config, evt
from pynetdicom.association import Association
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import RequestHandler, ThreadedAssociationServer

from hub.context import Hub
from hub.services import modalities, peers
from worklist import status
from worklist.mpps import MppsService
from worklist.mwl import WorklistService
from worklist.qr import QueryRetrieveService
from worklist.storage import StorageService

log = logging.getLogger("worklist.server")

# The largest P-DATA PDU we accept (DCMTK's largest send PDU); pynetdicom's
# default is 16382. At 16 kB a 0.5 MB CT slice is 32 PDUs through pynetdicom's
# state machine, and that dominates C-STORE (docs/performance.md).
MAXIMUM_PDU_SIZE = 131072
# How long a stopping hub lets open associations finish before aborting them.
STOP_GRACE_S = 10.0
# The registered AE titles are re-read at most this often (not per association).
TITLES_TTL_S = 2.0
# One log line per caller per this many seconds for repeated refusals/sightings.
LOG_EVERY_S = 30.0
# A-ASSOCIATE-RJ: rejected-permanent, service user, calling AE title not recognised.
_CALLING_AE_UNKNOWN = (0x01, 0x01, 0x03)


class DicomService(Protocol):
    def add_contexts(self, ae: AE) -> None: ...

    def handlers(self) -> list[tuple]: ...


class _Throttle:
    """``due(key)`` is true at most once per ``every`` s per key: bounded logs under a flood."""

    def __init__(self, every: float = LOG_EVERY_S) -> None:
        self.every = every
        self._last: dict[object, float] = {}
        self._lock = threading.Lock()

    def due(self, key: object) -> bool:
        now = time.monotonic()
        with self._lock:
            if now - self._last.get(key, -1e18) < self.every:
                return False
            if len(self._last) > 10_000:
                self._last.clear()
            self._last[key] = now
            return True


class PeerSlots:
    """Open connections per peer address, shared by the plain and TLS listeners."""

    def __init__(self, per_peer: int) -> None:
        self.per_peer = per_peer
        self._open: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._logs = _Throttle()

    def take(self, address: str) -> bool:
        with self._lock:
            if self._open[address] >= self.per_peer:
                refused = True
            else:
                self._open[address] += 1
                refused = False
        if refused and self._logs.due(address):
            log.warning(
                "connection refused: too many from one address",
                extra={"address": address, "limit": self.per_peer},
            )
        return not refused

    def give_back(self, address: str) -> None:
        with self._lock:
            self._open[address] -= 1
            if self._open[address] <= 0:
                del self._open[address]

    def open_from(self, address: str) -> int:
        with self._lock:
            return self._open[address]


@dataclass(frozen=True)
class DoorLimits:
    """What every listener of the door enforces before an association exists."""

    slots: PeerSlots
    backlog: int
    artim_s: float


class AssociationHandler(RequestHandler):
    """pynetdicom's handler, except that it waits for the association to end,
    so the server knows when the peer's connection slot is free again.

    While it waits it also enforces ARTIM on a request that trickles in a
    byte at a time: pynetdicom's own timeout then waits for its reader, which
    each byte keeps busy, so the connection is cut here instead.
    """

    server: DoorServer

    def handle(self) -> None:
        assoc = self._create_association()
        evt.trigger(assoc, evt.EVT_CONN_OPEN, {"address": self.client_address})
        assoc.start()
        assoc.join(self.server.artim_left())
        if assoc.is_alive() and not _requested(assoc):
            self.server._note(
                "connection closed: A-ASSOCIATE-RQ not complete within ARTIM",
                self.client_address[0],
            )
            with contextlib.suppress(OSError):
                self.request.shutdown(socket.SHUT_RDWR)
        assoc.join()


class DoorServer(ThreadedAssociationServer):
    """An association server with the door's limits.

    Sets TCP_NODELAY on every accepted socket (pynetdicom leaves Nagle on, and
    a DIMSE message written in pieces then waits ~40 ms for a delayed ACK);
    listens with ``backlog``; refuses a peer address beyond its connection
    cap at once; and does the TLS handshake in the connection's own thread
    under the ARTIM bound (pynetdicom does it in the accepting thread, where
    one silent client stops every other from being accepted).
    """

    # The per-connection threads live as long as their association; a stopping
    # door aborts those itself (DicomDoor.stop_blocking) rather than joining them.
    daemon_threads = True
    block_on_close = False

    def __init__(self, *args: Any, limits: DoorLimits, **kwargs: Any) -> None:
        self.limits = limits
        self._logs = _Throttle()
        # Connections not yet handed to pynetdicom, closed at once by shutdown().
        self._waiting: set[socket.socket] = set()
        self._waiting_lock = threading.Lock()
        self._stopping = False
        # When ARTIM ends for the connection this thread serves.
        self._deadline = threading.local()
        self.request_queue_size = limits.backlog  # read by listen() in super().__init__
        kwargs.setdefault("request_handler", AssociationHandler)
        super().__init__(*args, **kwargs)

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        assert self.socket is not None
        sock, addr = self.socket.accept()
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # Until the A-ASSOCIATE-RQ is in, no read or write may wait longer than
        # ARTIM (a request stalled half-way would otherwise hold its thread).
        sock.settimeout(self.limits.artim_s)
        if self.ssl_context:
            sock = self.ssl_context.wrap_socket(
                sock, server_side=True, do_handshake_on_connect=False
            )
        return sock, addr

    def verify_request(self, request: Any, client_address: Any) -> bool:
        return self.limits.slots.take(client_address[0])

    def process_request(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request(request, client_address)
        except BaseException:  # no thread started (out of threads): the slot is free again
            self.limits.slots.give_back(client_address[0])
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            if self._opened(request, client_address[0]):
                self.finish_request(request, client_address)
            else:
                self.shutdown_request(request)
        except Exception:
            self.handle_error(request, client_address)
            self.shutdown_request(request)
        finally:
            self.limits.slots.give_back(client_address[0])

    def _opened(self, request: Any, address: str) -> bool:
        """The TLS handshake, then the first bytes of the A-ASSOCIATE-RQ, within ARTIM.

        Until then a connection is one sleeping thread, not a pynetdicom
        association whose reactor polls its socket every millisecond (200
        silent sockets would cost the whole process its CPU).
        """
        with self._waiting_lock:
            if self._stopping:
                return False
            self._waiting.add(request)
        try:
            spoke = self._first_bytes(request, address)
        finally:
            with self._waiting_lock:
                self._waiting.discard(request)
        return spoke and not self._stopping

    def artim_left(self) -> float:
        """Seconds left of ARTIM for the connection served by the calling thread."""
        return max(self._deadline.at - time.monotonic(), 0.0)

    def _first_bytes(self, request: socket.socket, address: str) -> bool:
        self._deadline.at = deadline = time.monotonic() + self.limits.artim_s
        if isinstance(request, ssl.SSLSocket):
            try:
                request.do_handshake()
            except (OSError, ssl.SSLError) as exc:
                self._note("TLS handshake failed", address, str(exc)[:200])
                return False
            if request.pending():
                return True
        with selectors.DefaultSelector() as waiting:
            waiting.register(request, selectors.EVENT_READ)
            if waiting.select(max(deadline - time.monotonic(), 0.0)):
                return True
        self._note("connection closed: no A-ASSOCIATE-RQ within ARTIM", address)
        return False

    def shutdown(self) -> None:
        """Stop accepting, and close the connections still waiting to speak."""
        super().shutdown()
        with self._waiting_lock:
            self._stopping = True
            waiting = list(self._waiting)
        for sock in waiting:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _note(self, message: str, address: str, error: str = "") -> None:
        if self._logs.due((message, address)):
            log.warning(message, extra={"address": address, "error": error})


def _requested(assoc: Association) -> bool:
    """Whether the peer has sent its A-ASSOCIATE-RQ (before that it is only a connection)."""
    return assoc.requestor.primitive is not None


def _expire_artim(assoc: Association) -> None:
    """Close a connection that never asked for an association, as ARTIM would.

    An A-ABORT is no event for that state (pynetdicom raises InvalidEventError).
    """
    assoc.dul.artim_timer.timeout = 0


class HubAE(AE):
    """An AE whose association cap counts associations, not connections.

    pynetdicom counts every acceptor thread, including connections that have
    sent nothing yet; 200 silent sockets then refused real devices until ARTIM
    ended them. Here only those that sent an A-ASSOCIATE-RQ count.
    """

    @property
    def active_associations(self) -> list[Association]:
        return [a for a in super().active_associations if not a.is_acceptor or _requested(a)]


class RegisteredTitles:
    """The calling AE titles under /api/v1/modalities, re-read at most every ``ttl`` s.

    None means they could not be read: callers then treat everyone as unknown
    and the first-run mode as over (refuse rather than open up on a DB fault).
    """

    def __init__(self, read: Callable[[], list[str]], ttl: float = TITLES_TTL_S) -> None:
        self._read = read
        self.ttl = ttl
        self._lock = threading.Lock()
        self._at = -1e18
        self._titles: frozenset[str] | None = None

    def get(self) -> frozenset[str] | None:
        with self._lock:
            if time.monotonic() - self._at >= self.ttl:
                try:
                    self._titles = frozenset(t.strip() for t in self._read())
                except Exception:
                    log.exception("could not read the registered devices")
                    self._titles = None
                self._at = time.monotonic()
            return self._titles


class CallerCheck:
    """Who may associate (``VETHUB_DICOM_ALLOW_UNKNOWN_AE``, peers.admits), on EVT_REQUESTED.

    Every unregistered calling AE is noted in ``unknown_peers`` (throttled),
    let in or not, so the clinic can register what it sees. A refusal is an
    A-ASSOCIATE-RJ, calling AE title not recognised.
    """

    def __init__(
        self,
        setting: bool | None,
        titles: RegisteredTitles,
        sightings: peers.Sightings,
        idle_s: float,
    ) -> None:
        self.setting = setting
        self.titles = titles
        self.sightings = sightings
        self.idle_s = idle_s
        self._logs = _Throttle()

    def __call__(self, event: evt.Event) -> None:
        assoc = event.assoc
        _settle_socket(assoc, self.idle_s)
        rq = assoc.requestor.primitive
        calling = str(rq.calling_ae_title).strip() if rq is not None else ""
        address = str(assoc.requestor.address)
        titles = self.titles.get()
        known = titles is not None and calling in titles
        if known:
            return
        admitted = peers.admits(self.setting, False, titles is None or bool(titles))
        self.sightings.see("dicom", calling, address, refused=not admitted)
        if admitted:
            if self._logs.due((calling, address)):
                log.info(
                    "association from an unregistered calling AE let in",
                    extra={"calling_ae": calling, "address": address},
                )
            return
        assoc.acse.send_reject(*_CALLING_AE_UNKNOWN)
        evt.trigger(assoc, evt.EVT_REJECTED, {})
        assoc.kill()


def _settle_socket(assoc: Association, idle_s: float) -> None:
    """The A-ASSOCIATE-RQ is in: from now on a stalled read or write may take the idle time."""
    sock = assoc.dul.socket.socket if assoc.dul.socket is not None else None
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.settimeout(idle_s)


class VerificationService:
    """C-ECHO: "is the hub there?" from any device."""

    def add_contexts(self, ae: AE) -> None:
        ae.add_supported_context(Verification)

    def handlers(self) -> list[tuple]:
        return [(evt.EVT_C_ECHO, _on_echo)]


def _find_router(routes: dict[str, Callable]) -> Callable:
    """pynetdicom binds one C-FIND handler per AE: this one hands each request to
    the service of its information model (``""``: the one without ``find_models``)."""

    def on_find(event: evt.Event) -> Any:
        handler = routes.get(str(event.context.abstract_syntax)) or routes.get("")
        if handler is None:
            comment = "no C-FIND on this information model"
            return iter([(status.failure(status.SOP_CLASS_NOT_SUPPORTED, comment), None)])
        return handler(event)

    return on_find


def _busy(event: evt.Event) -> None:
    """On EVT_DIMSE_SENT: the hub answering counts as activity on the association.

    pynetdicom's idle timer restarts only on what the peer sends, and is read
    between two requests: a C-MOVE longer than ``dicom_idle_seconds`` (500 CT
    slices, the peer silent while pending responses flow) had the association
    aborted right after its final response, and movescu's A-RELEASE answered
    with an A-ABORT.
    """
    event.assoc.dul._idle_timer.restart()


def _on_echo(event: evt.Event) -> int:
    return status.SUCCESS


def _on_rejected(event: evt.Event) -> None:
    assoc = event.assoc
    rq, rj = assoc.requestor.primitive, assoc.acceptor.primitive
    log.warning(
        "association rejected",
        extra={
            "calling_ae": str(rq.calling_ae_title).strip() if rq else "",
            "called_ae": str(rq.called_ae_title).strip() if rq else "",
            "address": str(assoc.requestor.address),
            "reason": _reason(rj),
        },
    )


def _reason(rj: Any) -> str:
    codes = (rj.result, rj.result_source, rj.diagnostic) if rj is not None else None
    return {
        (0x01, 0x01, 0x03): "calling AE title not recognised",
        (0x01, 0x01, 0x07): "called AE title not recognised",
        (0x02, 0x03, 0x02): "association limit reached",
    }.get(codes, str(codes))  # type: ignore[arg-type]


def default_services(hub: Hub) -> list[DicomService]:
    """Verification, Modality Worklist, Storage, MPPS and Query/Retrieve (after Storage:
    it gives the storage contexts the SCP role C-GET needs)."""
    return [
        VerificationService(),
        WorklistService(hub),
        StorageService(hub),
        MppsService(hub),
        QueryRetrieveService(hub),
    ]


class DicomDoor:
    name = "dicom"

    def __init__(self, hub: Hub, services: list[DicomService] | None = None) -> None:
        self.hub = hub
        self.services = services if services is not None else default_services(hub)
        self.server: ThreadedAssociationServer | None = None
        self.tls_server: ThreadedAssociationServer | None = None
        # The TLS listener's bound port once started (None: no DICOM TLS).
        self.tls_port: int | None = None
        self._threads: list[threading.Thread] = []
        self.titles = RegisteredTitles(self.registered_titles)
        self.sightings = peers.Sightings(hub.db.session)

    def registered_titles(self) -> list[str]:
        with self.hub.db.read_session() as s:
            return modalities.ae_titles(s)

    def make_ae(self) -> AE:
        # Pretty-printing every identifier for a log nobody reads costs ms per item.
        _config.LOG_REQUEST_IDENTIFIERS = False
        _config.LOG_RESPONSE_IDENTIFIERS = False
        s = self.hub.settings
        ae = HubAE(ae_title=s.dicom_ae)
        # An association addressed to another AE title is a misconfigured device
        # (or someone probing): refused with A-ASSOCIATE-RJ, "called AE title not
        # recognised", rather than answered as if it had reached its target.
        ae.require_called_aet = True
        ae.maximum_associations = s.dicom_max_associations
        # ARTIM: how long a connection may take to send its A-ASSOCIATE-RQ.
        ae.acse_timeout = s.dicom_artim_seconds
        # An association silent this long (neither side sending) is aborted.
        ae.network_timeout = s.dicom_idle_seconds
        ae.maximum_pdu_size = MAXIMUM_PDU_SIZE
        for service in self.services:
            service.add_contexts(ae)
        return ae

    def handlers(self) -> list[tuple]:
        s = self.hub.settings
        check = CallerCheck(
            s.dicom_allow_unknown_ae, self.titles, self.sightings, s.dicom_idle_seconds
        )
        bound: list[tuple] = [
            (evt.EVT_REQUESTED, check),
            (evt.EVT_REJECTED, _on_rejected),
            (evt.EVT_DIMSE_SENT, _busy),
        ]
        finds: dict[str, Callable] = {}
        for service in self.services:
            for event, handler in service.handlers():
                models = getattr(service, "find_models", None)
                if event is evt.EVT_C_FIND and models:
                    finds.update(dict.fromkeys(models, handler))
                    continue
                if event is evt.EVT_C_FIND:
                    finds.setdefault("", handler)
                    continue
                bound.append((event, handler))
        if finds:
            bound.append((evt.EVT_C_FIND, _find_router(finds)))
        return bound

    def _serve(self, ae: AE, port: int, limits: DoorLimits, tls: ssl.SSLContext | None) -> Any:
        server = ae.make_server(
            (self.hub.settings.dicom_host, port),
            evt_handlers=self.handlers(),
            server_class=DoorServer,
            ssl_context=tls,
            limits=limits,
        )
        # make_server() does not register the server with its AE, but
        # shutdown() expects it there (as start_server() would have done).
        ae._servers.append(server)
        name = "dicom-tls-acceptor" if tls else "dicom-acceptor"
        thread = threading.Thread(target=server.serve_forever, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)
        return server

    async def start(self) -> int:
        s = self.hub.settings
        ae = self.make_ae()
        limits = DoorLimits(
            slots=PeerSlots(s.dicom_max_associations_per_peer),
            backlog=s.dicom_listen_backlog,
            artim_s=s.dicom_artim_seconds,
        )
        self.server = self._serve(ae, s.dicom_port, limits, None)
        if s.dicom_tls_port is not None:
            if self.hub.tls is None:
                raise RuntimeError("VETHUB_DICOM_TLS_PORT needs VETHUB_TLS_CERT and VETHUB_TLS_KEY")
            self.tls_server = self._serve(ae, s.dicom_tls_port, limits, self.hub.tls.dicom.context)
            self.tls_port = self.tls_server.server_address[1]
        return self.server.server_address[1]

    async def stop(self) -> None:
        if self.server is not None or self.tls_server is not None:
            await asyncio.to_thread(self.stop_blocking)

    def stop_blocking(self, grace: float = STOP_GRACE_S) -> None:
        """Stop accepting, let open associations finish for ``grace`` seconds, abort the rest."""
        servers = [x for x in (self.server, self.tls_server) if x is not None]
        self.server = self.tls_server = None
        for server in servers:
            server.shutdown()
            for assoc in server.active_associations:
                if not _requested(assoc):
                    _expire_artim(assoc)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(
            _requested(a) for x in servers for a in x.active_associations
        ):
            time.sleep(0.05)
        for server in servers:
            for assoc in server.active_associations:
                if not _requested(assoc):
                    continue
                log.warning(
                    "aborting association at shutdown",
                    extra={"calling_ae": str(assoc.requestor.ae_title).strip()},
                )
                assoc.abort()
        for thread in self._threads:
            thread.join(timeout=5)
        self._threads = []
