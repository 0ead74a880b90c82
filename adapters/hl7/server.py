"""The HL7 door: an asyncio MLLP listener and a single writer that commits in batches.

Connections only frame, decode and parse (cheap, on the event loop); every
message then goes to one writer task that takes whatever is queued, applies
it in one database transaction (each message in its own SAVEPOINT, so a bad
one spoils nothing else) in a worker thread, commits, and only then lets
the connections send their ACKs. Under load many messages share one commit
(group commit); alone, a message is committed at once. Messages of one
connection are handled strictly in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.orm import Session

from adapters.hl7 import ack
from adapters.hl7.ack import Hl7Error
from adapters.hl7.apply import apply_batch
from adapters.hl7.mllp import Broken, FrameDecoder, frame
from adapters.hl7.prepare import Prepared, prepare, prepare_broken
from adapters.hl7.profile import Profiles, load_profiles
from hub.context import Hub
from hub.mappings import default_mappings_dir
from hub.metrics import HL7_MESSAGES
from hub.services import sources

log = logging.getLogger("adapters.hl7.server")


def registered_sources(session: Session) -> dict[str, str]:
    """Source name -> HL7 profile name, for sources registered through the API."""
    return {row.name: row.hl7_profile for row in sources.list_all(session)}


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
        idle_timeout: float = 120.0,
        frame_timeout: float = 60.0,
        max_frame: int = 4 * 1024 * 1024,
        max_connections: int = 200,
        batch_max: int = 64,
        linger: float = 0.002,
        registered_ttl: float = 5.0,
    ) -> None:
        self.hub = hub
        self.idle_timeout = idle_timeout  # no bytes at all for this long: close
        self.frame_timeout = frame_timeout  # a started frame must end within this
        self.max_frame = max_frame
        self.max_connections = max_connections
        self.batch_max = batch_max
        # How long the writer may wait for other busy connections' messages to share a
        # commit. Only used while more than one connection is sending.
        self.linger = linger
        self._last_submit: dict[int, float] = {}
        # Sources registered through the API (name -> hl7_profile), re-read every few seconds.
        self.registered: dict[str, str] = {}
        self.registered_ttl = registered_ttl
        self._registered_at = -1e9
        self._arrived = asyncio.Event()
        self.profiles: Profiles = load_profiles(profiles_dir(hub))
        self._server: asyncio.Server | None = None
        self._queue: asyncio.Queue[_Work] | None = None
        self._writer: asyncio.Task[None] | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._reading: set[asyncio.Task[None]] = set()  # connections waiting for bytes
        self._closing = False

    # --- lifecycle ------------------------------------------------------------
    async def start(self) -> int:
        s = self.hub.settings
        self._queue = asyncio.Queue()
        self._writer = asyncio.create_task(self._write_loop(), name="hl7-writer")
        self._server = await asyncio.start_server(
            self._on_connect, s.hl7_host, s.hl7_port, reuse_address=True, backlog=256
        )
        port = self._server.sockets[0].getsockname()[1]
        log.info(
            "HL7 MLLP listening", extra={"port": port, "profiles": sorted(self.profiles.by_name)}
        )
        return port

    async def stop(self, timeout: float = 10.0) -> None:
        """Stop accepting; let each connection finish the message it is on; then stop."""
        self._closing = True
        if self._server is not None:
            self._server.close()
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
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    # --- connections ----------------------------------------------------------
    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if self._closing or len(self._connections) >= self.max_connections:
            log.warning("HL7 connection refused: too many connections or shutting down")
            writer.close()
            return
        self._connections.add(task)
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peer = writer.get_extra_info("peername")
        try:
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("HL7 connection failed", extra={"peer": str(peer)})
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 2)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        decoder = FrameDecoder(self.max_frame)
        frame_started = 0.0
        while not self._closing:
            timeout = self.idle_timeout
            if decoder.in_frame:
                timeout = min(
                    timeout, max(0.0, frame_started + self.frame_timeout - time.monotonic())
                )
            try:
                task = asyncio.current_task()
                assert task is not None
                self._reading.add(task)
                try:
                    async with asyncio.timeout(timeout):  # cheaper than wait_for: no new task
                        data = await reader.read(65536)
                finally:
                    self._reading.discard(task)
            except TimeoutError:
                if decoder.in_frame:
                    await self._answer_all(decoder.close(), writer)
                log.info("HL7 connection closed after inactivity")
                return
            if not data:
                await self._answer_all(decoder.close(), writer)
                return
            was_in_frame = decoder.in_frame
            events = decoder.feed(data)
            if decoder.in_frame and (events or not was_in_frame):
                frame_started = time.monotonic()
            await self._answer_all(events, writer)

    async def _answer_all(self, events: list, writer: asyncio.StreamWriter) -> None:
        for event in events:
            if time.monotonic() - self._registered_at >= self.registered_ttl:
                # which profile a registered source wants (PUT /api/v1/sources) may change
                await asyncio.to_thread(self._refresh_registered)
            if isinstance(event, Broken):
                prepared = prepare_broken(event, self.profiles, self.registered)
                log.warning("HL7 broken frame", extra={"reason": event.reason, "bytes": event.size})
            else:
                prepared = prepare(event.payload, self.profiles, self.registered)
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
                replies = await asyncio.to_thread(self._commit, [w.prepared for w in batch])
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

    def _refresh_registered(self) -> None:
        self._registered_at = time.monotonic()
        try:
            with self.hub.db.read_session() as s:
                self.registered = registered_sources(s)
        except Exception:
            log.warning("could not read the registered sources", exc_info=True)

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
