"""A small fake Provet Cloud that follows the published contract (pims.md §2).

- OAuth2 client credentials at ``/{provet_id}/oauth2/token/``: form body,
  client id and secret in HTTP Basic, ``access_token`` + ``expires_in``
  (https://developers.provetcloud.com/restapi/authentication_oauth2.html).
- Resources under ``/{provet_id}/api/0.1/``; trailing slash required (without
  it: 404, no redirect); relations are URLs; ``expose_<field>`` embeds them
  (https://developers.provetcloud.com/restapi/usage_examples.html).
- Per-endpoint 429 with ``Retry-After`` on demand
  (https://developers.provetcloud.com/restapi/ratelimit.html); 503, slow
  answers and malformed JSON on demand too.
- A webhook sender for triggers 6/7/8 with ``diagnosticimagingworklist_id``,
  ``provet_id`` and ``provet_url``, form-encoded or JSON, retrying anything
  but 200 up to 10 times, with a delivery log
  (https://developers.provetcloud.com/restapi/webhooks.html, webhook_triggers.html,
  howto_ris.html).
- PATCH on the worklist and referral recorded.

Fixtures: the consultation (338) and patient ("Fenton", 2130) bodies are
Provet's own examples from usage_examples.html, the client is the "John
Smith" example of howto_clients_patients.html; the consultation's relations
point at that patient and client so the three fit together. The worklist,
referral, modality, target area, user, department and appointment bodies are
NOT published: they follow the field names the adapter assumes
(adapters/provet/config.py FIELDS), which is exactly what a clinic would
have to confirm.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route, Router

PROVET_ID = "4"
CLIENT_ID = "vethub-integration"
CLIENT_SECRET = "provet-client-secret-0123456789"


@dataclass
class Fault:
    status: int  # 429, 503, 200 with a broken body (malformed)
    retry_after: str | None = None
    malformed: bool = False


@dataclass
class FakeProvet:
    provet_id: str = PROVET_ID
    base_url: str = "http://127.0.0.1:0"
    resources: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    tokens: set[str] = field(default_factory=set)
    token_log: list[dict[str, str]] = field(default_factory=list)
    request_log: list[tuple[str, str]] = field(default_factory=list)
    patches: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    faults: dict[str, list[Fault]] = field(default_factory=dict)
    down: bool = False
    # resource -> seconds the next call to it takes before answering (a slow API).
    slow: dict[str, float] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    # -- test controls ------------------------------------------------------

    def url(self, resource: str, ident: int | str) -> str:
        return f"{self.base_url}/{self.provet_id}/api/0.1/{resource}/{ident}/"

    def fail(self, resource: str, *faults: Fault) -> None:
        """The next calls to ``resource`` (item or list) answer these, in order."""
        with self.lock:
            self.faults.setdefault(resource, []).extend(faults)

    def revoke_tokens(self) -> None:
        with self.lock:
            self.tokens.clear()

    def calls(self, resource: str) -> int:
        return sum(1 for _, path in self.request_log if f"/api/0.1/{resource}/" in path)

    # -- fixtures -----------------------------------------------------------

    def seed(self, today: str) -> None:
        """The documented examples plus the unpublished objects, linked by URL."""
        u = self.url
        self.resources = {
            # usage_examples.html "Create new patient" response (id 2130).
            "patient": {
                "2130": {
                    "id": 2130,
                    "url": u("patient", 2130),
                    "client": u("client", 218),
                    "name": "Fenton",
                    "official_name": "",
                    "species": "Dog (Canine - Domestic)",
                    "breed": "None",
                    "gender": "Female",
                    "weight": None,
                    "old_patient_id": None,
                    "remarks": None,
                    "date_of_registration": "2021-11-10",
                    "date_of_birth": None,
                    "deceased": None,
                    "insurance": None,
                    "insurance_company": None,
                }
            },
            # howto_clients_patients.html "Creating a Client" body, as client 218.
            "client": {
                "218": {
                    "id": 218,
                    "url": u("client", 218),
                    "firstname": "John",
                    "lastname": "Smith",
                    "email": "john.smith@example.com",
                    "country": "GB",
                    "customer_type": 0,
                }
            },
            # usage_examples.html "Get consultation details" (338); client and
            # patient point at the two examples above.
            "consultation": {
                "338": {
                    "url": u("consultation", 338),
                    "client": u("client", 218),
                    "patients": [u("patient", 2130)],
                    "complaint": "Test consultation",
                    "admitted_time": "2017-05-18T10:35:00Z",
                    "first_entry": None,
                    "started": "2017-05-18T10:35:00Z",
                    "finished": None,
                    "ended": None,
                    "status": 8,
                    "type": 0,
                    "invoice": u("invoice", 609),
                    "supervising_veterinarian": u("user", 1),
                    "department": u("department", 1),
                    "consultation_items": [],
                    "reporting_dimension_1": None,
                    "reporting_dimension_2": None,
                }
            },
            # Not published: the adapter's assumed field names.
            "diagnosticimaging_worklist": {
                "501": {
                    "id": 501,
                    "url": u("diagnosticimaging_worklist", 501),
                    "referral": u("diagnosticimaging_referral", 77),
                    "patient": u("patient", 2130),
                    "client": u("client", 218),
                    "modality": u("modality", 1),
                    "target_areas": [u("targetarea", 3)],
                    "supervising_veterinarian": u("user", 1),
                }
            },
            "diagnosticimaging_referral": {
                "77": {
                    "id": 77,
                    "url": u("diagnosticimaging_referral", 77),
                    "consultation": u("consultation", 338),
                    "appointment": u("appointment", 91),
                    "remarks": "Coughing for two weeks",
                }
            },
            "appointment": {"91": {"id": 91, "start": f"{today}T10:30:00"}},
            "modality": {
                "1": {"id": 1, "url": u("modality", 1), "name": "X-ray"},
                "2": {"id": 2, "url": u("modality", 2), "name": "Thermography"},
            },
            "targetarea": {"3": {"id": 3, "url": u("targetarea", 3), "name": "Thorax"}},
            "user": {"1": {"id": 1, "url": u("user", 1), "first_name": "Jane", "last_name": "Doe"}},
            "department": {"1": {"id": 1, "url": u("department", 1), "name": "Main clinic"}},
        }

    # -- the API ------------------------------------------------------------

    @property
    def app(self) -> Starlette:
        router = Router(
            routes=[
                Route("/{pid}/oauth2/token/", self._token, methods=["POST"]),
                Route("/{pid}/api/0.1/{resource}/", self._list, methods=["GET"]),
                Route(
                    "/{pid}/api/0.1/{resource}/{ident}/",
                    self._item,
                    methods=["GET", "PATCH", "PUT"],
                ),
            ]
        )
        app = Starlette(routes=router.routes)
        app.router.redirect_slashes = False  # Provet requires the slash; no redirect
        return app

    async def _token(self, request: Request) -> Response:
        if request.path_params["pid"] != self.provet_id:
            return PlainTextResponse("Not found", 404)
        auth = request.headers.get("authorization", "")
        form = parse_qs((await request.body()).decode())
        user, _, password = base64.b64decode(auth.removeprefix("Basic ")).decode().partition(":")
        ok = (
            auth.startswith("Basic ")
            and (user, password) == (CLIENT_ID, CLIENT_SECRET)
            and request.headers.get("content-type", "").startswith(
                "application/x-www-form-urlencoded"
            )
            and form.get("grant_type") == ["client_credentials"]
        )
        with self.lock:
            self.token_log.append({"client_id": user, "scope": (form.get("scope") or [""])[0]})
            if not ok:
                return JSONResponse({"error": "invalid_client"}, 401)
            token = secrets.token_hex(16)
            self.tokens.add(token)
        return JSONResponse(
            {"access_token": token, "token_type": "Bearer", "expires_in": 36000, "scope": "restapi"}
        )

    def _guard(self, request: Request, resource: str) -> Response | None:
        with self.lock:
            self.request_log.append((request.method, str(request.url.path)))
            if self.down:
                return PlainTextResponse("Service Unavailable", 503)
            token = request.headers.get("authorization", "").removeprefix("Bearer ")
            if token not in self.tokens:
                return JSONResponse({"detail": "Invalid token."}, 401)
            queue = self.faults.get(resource) or []
            if queue:
                fault = queue.pop(0)
                if fault.malformed:
                    return Response(b'{"id": 501, "referral": ', 200, media_type="application/json")
                headers = {"Retry-After": fault.retry_after} if fault.retry_after else {}
                return JSONResponse({"detail": "Request was throttled."}, fault.status, headers)
        return None

    async def _list(self, request: Request) -> Response:
        resource = request.path_params["resource"]
        refused = self._guard(request, resource)
        if refused is not None:
            return refused
        items = list(self.resources.get(resource, {}).values())
        size = int(request.query_params.get("page_size") or 10)
        page = int(request.query_params.get("page") or 1)
        chunk = items[(page - 1) * size : page * size]
        more = page * size < len(items)
        base = f"{self.base_url}{request.url.path}"
        return JSONResponse(
            {
                "count": len(items),
                "num_pages": max(1, -(-len(items) // size)),
                "next": f"{base}?page={page + 1}&page_size={size}" if more else None,
                "previous": None,
                "results": chunk,
            }
        )

    async def _item(self, request: Request) -> Response:
        resource, ident = request.path_params["resource"], request.path_params["ident"]
        refused = self._guard(request, resource)
        if refused is not None:
            return refused
        with self.lock:
            delay = self.slow.pop(resource, 0.0)
        await asyncio.sleep(delay)  # logged at once, answered late
        obj = self.resources.get(resource, {}).get(ident)
        if obj is None:
            return JSONResponse({"detail": "Not found."}, 404)
        if request.method in ("PATCH", "PUT"):
            body = json.loads(await request.body())
            with self.lock:
                self.patches.append((f"{resource}/{ident}", body))
                obj.update(body)
            return JSONResponse(obj)
        shown = copy.deepcopy(obj)
        for key in request.query_params:
            name = key.removeprefix("expose_")
            if key.startswith("expose_") and name in shown:
                shown[name] = self._expand(shown[name])
        return JSONResponse(shown)

    def _expand(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self._expand(v) for v in value]
        if isinstance(value, str) and value.startswith(self.base_url):
            resource, ident = value.rstrip("/").rsplit("/", 2)[-2:]
            return copy.deepcopy(self.resources.get(resource, {}).get(ident, value))
        return value


@dataclass
class WebhookSender:
    """Provet's side of a hook: POST, retried until 200, at most 10 times, logged."""

    post: Callable[..., Any]  # e.g. a TestClient's post
    url: str
    provet_id: str = PROVET_ID
    provet_url: str = ""
    log: list[tuple[int, int, int]] = field(default_factory=list)  # (worklist, attempt, status)

    def send(self, worklist_id: int | str, *, as_json: bool = False, tries: int = 10) -> int:
        body = {
            "diagnosticimagingworklist_id": str(worklist_id),
            "provet_id": self.provet_id,
            "provet_url": self.provet_url,
        }
        status = 0
        for attempt in range(1, tries + 1):
            resp = self.post(self.url, json=body) if as_json else self.post(self.url, data=body)
            status = resp.status_code
            self.log.append((int(worklist_id), attempt, status))
            if status == 200:
                break
        return status


@contextmanager
def serving(fake: FakeProvet) -> Iterator[str]:
    """The fake on a real socket (uvicorn in a thread); yields its base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    fake.base_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(
        uvicorn.Config(fake.app, log_config=None, access_log=False, lifespan="off")
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        yield fake.base_url
    finally:
        server.should_exit = True
        thread.join(5)
        sock.close()
