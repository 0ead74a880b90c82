"""MLLP framing (0x0B message 0x1C 0x0D), as a sans-IO decoder.

The decoder is fed whatever the socket returns (partial frames, several
frames at once, garbage) and hands back events; it never raises and its
memory stays bounded by ``max_frame``. The asyncio connection loop that
drives it lives in ``server.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

START = b"\x0b"
END = b"\x1c\x0d"
_FS = 0x1C
_CR = 0x0D
_VT = 0x0B
# How much of an oversized or broken frame is kept: enough to read MSH and answer it.
HEAD_BYTES = 4096


@dataclass(frozen=True)
class Frame:
    """A complete message between 0x0B and 0x1C 0x0D."""

    payload: bytes


@dataclass(frozen=True)
class Broken:
    """A frame that cannot be used whole: too large, or cut short by a new 0x0B
    or the end of the stream. ``head`` is its start, so it can still be answered."""

    head: bytes
    reason: str
    size: int


def frame(payload: bytes) -> bytes:
    return START + payload + END


class FrameDecoder:
    """Turns a byte stream into ``Frame`` and ``Broken`` events.

    Bytes outside a frame (line noise, stray CR/LF between frames) are
    dropped and counted in ``discarded``. A 0x1C not followed by 0x0D is
    taken as the end anyway (some senders omit the CR); a 0x0B inside a
    frame means the previous frame lost its trailer.
    """

    def __init__(self, max_frame: int = 4 * 1024 * 1024) -> None:
        self.max_frame = max_frame
        self._buf = bytearray()
        self._in_frame = False
        self._overflow = 0  # bytes of the current frame dropped past max_frame
        self._head = b""
        self._after_fs = False  # the last chunk ended on 0x1C; a leading 0x0D is its trailer
        self.discarded = 0

    @property
    def in_frame(self) -> bool:
        return self._in_frame

    def feed(self, data: bytes) -> list[Frame | Broken]:
        events: list[Frame | Broken] = []
        view = memoryview(data)
        i, n = 0, len(data)
        if self._after_fs and n:
            # the previous chunk ended on 0x1C: its 0x0D may open this one
            self._after_fs = False
            if data[0] == _CR:
                i = 1
        while i < n:
            if not self._in_frame:
                j = data.find(START, i)
                if j < 0:
                    self.discarded += n - i
                    return events
                self.discarded += j - i
                self._in_frame = True
                self._buf.clear()
                self._overflow = 0
                self._head = b""
                i = j + 1
                continue
            # inside a frame: look for the end (0x1C) or a new start (0x0B)
            k_end = data.find(b"\x1c", i)
            k_vt = data.find(START, i)
            if k_vt >= 0 and (k_end < 0 or k_vt < k_end):
                self._append(view[i:k_vt])
                events.append(self._broken("frame not terminated by 0x1C 0x0D"))
                self._in_frame = False
                i = k_vt
                continue
            if k_end < 0:
                self._append(view[i:])
                return events
            self._append(view[i:k_end])
            # 0x1C ends the frame now: waiting for a 0x0D that some senders never
            # send would hold their ACK until the frame timeout.
            events.append(self._finish())
            i = k_end + 1
            if i >= n:
                self._after_fs = True  # swallow the 0x0D if the next chunk starts with it
            elif data[i] == _CR:
                i += 1
        return events

    def close(self) -> list[Frame | Broken]:
        """The stream ended: a frame still open is reported broken."""
        self._after_fs = False
        if not self._in_frame:
            return []
        event = self._broken("connection closed inside a frame")
        self._in_frame = False
        return [event]

    def _append(self, chunk: memoryview) -> None:
        room = self.max_frame - len(self._buf)
        if self._overflow or len(chunk) > room:
            if not self._overflow:
                self._head = bytes(self._buf[:HEAD_BYTES])
                if len(self._head) < HEAD_BYTES:
                    self._head += bytes(chunk[: HEAD_BYTES - len(self._head)])
                self._overflow = len(self._buf)
                self._buf.clear()
            self._overflow += len(chunk)
            return
        self._buf += chunk

    def _finish(self) -> Frame | Broken:
        self._in_frame = False
        if self._overflow:
            size = self._overflow
            self._overflow = 0
            return Broken(self._head, f"message larger than {self.max_frame} bytes", size)
        payload = bytes(self._buf)
        self._buf.clear()
        return Frame(payload)

    def _broken(self, reason: str) -> Broken:
        if self._overflow:
            head, size = self._head, self._overflow
            reason = f"message larger than {self.max_frame} bytes"
        else:
            head, size = bytes(self._buf[:HEAD_BYTES]), len(self._buf)
        self._buf.clear()
        self._overflow = 0
        return Broken(head, reason, size)
