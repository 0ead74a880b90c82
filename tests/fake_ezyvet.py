"""A fake ezyVet API for the adapter's callbacks, served by uvicorn on a real socket.

It follows what ezyVet documents (shared pims.md §1, which quotes these pages):

- https://developers.ezyvet.com/pacs.html: the token request ``POST
  /v1/oauth/access_token`` with JSON ``partner_id, client_id, client_secret,
  grant_type, scope, site_uid`` answering ``access_token, token_type,
  expires_in`` (12 h); the SPI scopes; ``POST /v1/attachment``.
- https://developers.ezyvet.com/guides/faq.html: the same token request as a
  JSON cURL example; apiv2 ``POST /oauth/token`` with 8 h tokens, one token
  per credential set (a new one revokes the old), a token may expire at any
  time.
- https://developers.ezyvet.com/docs/v1 (errors): a refused token is 401
  with ``messages[]`` of ``level, type, text, fields``.
- https://developers.ezyvet.com/guides/understanding-separations.html:
  ``GET /v2/separation`` as ``items[].separation`` (id, uid, active,
  created_at/modified_at in epoch seconds, name, type, parent, child,
  separation_type, contact_id, contact_uid); the ``database`` is always id 1.
- Rate limits (secondary source, api-evangelist/ezyvet rate-limits): 429
  with ``x-ratelimit-remaining`` / ``x-ratelimit-reset``; here on demand.

The diagnostic-result call is not documented: ``POST /v1/diagnosticresult``
just records what it gets, like the attachment endpoint.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import secrets
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse

TOKEN_PATHS = ("/v1/oauth/access_token", "/oauth/token")
# The hierarchy of a one-clinic site, with the documented field names and types.
SEPARATIONS = [
    {
        "separation": {
            "id": 1,
            "uid": "sep-db-1",
            "active": 1,
            "created_at": 1700000000,
            "modified_at": 1700000000,
            "name": "Database",
            "type": "database",
            "parent": None,
            "child": [2],
            "separation_type": "database",
            "contact_id": 1,
            "contact_uid": "c-1",
        }
    },
    {
        "separation": {
            "id": 2,
            "uid": "sep-loc-2",
            "active": 1,
            "created_at": 1700000000,
            "modified_at": 1700000000,
            "name": "Main Street Clinic",
            "type": "location",
            "parent": 1,
            "child": [],
            "separation_type": "location",
            "contact_id": 2,
            "contact_uid": "c-2",
        }
    },
]


def multipart(content_type: str, body: bytes) -> dict[str, Any]:
    """A multipart/form-data body's fields (files as ``{"filename", "data"}``), read with
    the standard library's MIME parser."""
    message = email.message_from_bytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body, policy=email.policy.HTTP
    )
    fields: dict[str, Any] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        data = part.get_payload(decode=True)
        filename = part.get_filename()
        fields[str(name)] = {"filename": filename, "data": data} if filename else data.decode()
    return fields


def messages(text: str, kind: str = "authentication") -> dict[str, Any]:
    return {"messages": [{"level": "error", "type": kind, "text": text, "fields": []}]}


@dataclass
class FakeEzyvet:
    """The site's credentials, the token it last issued, what it received, faults on demand."""

    partner_id: str = "vethub-partner"
    client_id: str = "clinic-client"
    client_secret: str = "clinic-client-secret"
    site_uid: str = "site-uid-123"
    lifetime: int = 43200
    token: str | None = None
    token_until: float = 0.0
    token_requests: list[dict[str, Any]] = field(default_factory=list)
    attachments: list[dict[str, Any]] = field(default_factory=list)
    results: list[dict[str, Any]] = field(default_factory=list)
    # path -> how many of the next calls answer 429.
    throttle: dict[str, int] = field(default_factory=dict)
    reset_seconds: int = 7
    # Every token is refused (a revoked integration).
    refuse_all: bool = False
    # The token endpoint answers 200 with a body that is not JSON (a proxy's page).
    token_garbage: bool = False
    # Seconds the attachment endpoint waits before answering (a slow API).
    delay: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def app(self) -> FastAPI:
        api = FastAPI()
        fake = self

        async def token(request: Request) -> JSONResponse:
            body = await request.json()
            if fake.token_garbage:
                return HTMLResponse("<html>Service temporarily unavailable</html>")
            with fake.lock:
                fake.token_requests.append({"path": request.url.path, **body})
                wanted = (fake.partner_id, fake.client_id, fake.client_secret, fake.site_uid)
                given = tuple(
                    body.get(k) for k in ("partner_id", "client_id", "client_secret", "site_uid")
                )
                if given != wanted or body.get("grant_type") != "client_credentials":
                    return JSONResponse(messages("Invalid client credentials"), status_code=401)
                # One token per credential set: this one revokes the last.
                fake.token = secrets.token_hex(16)
                fake.token_until = time.time() + fake.lifetime
                answer = {
                    "access_token": fake.token,
                    "token_type": "Bearer",
                    "expires_in": fake.lifetime,
                }
            return JSONResponse(answer)

        for path in TOKEN_PATHS:
            api.add_api_route(path, token, methods=["POST"])

        @api.get("/v2/separation")
        async def separation(request: Request) -> JSONResponse:
            refused = fake._refused(request)
            return refused or JSONResponse({"items": SEPARATIONS})

        @api.post("/v1/attachment")
        async def attachment(request: Request) -> JSONResponse:
            refused = fake._refused(request)
            if refused:
                return refused
            await asyncio.sleep(fake.delay)
            record = multipart(request.headers.get("content-type", ""), await request.body())
            record["idempotency_key"] = request.headers.get("idempotency-key")
            with fake.lock:
                fake.attachments.append(record)
            return JSONResponse({"items": [{"attachment": {"id": len(fake.attachments)}}]})

        @api.post("/v1/diagnosticresult")
        async def diagnostic_result(request: Request) -> JSONResponse:
            refused = fake._refused(request)
            if refused:
                return refused
            with fake.lock:
                fake.results.append(await request.json())
            return JSONResponse({"items": []})

        return api

    def _refused(self, request: Request) -> JSONResponse | None:
        """401 for a token that is not the current one, 429 while throttled."""
        with self.lock:
            header = request.headers.get("authorization", "")
            good = (
                not self.refuse_all
                and self.token is not None
                and header == f"Bearer {self.token}"
                and time.time() < self.token_until
            )
            if not good:
                return JSONResponse(messages("Invalid or expired access token"), status_code=401)
            left = self.throttle.get(request.url.path, 0)
            if left:
                self.throttle[request.url.path] = left - 1
                headers = {
                    "x-ratelimit-remaining": "0",
                    "x-ratelimit-reset": str(self.reset_seconds),
                }
                return JSONResponse(
                    messages("Too many requests", "rate_limit"), status_code=429, headers=headers
                )
        return None

    def revoke(self) -> None:
        """The token stops working mid-way (ezyVet: "expect a token to expire at any time")."""
        with self.lock:
            self.token = None


class Served:
    """An ASGI app on 127.0.0.1 (``port`` 0: any free one), in a thread until ``stop``."""

    def __init__(self, app: FastAPI, port: int = 0) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.port = self.sock.getsockname()[1]
        config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the fake ezyVet did not start")
            time.sleep(0.01)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(5)
        self.sock.close()
