"""The HL7 door: an asyncio MLLP listener and a single writer that commits in batches.

Connections only frame, decode and parse (cheap, on the event loop); every
message then goes to one writer task that takes whatever is queued, applies
it in one database transaction (each message in its own SAVEPOINT, so a bad
one spoils nothing else) in a worker thread, commits, and only then lets
the connections send their ACKs. Under load many messages share one commit
(group commit); alone, a message is committed at once. Messages of one
connection are handled strictly in order.

On a hostile network the door bounds what one peer can hold: connections in
all and per source address, an idle deadline that only a complete message
moves (stray bytes do not), a deadline for a started frame, and the senders'
allow-list (each source's ``hl7_senders``, docs/interface.md). The same
handling serves the TLS port when ``VETHUB_HL7_TLS_PORT`` is set.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session
from sqlmodel import col

from adapters.hl7 import ack, current
from adapters.hl7.ack import Hl7Error
from adapters.hl7.apply import apply_batch
from adapters.hl7.mllp import Broken, Frame, FrameDecoder, frame
from adapters.hl7.prepare import Prepared, Senders, prepare, prepare_broken
from adapters.hl7.profile import DEFAULT, Profiles
from hub.context import Hub
from hub.mappings import default_mappings_dir
from hub.metrics import HL7_MESSAGES
from hub.models import InboundMessage, utcnow
from hub.services import peers, sources

log = logging.getLogger("adapters.hl7.server")


def registered_sources(session: Session) -> dict[str, str]:
    """Source name -> HL7 profile name, for sources registered through the API."""
    return {row.name: row.hl7_profile for row in sources.list_all(session)}


def peer_address(peername: Any) -> str:
    """The peer's IP address as text; an IPv4-mapped IPv6 address as plain IPv4."""
    if not isinstance(peername, tuple) or not peername:
        return ""
    host = str(peername[0])
    try:
        ip = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return host


class _QuietWarnings:
    """A warning per message and address at most every ``every`` seconds, with the
    count of those left out: a flood of connections must not flood the log too."""

    def __init__(self, every: float = 10.0) -> None:
        self.every = every
        self._last: dict[tuple[str, str], tuple[float, int]] = {}

    def warn(self, message: str, address: str) -> None:
        key, now = (message, address), time.monotonic()
        last, left_out = self._last.get(key, (-1e18, 0))
        if now - last < self.every:
            self._last[key] = (last, left_out + 1)
            return
        if len(self._last) > 10_000:
            self._last.clear()
        self._last[key] = (now, 0)
        log.warning(message, extra={"peer": address, "left_out": left_out})


@dataclass
class _Deadlines:
    """When a connection is closed for want of messages.

    Only a complete message (or the connection opening) moves the idle
    deadline, so bytes trickled outside a frame cannot hold a connection. A
    started frame must end within ``frame`` seconds, and no later than
    ``frame`` seconds after the idle deadline: frames begun again and again
    (a trickle of 0x0B) do not hold it either.
    """

    idle: float
    frame: float
    idle_at: float = 0.0
    frame_at: float = 0.0

    def __post_init__(self) -> None:
        self.message()

    def message(self) -> None:
        self.idle_at = time.monotonic() + self.idle

    def frame_started(self) -> None:
        now = time.monotonic()
        self.frame_at = min(now, self.idle_at) + self.frame

    def remaining(self, in_frame: bool) -> float:
        return max(0.0, (self.frame_at if in_frame else self.idle_at) - time.monotonic())


@dataclass
class _Work:
    prepared: Prepared
    done: asyncio.Future[bytes] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


def profiles_dir(hub: Hub) -> Path:
    """``<mappings>/hl7``, or the shipped profiles when a custom mappings dir has none."""
    own = hub.mappings.root / "hl7"
    return own if own.is_dir() else default_mappings_dir() / "hl7"


class Hl7Door:
    name = "hl7"

    def __init__(
        self,
        hub: Hub,
        *,
        idle_timeout: float | None = None,
        frame_timeout: float | None = None,
        max_frame: int = 4 * 1024 * 1024,
        max_connections: int | None = None,
        max_connections_per_peer: int | None = None,
        batch_max: int = 64,
        linger: float = 0.002,
        registered_ttl: float = 5.0,
    ) -> None:
        """Limits default to the settings (``VETHUB_HL7_*``); tests pass their own."""
        s = hub.settings
        self.hub = hub
        # no complete message for this long: close (stray bytes do not count)
        self.idle_timeout = s.hl7_idle_seconds if idle_timeout is None else idle_timeout
        # a started frame must end within this
        self.frame_timeout = s.hl7_frame_seconds if frame_timeout is None else frame_timeout
        self.max_frame = max_frame
        self.max_connections = s.hl7_max_connections if max_connections is None else max_connections
        self.max_connections_per_peer = (
            s.hl7_max_connections_per_peer
            if max_connections_per_peer is None
            else max_connections_per_peer
        )
        self._per_peer: dict[str, int] = {}
        self._refused = _QuietWarnings()
        self._evicted = 0  # idle connections closed to make room (see _make_room)
        self.batch_max = batch_max
        # How long the writer may wait for other busy connections' messages to share a
        # commit. Only used while more than one connection is sending.
        self.linger = linger
        self._last_submit: dict[int, float] = {}
        # Sources registered through the API (name -> hl7_profile), re-read every few seconds.
        self.registered: dict[str, str] = {}
        # ... and their hl7_senders (the allow-list), read with them.
        self.senders = Senders(open=peers.admits(s.hl7_allow_unknown_senders, False, False))
        self.registered_ttl = registered_ttl
        self._registered_at = -1e9
        # Senders no entry names, noted (throttled) for the admin to register.
        self.sightings = peers.Sightings(hub.db.session)
        self._arrived = asyncio.Event()
        # Read afresh at start (a broken file stops the hub); a reload replaces them.
        self._profiles_dir = profiles_dir(hub).resolve()
        current.load(self._profiles_dir)
        self._server: asyncio.Server | None = None
        self._tls_server: asyncio.Server | None = None
        self.tls_port: int | None = None  # the bound TLS port once started, None when off
        self._queue: asyncio.Queue[_Work] | None = None
        self._writer: asyncio.Task[None] | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._reading: set[asyncio.Task[None]] = set()  # connections waiting for bytes
        # Connections between messages, with (sent a message yet?, last message time):
        # when the door is full the idlest of them makes room (see _make_room).
        self._idle: dict[asyncio.Task[None], tuple[bool, float]] = {}
        self._closing = False

    @property
    def profiles(self) -> Profiles:
        """The profiles in use: the last good load of the profile directory."""
        return current.get(self._profiles_dir)

    # --- lifecycle ------------------------------------------------------------
    async def start(self) -> int:
        s = self.hub.settings
        self._queue = asyncio.Queue()
        await asyncio.to_thread(self._recall_versions)
        self._writer = asyncio.create_task(self._write_loop(), name="hl7-writer")
        self._server = await asyncio.start_server(
            self._on_connect, s.hl7_host, s.hl7_port, reuse_address=True, backlog=256
        )
        port = self._server.sockets[0].getsockname()[1]
        if s.hl7_tls_port is not None:
            try:
                await self._start_tls(s.hl7_host, s.hl7_tls_port)
            except BaseException:
                await self.stop(timeout=0)  # no half-open door: the plain port goes too
                raise
        log.info(
            "HL7 MLLP listening",
            extra={
                "port": port,
                "tls_port": self.tls_port,
                "profiles": sorted(self.profiles.by_name),
            },
        )
        return port

    async def _start_tls(self, host: str, port: int) -> None:
        """The same door behind TLS, with the hub's certificate (reloaded in place)."""
        if self.hub.tls is None:  # hub.tls refuses a TLS port without a certificate already
            raise RuntimeError("VETHUB_HL7_TLS_PORT needs VETHUB_TLS_CERT and VETHUB_TLS_KEY")
        self._tls_server = await asyncio.start_server(
            self._on_connect,
            host,
            port,
            ssl=self.hub.tls.plain.context,
            # a handshake is bounded like a frame: a silent client cannot hold it open
            ssl_handshake_timeout=min(self.frame_timeout, 10.0),
            reuse_address=True,
            backlog=256,
        )
        self.tls_port = self._tls_server.sockets[0].getsockname()[1]

    async def stop(self, timeout: float = 10.0) -> None:
        """Stop accepting; let each connection finish the message it is on; then stop."""
        self._closing = True
        servers = [x for x in (self._server, self._tls_server) if x is not None]
        for server in servers:
            server.close()
        for task in list(self._reading):  # idle between messages: nothing to finish
            task.cancel()
        if self._connections:
            _, pending = await asyncio.wait(set(self._connections), timeout=timeout)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1)
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
        for server in servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 2)

    # --- connections ----------------------------------------------------------
    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        address = peer_address(writer.get_extra_info("peername"))
        if not self._admit_connection(address):
            writer.close()
            return
        self._connections.add(task)
        self._per_peer[address] = self._per_peer.get(address, 0) + 1
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            await self._serve(reader, writer, address)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("HL7 connection failed", extra={"peer": address})
        finally:
            self._connections.discard(task)
            left = self._per_peer.get(address, 1) - 1
            if left > 0:
                self._per_peer[address] = left
            else:
                self._per_peer.pop(address, None)
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 2)

    def _admit_connection(self, address: str) -> bool:
        """Room for one more connection, in all and from this address (logged when not)."""
        if self._closing:
            return False
        if self._per_peer.get(address, 0) >= self.max_connections_per_peer:
            self._refused.warn(
                "HL7 connection refused: too many connections from this address", address
            )
            return False
        if len(self._connections) >= self.max_connections and not self._make_room():
            self._refused.warn("HL7 connection refused: too many connections", address)
            return False
        return True

    def _make_room(self) -> bool:
        """Close the idlest connection between messages, so held-open sockets cannot lock
        senders out: one that never sent a message goes first, then the longest quiet."""
        if not self._idle:
            return False
        victim = min(self._idle, key=lambda t: self._idle[t])
        del self._idle[victim]
        self._connections.discard(victim)
        victim.cancel()
        self._evicted += 1
        self._refused.warn("HL7 door full: closed the idlest connection to make room", "*")
        return True

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, address: str
    ) -> None:
        decoder = FrameDecoder(self.max_frame)
        deadlines = _Deadlines(self.idle_timeout, self.frame_timeout)
        task = asyncio.current_task()
        assert task is not None
        quiet = (False, time.monotonic())  # for _make_room: (sent a message?, since when)
        while not self._closing:
            timeout = deadlines.remaining(decoder.in_frame)
            try:
                self._reading.add(task)
                if not decoder.in_frame:
                    self._idle[task] = quiet
                try:
                    async with asyncio.timeout(timeout):  # cheaper than wait_for: no new task
                        data = await reader.read(65536)
                finally:
                    self._reading.discard(task)
                    self._idle.pop(task, None)
            except TimeoutError:
                if decoder.in_frame:
                    await self._answer_all(decoder.close(), writer, address)
                log.info("HL7 connection closed after inactivity", extra={"peer": address})
                return
            if not data:
                await self._answer_all(decoder.close(), writer, address)
                return
            was_in_frame = decoder.in_frame
            events = decoder.feed(data)
            await self._answer_all(events, writer, address)
            if any(isinstance(e, Frame) for e in events):
                deadlines.message()  # a whole message, answered: the connection is in use
                quiet = (True, time.monotonic())
            if decoder.in_frame and (events or not was_in_frame):
                deadlines.frame_started()

    async def _answer_all(
        self, events: list[Frame | Broken], writer: asyncio.StreamWriter, address: str
    ) -> None:
        for event in events:
            if time.monotonic() - self._registered_at >= self.registered_ttl:
                # profiles and allowed senders of the sources (PUT /api/v1/sources) may change
                await asyncio.to_thread(self._refresh_registered)
            if isinstance(event, Broken):
                prepared = prepare_broken(
                    event, self.profiles, self.registered, address=address, senders=self.senders
                )
                log.warning(
                    "HL7 broken frame",
                    extra={"reason": event.reason, "bytes": event.size, "peer": address},
                )
            else:
                prepared = prepare(
                    event.payload,
                    self.profiles,
                    self.registered,
                    address=address,
                    senders=self.senders,
                )
            if prepared.refused:
                log.warning(
                    "HL7 message from a sender not allowed",
                    extra={
                        "sender": prepared.sender,
                        "facility": prepared.facility,
                        "peer": address,
                    },
                )
            reply = await self.submit(prepared)
            writer.write(frame(reply))
            await writer.drain()

    async def submit(self, prepared: Prepared) -> bytes:
        """Queue a message for the writer; the ACK bytes once it is committed."""
        assert self._queue is not None, "the door is not started"
        work = _Work(prepared)
        task = asyncio.current_task()
        self._last_submit[id(task)] = time.monotonic()
        await self._queue.put(work)
        self._arrived.set()
        return await work.done

    def _busy_connections(self) -> int:
        """Connections that sent a message within the last 50 ms."""
        recent = time.monotonic() - 0.05
        for key in [k for k, t in self._last_submit.items() if t < recent]:
            del self._last_submit[key]
        return len(self._last_submit)

    # --- the writer -----------------------------------------------------------
    async def _write_loop(self) -> None:
        assert self._queue is not None
        while True:
            batch = [await self._queue.get()]
            await self._gather(len(batch))
            while len(batch) < self.batch_max and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                replies = await asyncio.to_thread(self._apply, [w.prepared for w in batch])
            except Exception:  # never let the writer die
                log.exception("HL7 writer failed")
                replies = [self._unstored(w.prepared) for w in batch]
            for work, reply in zip(batch, replies, strict=True):
                if not work.done.done():
                    work.done.set_result(reply)

    async def _gather(self, have: int) -> None:
        """Group commit: give the other busy connections up to ``linger`` to join this batch."""
        assert self._queue is not None
        target = min(self.batch_max, self._busy_connections())
        if target <= 1 or self.linger <= 0:
            return
        deadline = time.monotonic() + self.linger
        while have + self._queue.qsize() < target:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except TimeoutError:
                return

    def _recall_versions(self) -> None:
        """After a restart: the version each source on ``default`` sent last (90 days),
        so results to it keep its version before it sends again (one query each)."""
        since = utcnow() - timedelta(days=90)
        try:
            with self.hub.db.read_session() as s:
                names = [r.name for r in sources.list_all(s) if r.hl7_profile == DEFAULT]
                for name in names:
                    version = s.scalar(
                        select(col(InboundMessage.version))
                        .where(
                            col(InboundMessage.received_at) >= since,
                            col(InboundMessage.source) == name,
                        )
                        .order_by(col(InboundMessage.id).desc())
                        .limit(1)
                    )
                    current.heard(name, version or "")
        except Exception:
            log.warning("could not read the versions the sources sent", exc_info=True)

    def _refresh_registered(self) -> None:
        """Re-read the sources: their profiles and allowed senders, one query."""
        self._registered_at = time.monotonic()
        try:
            with self.hub.db.read_session() as s:
                rows = [(r.name, r.hl7_profile, r.hl7_senders) for r in sources.list_all(s)]
        except Exception:
            log.warning("could not read the registered sources", exc_info=True)
            return
        self.registered = {name: profile for name, profile, _ in rows}
        self.senders = Senders.build(rows, self.hub.settings.hl7_allow_unknown_senders)

    def _apply(self, batch: list[Prepared]) -> list[bytes]:
        """In the writer's thread: commit the batch, then note the senders no entry names."""
        replies = self._commit(batch)
        for p in batch:
            if p.match is not None and not p.refused:
                current.heard(p.match.source, p.version)
            if p.allowed_by is None:
                self.sightings.see(
                    "hl7", p.sender, p.address, facility=p.facility, refused=p.refused
                )
        return replies

    def _commit(self, batch: list[Prepared]) -> list[bytes]:
        """Apply a batch in one transaction; on failure, each message on its own."""
        try:
            with self.hub.db.session() as s:
                logged = apply_batch(s, batch, self.hub.orders)
            results = [(r.outcome, r.ack, r.type) for r in logged]
        except Exception:
            if len(batch) == 1:
                log.exception("HL7 message could not be stored")
                return [self._unstored(batch[0])]
            log.warning("HL7 batch failed; storing its messages one by one", exc_info=True)
            return [reply for p in batch for reply in self._commit([p])]
        out = []
        for (outcome, text, mtype), p in zip(results, batch, strict=True):
            HL7_MESSAGES.labels(_metric_type(mtype), outcome).inc()
            out.append(ack.encode(text, p.charset or p.addressing.charset))
        return out

    def _unstored(self, p: Prepared) -> bytes:
        """AE when the database could not take the message: the sender should resend."""
        error = Hl7Error(207, "the hub could not store the message; please resend")
        HL7_MESSAGES.labels(_metric_type(p.type), "AE").inc()
        return ack.encode(ack.build("AE", p.addressing, error), p.charset)


_KNOWN_TYPES = frozenset(
    {"ORM^O01", "OMI^O23", *(f"ADT^A{n:02d}" for n in (1, 4, 8, 28, 31, 34, 40))}
)


def _metric_type(message_type: str) -> str:
    """Metric label: senders choose MSH-9, so unknown values share one label."""
    return message_type if message_type in _KNOWN_TYPES else "other"
