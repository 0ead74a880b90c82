"""Bounds the HTTP door enforces before a route runs (a pure ASGI middleware).

Why not in the routes: FastAPI reads and parses a JSON body before any
dependency (the bearer check included) runs, so an anonymous client could
make the hub buffer a body of any size, and got 422 answers that told it
about our schemas. Here a request is refused on its headers alone when it
can be, and a chunked body is counted as it streams, never buffered.
"""

from __future__ import annotations

import asyncio
import json

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from hub.api.auth import SESSION_COOKIE

AUTH_REQUIRED = "an API key is required: Authorization: Bearer <key>"


def too_large(limit: int) -> str:
    """The ``detail`` of a 413, naming the limit so a client knows what to send."""
    return f"the request body is larger than the hub accepts ({limit} bytes at most)"


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


def has_bearer(scope: Scope) -> bool:
    """Whether the request carries ``Authorization: Bearer <something>``.

    Only the shape is checked: the key itself is checked by hub.api.auth.
    """
    value = (_header(scope, b"authorization") or "").strip()
    scheme, _, credentials = value.partition(" ")
    return scheme.lower() == "bearer" and bool(credentials.strip())


def has_session_cookie(scope: Scope) -> bool:
    """Whether the request carries a (non-empty) staff session cookie; hub.api.auth
    checks the session itself, and its CSRF token."""
    for part in (_header(scope, b"cookie") or "").split(";"):
        name, _, value = part.strip().partition("=")
        if name == SESSION_COOKIE and value.strip():
            return True
    return False


def declared_length(scope: Scope) -> int | None:
    """The Content-Length the client announced (None if absent or not a number;
    the HTTP parser already refuses a malformed one)."""
    value = _header(scope, b"content-length")
    if value is None or not value.strip().isdigit():
        return None
    return int(value.strip())


async def _answer(send: Send, status: int, detail: str, extra: list[tuple[bytes, bytes]]) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
        *extra,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class HttpBounds:
    """Refuse anonymous ``/api/`` requests (401: neither a Bearer key nor a session
    cookie) and bodies over ``max_body`` bytes (413)."""

    def __init__(self, app: ASGIApp, max_body: int) -> None:
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        if path.startswith("/api/") and not (has_bearer(scope) or has_session_cookie(scope)):
            await _answer(send, 401, AUTH_REQUIRED, [(b"www-authenticate", b"Bearer")])
            return
        length = declared_length(scope)
        if length is not None and length > self.max_body:
            await _answer(send, 413, too_large(self.max_body), [])
            return
        await self.app(scope, self._counting(receive), send)

    def _counting(self, receive: Receive) -> Receive:
        """``receive`` that raises a 413 once the body read so far passes the limit.

        An HTTPException, because FastAPI re-raises those from body parsing
        (anything else becomes a 400) and errors.py renders it as JSON.
        """
        seen = 0
        limit = self.max_body

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    # Closing stops the rest of the body being read (and thrown away).
                    raise HTTPException(413, too_large(limit), {"Connection": "close"})
            return message

        return counted


_TIMED_OUT_BODY = b'{"detail": "the request headers did not arrive in time"}'
_TIMED_OUT = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
    b"content-length: " + str(len(_TIMED_OUT_BODY)).encode() + b"\r\n\r\n" + _TIMED_OUT_BODY
)


class HeaderDeadline(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline for a request's headers.

    uvicorn (0.54) has no header timeout: ``timeout_keep_alive`` is reset by
    every byte received, so a client trickling a header line a byte at a time
    held a connection for ever (slowloris). The deadline is armed when a
    connection opens and after each response, and disarmed when a request's
    headers are complete, so slow bodies and long responses are not affected.
    """

    header_timeout: float = 10.0
    _deadline: asyncio.TimerHandle | None = None
    _begun = False  # some of a request has arrived: it is answered 408, not just closed

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        self._begun = True
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self._begun = False
        self._disarm()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        waiting = not self.pipeline  # else the next request's headers are already in
        super().on_response_complete()
        if waiting and not self.transport.is_closing():
            self._arm()

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.header_timeout, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        if self._begun:
            self.transport.write(_TIMED_OUT)
        self.transport.close()


def header_deadline(seconds: float) -> type[HeaderDeadline]:
    """The protocol class to give uvicorn.Config(http=...), with ``seconds`` as the deadline."""
    return type("HeaderDeadline", (HeaderDeadline,), {"header_timeout": seconds})
