"""multipart/related (RFC 2387) as DICOMweb uses it: media types and Accept
ranges read, responses written as a stream, STOW-RS bodies split into parts.

Responses are generators of byte chunks, so a study of several hundred MB
leaves the hub file by file in 1 MB steps. Parsing works on the whole body,
which the HTTP bounds middleware has already limited; each part is sliced out
once (no quadratic re-copying of what remains).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

CHUNK = 1 << 20
CRLF = b"\r\n"


class MultipartError(ValueError):
    """A body that is not well-formed multipart; the message names the fault."""


@dataclass(frozen=True)
class MediaRange:
    """One media type of a Content-Type or Accept header, with its parameters."""

    type: str
    params: dict[str, str] = field(default_factory=dict)
    q: float = 1.0

    def param(self, name: str) -> str | None:
        return self.params.get(name)


def _split(text: str, sep: str) -> list[str]:
    """Split on ``sep`` outside double quotes."""
    out: list[str] = []
    cur: list[str] = []
    quoted = False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        if ch == sep and not quoted:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur))
    return out


def media_type(value: str) -> MediaRange:
    """``type/sub; a=b; c="d"`` → MediaRange (type and parameter names lower-cased)."""
    head, *rest = _split(value, ";")
    params: dict[str, str] = {}
    q = 1.0
    for item in rest:
        name, eq, val = item.partition("=")
        name = name.strip().lower()
        if not eq or not name:
            continue
        val = val.strip().strip('"').strip()
        if name == "q":
            try:
                q = float(val)
            except ValueError:
                q = 0.0
            continue
        params[name] = val
    return MediaRange(head.strip().lower(), params, q)


def accept(header: str | None) -> list[MediaRange]:
    """The ranges of an Accept header, best first; ``*/*`` when there is none."""
    if not header or not header.strip():
        return [MediaRange("*/*")]
    ranges = [media_type(part) for part in _split(header, ",") if part.strip()]
    ranges = [r for r in ranges if r.q > 0]
    return sorted(ranges, key=lambda r: -r.q)


def new_boundary() -> str:
    return uuid.uuid4().hex


def related(part_type: str, boundary: str) -> str:
    """The response Content-Type of a multipart/related body of ``part_type`` parts."""
    return f'multipart/related; type="{part_type}"; boundary={boundary}'


@dataclass(frozen=True)
class Out:
    """One part to write: its headers and its content, bytes or a whole file."""

    content_type: str
    body: bytes | Path
    location: str | None = None


def stream(parts: Iterable[Out], boundary: str) -> Iterator[bytes]:
    """The multipart body in pieces of about CHUNK bytes.

    A streaming response hands each piece from a worker thread to the event
    loop; coalescing the small pieces (part headers, delimiters, small files)
    keeps that to about one hop per CHUNK rather than four per instance.
    """
    pending = bytearray()
    for piece in _pieces(parts, boundary):
        pending += piece
        if len(pending) >= CHUNK:
            yield bytes(pending)
            pending.clear()
    if pending:
        yield bytes(pending)


def _pieces(parts: Iterable[Out], boundary: str) -> Iterator[bytes]:
    dash = f"--{boundary}".encode()
    for part in parts:
        head = [dash, f"Content-Type: {part.content_type}".encode()]
        if part.location:
            head.append(f"Content-Location: {part.location}".encode())
        yield CRLF.join(head) + CRLF + CRLF
        if isinstance(part.body, Path):
            with part.body.open("rb") as f:
                while block := f.read(CHUNK):
                    yield block
        else:
            yield part.body
        yield CRLF
    yield dash + b"--" + CRLF


@dataclass(frozen=True)
class Part:
    """One parsed part: its headers (names lower-cased) and its content."""

    headers: dict[str, str]
    content: bytes

    @property
    def content_type(self) -> MediaRange | None:
        value = self.headers.get("content-type")
        return media_type(value) if value else None


def parse(body: bytes, boundary: str) -> list[Part]:
    """Split a multipart body into its parts (RFC 2046 5.1.1).

    Raises MultipartError for a missing first boundary, a part without its
    header block, or a body without the closing delimiter.
    """
    if not boundary or len(boundary) > 200:
        raise MultipartError("the multipart boundary is missing or longer than 200 characters")
    dash = b"--" + boundary.encode("latin-1")
    delimiter = CRLF + dash
    if body.startswith(dash):
        pos = len(dash)
    else:
        first = body.find(delimiter)
        if first < 0:
            raise MultipartError("the body does not contain the boundary given in Content-Type")
        pos = first + len(delimiter)
    view = memoryview(body)
    parts: list[Part] = []
    while True:
        if body.startswith(b"--", pos):
            return parts  # the closing delimiter; an epilogue may follow
        # Transport padding after the boundary, then the line break.
        eol = body.find(CRLF, pos)
        if eol < 0 or body[pos:eol].strip(b" \t"):
            raise MultipartError("a boundary line is followed by unexpected bytes")
        start = eol + 2
        end = body.find(delimiter, start)
        if end < 0:
            raise MultipartError("the body ends without the closing boundary (--boundary--)")
        parts.append(_part(view[start:end]))
        pos = end + len(delimiter)
        if len(parts) > 10_000:
            raise MultipartError("more than 10000 parts")


def _part(raw: memoryview) -> Part:
    data = raw.tobytes()
    if data.startswith(CRLF):
        head, content = b"", data[2:]
    else:
        split = data.find(CRLF + CRLF)
        if split < 0:
            raise MultipartError("a part has no blank line between its headers and content")
        head, content = data[:split], data[split + 4 :]
    headers: dict[str, str] = {}
    for line in head.split(CRLF):
        name, colon, value = line.decode("latin-1").partition(":")
        if not colon or not name.strip():
            raise MultipartError(f"a part has a malformed header line: {line[:60]!r}")
        headers[name.strip().lower()] = value.strip()
    return Part(headers, content)
