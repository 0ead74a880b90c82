"""ezyVet (adapters/ezyvet): the hub as ezyVet's PACS partner, driven the way ezyVet calls
it, and its callbacks to a fake ezyVet (tests/fake_ezyvet.py) through the outbox.

The request body ezyVet pushes is not documented anywhere we could read, so the
requests here use the adapter's documented default field paths
(docs/adapters.md "ezyVet"); the token, modalities and error shapes follow
pacs.html as quoted in the shared pims.md.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from adapters.ezyvet import DELIVERY_KINDS
from adapters.ezyvet.client import Api, Tokens, retry_after
from adapters.ezyvet.config import DEFAULTS, Config, check
from adapters.ezyvet.results import ATTACH, RESULT
from hub.context import Hub
from hub.models import Delivery
from hub.serve import build_app
from hub.services import sources
from hub.services.deliveries.kinds import DeliveryError, Registry
from hub.services.deliveries.worker import DeliveryWorker
from tests.fake_ezyvet import FakeEzyvet, Served
from tests.harness import ADMIN_KEY, free_port
from tests.study_factory import indexed_study

KEY = "a passphrase of some length"
BASE = "/adapters/ezyvet/clinic"
INBOUND_ID = "ezyvet-calls-us"
INBOUND_SECRET = "inbound-secret-0123456789"
OUT_SECRET = "clinic-client-secret"
# A request in the adapter's default shape (docs/adapters.md); the id is the
# diagnostic request id format pims.md quotes from the SDI page.
REQUEST: dict[str, Any] = {
    "action": "create",
    "id": "US1324-DR158",
    "modality": {"code": "XR-THORAX", "name": "Thorax, 2 views"},
    "requested_at": 1795860000,
    "vet": {"name": "Dr Jane Doe"},
    "separation": {"id": 2, "name": "Main Street Clinic"},
    "animal": {
        "id": "A-555",
        "name": "Rex",
        "species": {"code": "Canine"},
        "breed": {"name": "Labrador Retriever"},
        "sex": "Male Neutered",
        "date_of_birth": "2019-04-02",
        "weight": 31.5,
    },
    "contact": {"id": "C-77", "first_name": "Anna", "last_name": "Smith"},
    "notes": "Coughing 2 weeks",
}


def settings(base_url: str = "https://api.ezyvet.com") -> dict[str, Any]:
    fake = FakeEzyvet()
    return {
        "base_url": base_url,
        "partner_id": fake.partner_id,
        "client_id": fake.client_id,
        "client_secret": OUT_SECRET,
        "site_uid": fake.site_uid,
        "inbound_client_id": INBOUND_ID,
        "inbound_client_secret": INBOUND_SECRET,
        "modality_map": {"US-ABD": {"modality": "US", "station_ae_title": "US_ROOM1"}},
    }


@pytest.fixture
def api(hub: Hub) -> Iterator[TestClient]:
    """The hub's HTTP API as hub.serve wires it (the ezyVet kind, its routes and results)."""
    hub.settings.secret_key = KEY
    with TestClient(build_app(hub), headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as c:
        body = {"kind": "ezyvet", "ezyvet": settings(), "results": [ATTACH, RESULT]}
        r = c.put("/api/v1/sources/clinic", json=body)
        assert r.status_code == 201, r.text
        yield c


def token(api: TestClient) -> dict[str, str]:
    body = {"client_id": INBOUND_ID, "client_secret": INBOUND_SECRET}
    r = api.post(f"{BASE}/accesstoken", json=body | {"grant_type": "client_credentials"})
    assert r.status_code == 200, r.text
    assert r.json()["token_type"] == "Bearer" and r.json()["expires_in"] == 3600
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def push(api: TestClient, auth: dict[str, str], body: Any) -> Any:
    raw = body if isinstance(body, str) else json.dumps(body)
    return api.post(f"{BASE}/request", content=raw, headers=auth)


def orders_of(api: TestClient) -> list[dict[str, Any]]:
    return api.get("/api/v1/orders", params={"source": "clinic"}).json()["items"]


def test_partner_side_as_ezyvet_calls_it(api: TestClient, hub: Hub) -> None:
    # Token: bad credentials get ezyVet's own error shape; good ones a bearer token.
    bad = {"client_id": INBOUND_ID, "client_secret": "wrong", "grant_type": "client_credentials"}
    r = api.post(f"{BASE}/accesstoken", json=bad)
    assert r.status_code == 401 and r.json()["messages"][0]["text"] and r.json()["detail"]
    r = api.post(f"{BASE}/accesstoken", json={**bad, "grant_type": "password"})
    assert r.status_code == 400 and "client_credentials" in r.json()["detail"]
    assert api.post("/adapters/ezyvet/nobody/accesstoken", json=bad).status_code == 404
    auth = token(api)

    # Catalogue sync needs the token.
    anonymous = {"Authorization": ""}
    assert api.get(f"{BASE}/modalities", headers=anonymous).status_code == 401
    assert (
        api.get(f"{BASE}/modalities", headers={"Authorization": "Bearer nope"}).status_code == 401
    )
    mods = api.get(f"{BASE}/modalities", headers=auth).json()["modalities"]
    codes = {m["code"]: m["name"] for m in mods}
    assert codes["XR-THORAX"] == "Thorax, 2 views" and codes["DX"] == "Radiography"
    assert codes["US-ABD"] == "Ultrasound"  # the source's own map, named by the vendor list
    species = api.get(f"{BASE}/species", headers=auth).json()["species"]
    dog = next(s for s in species if s["code"] == "448771007")
    assert {"name": "Labrador retriever dog breed", "code": "62137007"} in dog["breeds"]

    # Create: 200 only with the order committed; the hub makes the accession.
    r = push(api, auth, REQUEST)
    assert r.status_code == 200, r.text
    assert r.json()["outcome"] == "created" and r.json()["status"] == "scheduled"
    [order] = orders_of(api)
    assert order["placer_order_number"] == "US1324-DR158"
    assert order["accession_number"] == r.json()["accession_number"]
    assert order["accession_number"] != "US1324-DR158" and len(order["accession_number"]) <= 16
    assert order["patient"]["species"] == "Canis lupus familiaris"
    assert (order["patient"]["sex"], order["patient"]["neutered"]) == ("male", True)
    assert order["owner"]["last_name"] == "Smith" and order["referring_vet"] == "Dr Jane Doe"
    assert order["modality"] == "DX" and order["site"] == "Main Street Clinic"
    assert order["scheduled_start"].startswith("2026-11-28")

    # The same push again (ezyVet may resend) changes nothing; a changed one updates.
    again = push(api, auth, REQUEST)
    assert again.status_code == 200 and again.json()["outcome"] == "unchanged"
    changed = copy.deepcopy(REQUEST) | {"action": "update", "notes": "Now also lame"}
    changed["modality"] = {"code": "US-ABD", "name": "Abdomen ultrasound"}
    r = push(api, auth, changed)
    assert r.status_code == 200 and r.json()["outcome"] == "updated", r.text
    [order] = orders_of(api)
    assert (order["modality"], order["station_ae_title"]) == ("US", "US_ROOM1")
    assert order["notes"] == "Now also lame"

    # Malformed pushes: 4xx naming ezyVet's field, nothing stored, counted.
    assert push(api, auth, "{not json").status_code == 400
    assert push(api, auth, "[1, 2]").status_code == 422
    nameless = copy.deepcopy(REQUEST) | {"id": "US1324-DR159"}
    del nameless["animal"]["name"]
    r = push(api, auth, nameless)
    assert r.status_code == 422 and "animal.name" in r.json()["detail"]
    assert r.json()["messages"][0]["fields"] == ["animal.name"]
    r = push(api, auth, REQUEST | {"id": "US1324-DR160", "action": "archive"})
    assert r.status_code == 422 and "action" in r.json()["detail"]
    r = push(api, auth, REQUEST | {"id": "US1324-DR161", "requested_at": "soon"})
    assert r.status_code == 422 and "requested_at" in r.json()["detail"]
    assert push(api, {"Authorization": "Bearer nope"}, REQUEST).status_code == 401
    assert len(orders_of(api)) == 1
    failing = api.get("/api/v1/sources/clinic").json()["status"]
    assert failing["last_error"].startswith("request: HTTP 401") and not failing["previous_error"]

    # Disable cancels; an update arriving after it is answered, not applied.
    r = push(api, auth, {"action": "disable", "id": "US1324-DR158"})
    assert r.status_code == 200 and r.json()["outcome"] == "cancelled"
    r = push(api, auth, changed | {"notes": "late update"})
    assert r.status_code == 200 and r.json()["outcome"] == "unchanged" and r.json()["note"]
    # A disable that overtakes its create: the order exists cancelled, and the
    # late create does not revive it.
    early = copy.deepcopy(REQUEST) | {"id": "US1324-DR170"}
    r = push(api, auth, early | {"action": "disable"})
    assert r.status_code == 200 and r.json()["outcome"] == "cancelled"
    r = push(api, auth, early)
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    r = push(api, auth, {"action": "disable", "id": "NEVER-SEEN"})
    assert r.status_code == 200 and r.json()["outcome"] == "ignored"
    assert sorted(o["status"] for o in orders_of(api)) == ["cancelled", "cancelled"]

    # Unknown codes are kept as text and reported in the source's status.
    odd = copy.deepcopy(REQUEST) | {"id": "US1324-DR180"}
    odd["animal"]["species"] = {"code": "Axolotl"}
    odd["modality"] = {"code": "THERMO", "name": "Thermography"}
    r = push(api, auth, odd)
    assert r.status_code == 200, r.text
    got = api.get("/api/v1/sources/clinic").json()
    status = got["status"]
    assert "species 'Axolotl'" in status["unknown_codes"]
    assert "modality 'THERMO'" in status["unknown_codes"]
    # 9 pushes applied; refused: 2 token requests, 2 catalogue calls, 6 pushes.
    assert status["requests_accepted"] == 9 and status["requests_refused"] == 10
    # The last refusal came before the last accepted push: recovered, still said.
    assert status["last_error"] is None and status["last_ok_at"] >= status["last_error_at"]
    assert status["previous_error"] == (
        "request: HTTP 401: the access token is not valid or has expired"
    )
    # The URLs to give ezyVet, from VETHUB_PUBLIC_URL.
    partner = f"http://127.0.0.1:8080{BASE}"
    assert status["partner_url"] == partner
    assert status["request_url"] == f"{partner}/request"
    assert status["result_portal_url"] == f"{partner}/result"
    assert status["accesstoken_url"] == f"{partner}/accesstoken"
    assert status["species_url"] == f"{partner}/species"
    catalogue = status["modalities_url"].removeprefix("http://127.0.0.1:8080")
    assert api.get(catalogue, headers=auth).status_code == 200

    # Credentials and tokens never come back.
    text = json.dumps(got) + api.get("/api/v1/sources").text
    for secret in (OUT_SECRET, INBOUND_SECRET, auth["Authorization"].split()[1]):
        assert secret not in text
    assert got["ezyvet"]["client_secret_set"] and got["ezyvet"]["issued_tokens_set"]
    with hub.db.read_session() as s:
        row = sources.get(s, "clinic")
        assert INBOUND_SECRET not in (row.kind_secrets or "") + json.dumps(row.kind_settings)

    result_portal(api, hub)


def result_portal(api: TestClient, hub: Hub) -> None:
    """ezyVet's result link: "pending" until a study is there, then the viewer."""
    portal = f"{BASE}/result"
    query = {"request_id": "US1324-DR180", "client_id": INBOUND_ID}
    r = api.get(portal, params=query, headers={"Authorization": ""}, follow_redirects=False)
    assert r.status_code == 200 and "have not arrived" in r.text and "Rex" not in r.text
    assert api.get(portal, params=query | {"client_id": "other"}).status_code == 404
    assert api.get(portal, params=query | {"request_id": "nope"}).status_code == 404
    cancelled = api.get(portal, params=query | {"request_id": "US1324-DR158"})
    assert cancelled.status_code == 200 and "was cancelled" in cancelled.text
    [order] = [o for o in orders_of(api) if o["placer_order_number"] == "US1324-DR180"]
    uid = indexed_study(hub, order)
    r = api.get(portal, params=query, follow_redirects=False)
    assert r.status_code == 302
    assert r.headers["location"] == f"http://127.0.0.1:8080/viewer/studies/{uid}"


def test_callbacks_through_the_outbox(api: TestClient, hub: Hub) -> None:
    """Attachment and result calls to a fake ezyVet on a real socket, through the API
    being down, refusing every token, rate limiting, and a token revoked mid-way."""
    port = free_port()
    body = {
        "kind": "ezyvet",
        "ezyvet": settings(f"http://127.0.0.1:{port}"),
        "results": [ATTACH, RESULT],
    }
    assert api.put("/api/v1/sources/clinic", json=body).status_code == 200
    assert push(api, token(api), REQUEST).status_code == 200
    [order] = orders_of(api)
    uid = indexed_study(hub, order)
    viewer = f"http://127.0.0.1:8080/viewer/studies/{uid}"
    # One send at a time: which thread's 401 renews the token first would otherwise
    # decide how many tokens are fetched and which one the cache holds at the end.
    hub.settings.delivery_concurrency = 1
    worker = DeliveryWorker(hub.db, hub.settings, Registry(DELIVERY_KINDS))

    def attempt() -> dict[str, Delivery]:
        with hub.db.session() as s:  # due now, whatever the backoff said
            s.query(Delivery).update({"next_attempt_at": datetime.now(UTC)})
        worker.run_once(max_rounds=2)
        with hub.db.read_session() as s:
            rows = s.query(Delivery).all()
            s.expunge_all()
        return {d.kind: d for d in rows if d.event_kind == "study.received"}

    down = attempt()  # nothing listens yet
    assert all(
        d.status == "pending" and "ConnectError" in (d.last_error or "") for d in down.values()
    )
    vendor = FakeEzyvet(refuse_all=True)
    served = Served(vendor.app(), port)  # the API comes back on the same address
    try:
        refused = attempt()
        for d in refused.values():
            assert "HTTP 401: Invalid or expired access token" in (d.last_error or "")
            assert OUT_SECRET not in (d.last_error or "")
        # No token storm: one token, then one renewal per refused send.
        with hub.db.read_session() as s:
            sends = s.query(Delivery).count()
        fetched = len(vendor.token_requests)
        assert 2 <= fetched <= 1 + sends

        vendor.refuse_all, vendor.throttle["/v1/attachment"] = False, 1
        limited = attempt()
        assert limited[RESULT].status == "delivered"
        attach = limited[ATTACH]
        assert "HTTP 429" in (attach.last_error or "") and attach.status == "pending"
        wait = attach.next_attempt_at.replace(tzinfo=UTC) - datetime.now(UTC)
        assert timedelta(seconds=5) < wait <= timedelta(seconds=7)  # x-ratelimit-reset: 7
        assert attempt()[ATTACH].status == "delivered"
        assert len(vendor.token_requests) == fetched  # the renewed token kept working

        [attached] = vendor.attachments
        assert attached["record_type"] == "Animal" and attached["record_id"] == "A-555"
        assert viewer in attached["notes"] and order["accession_number"] in attached["notes"]
        assert viewer.encode() in attached["file"]["data"]
        assert vendor.results == [
            {
                "diagnostic_request_id": "US1324-DR158",
                "status": "received",
                "accession_number": order["accession_number"],
                "result_url": viewer,
            }
        ]
        assert vendor.token_requests[0]["scope"].startswith("read-diagnosticresult")

        # The token stops working mid-way: renewed once, the call repeated once.
        vendor.revoke()
        assert api.post(f"/api/v1/orders/{order['id']}/cancel").status_code == 200
        worker.run_once()
        assert [r["status"] for r in vendor.results] == ["received", "cancelled"]
        assert len(vendor.token_requests) == fetched + 1
    finally:
        served.stop()
    with hub.db.read_session() as s:
        assert {d.status for d in s.query(Delivery).all()} == {"delivered"}


def test_bad_settings_named() -> None:
    body = settings() | {"base_url": "ftp://x", "token_seconds": 5, "colour": "blue"}
    body["modality_map"] = {"X": {"modality": "XX"}}
    body["request_fields"] = {"animal_nam": "animal.name"}
    del body["site_uid"]
    fields = {e.field for e in check({**DEFAULTS, **body})}
    assert fields == {
        "ezyvet.base_url",
        "ezyvet.token_seconds",
        "ezyvet.colour",
        "ezyvet.modality_map.X.modality",
        "ezyvet.request_fields.animal_nam",
        "ezyvet.site_uid",
    }
    assert check({**DEFAULTS, **settings()}) == []


def test_token_cache_one_fetch_at_a_time() -> None:
    """Threads share one token; a stale 401 from one thread does not drop a renewed token."""
    now = [0.0]
    tokens = Tokens(clock=lambda: now[0])
    fetched: list[str] = []

    def fetch() -> tuple[str, float]:
        fetched.append(f"t{len(fetched) + 1}")
        return fetched[-1], 3600

    key = ("u", "/t", "p", "c", "s")
    assert tokens.get(key, fetch) == tokens.get(key, fetch) == "t1"
    tokens.drop(key, "t1")
    assert tokens.get(key, fetch) == "t2"
    tokens.drop(key, "t1")  # another thread's late 401 for the old token
    assert tokens.get(key, fetch) == "t2"
    now[0] = 3600 - 300  # expires_in minus the margin
    assert tokens.get(key, fetch) == "t3"


def test_api_faults_named() -> None:
    """A token answer that is not JSON, and an API slower than the send timeout, are
    errors the deliveries view shows; Retry-After wins over x-ratelimit-reset."""
    vendor = FakeEzyvet(token_garbage=True, delay=0.4)
    served = Served(vendor.app())
    cfg = Config.of(settings(served.url) | {"client_secret": OUT_SECRET})
    try:
        with httpx.Client(timeout=0.15) as http:
            api = Api(cfg, http, Tokens())
            with pytest.raises(DeliveryError, match="carries no access_token"):
                api.call("GET", "/v2/separation")
            vendor.token_garbage = False
            assert api.call("GET", "/v2/separation").json()["items"][0]["separation"]["id"] == 1
            with pytest.raises(DeliveryError, match="no answer in time"):
                api.call("POST", "/v1/attachment", data={"notes": "x"})
    finally:
        served.stop()
    both = httpx.Response(429, headers={"Retry-After": "3", "x-ratelimit-reset": "9"})
    assert retry_after(both) == 3
    epoch = httpx.Response(429, headers={"x-ratelimit-reset": "2000000010"})
    assert retry_after(epoch, now=2000000000) == 10
    assert retry_after(httpx.Response(429)) is None
