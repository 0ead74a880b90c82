"""Test helpers for the HL7 door: a blocking MLLP client and the door run in a background loop."""

from __future__ import annotations

import asyncio
import socket
import threading
from pathlib import Path
from typing import Any

from adapters.hl7.mllp import END, START
from adapters.hl7.server import Hl7Door
from hub.context import Hub

SAMPLES = Path(__file__).parent / "hl7_messages"


def sample(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


class MllpClient:
    def __init__(self, port: int, timeout: float = 15.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send(self, message: bytes) -> bytes:
        self.sock.sendall(START + message + END)
        return self.read()

    def read(self) -> bytes:
        while True:
            end = self.buf.find(END)
            if end >= 0:
                frame = bytes(self.buf[:end])
                del self.buf[: end + 2]
                return frame[frame.find(START) + 1 :]
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed by the hub")
            self.buf += chunk

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> MllpClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def ack_segments(ack: bytes, encoding: str = "utf-8") -> dict[str, list[str]]:
    """{"MSH": [...], "MSA": [...], "ERR": [...]}: fields split on '|' (index = field number)."""
    out: dict[str, list[str]] = {}
    for seg in ack.decode(encoding).split("\r"):
        if seg:
            fields = seg.split("|")
            if fields[0] == "MSH":
                fields = ["MSH", "|", *fields[1:]]
            out.setdefault(fields[0], fields)
    return out


class DoorThread:
    """An ``Hl7Door`` on its own event loop in a thread, so tests can use blocking sockets."""

    def __init__(self, hub: Hub, **kw: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.door = Hl7Door(hub, **kw)
        self.port = self.run(self.door.start())

    def run(self, coro: Any, timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def client(self) -> MllpClient:
        return MllpClient(self.port)

    def stop(self) -> None:
        self.run(self.door.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()
