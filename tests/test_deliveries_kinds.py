"""The delivery kinds registry: what a kind declares is what the core does.

A toy kind, registered in-process the way hub/serve.py registers the real
ones, goes through the real outbox, dispatch, lease and settle on SQLite and
PostgreSQL: proof that a new kind (dicom-forward, a vendor callback) needs no
change in the core.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from hub.context import Hub
from hub.errors import FieldError
from hub.serve import delivery_kinds
from hub.services.deliveries.dispatch import dispatch
from hub.services.deliveries.kinds import (
    Claim,
    DeliveryError,
    DeliveryKind,
    Registry,
    Sender,
    SendOptions,
    Target,
)
from hub.services.deliveries.worker import DeliveryWorker
from hub.services.sources import EVENTS, SourceSettings
from tests.factories import rex

TOY_URL = "https://toy.example/callback"


@dataclass
class ToyReceiver:
    """The toy kind's far end: records every claim it is handed; refuses the first ``refuse``."""

    refuse: int = 0
    got: list[Claim] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def sender(self, options: SendOptions) -> Sender:
        return self.send

    def send(self, target: Target, claim: Claim) -> None:
        with self.lock:
            self.got.append(claim)
            if self.refuse:
                self.refuse -= 1
                raise DeliveryError("toy receiver said no")


def toy_kind(receiver: ToyReceiver, **overrides: Any) -> DeliveryKind:
    """What an adapter would declare: two events, a URL it needs, its sender."""
    kind = DeliveryKind(
        name="toy",
        events=frozenset({"order.scheduled", "order.cancelled"}),
        sender=receiver.sender,
        requires=("webhook_url",),
    )
    return replace(kind, **overrides)


def registry_of(client: TestClient) -> Registry:
    """The registry hub.serve.build_app gave this client's app."""
    assert isinstance(client.app, FastAPI)
    kinds: Registry = client.app.state.delivery_kinds
    return kinds


@pytest.fixture
def toy() -> ToyReceiver:
    return ToyReceiver(refuse=1)


@pytest.fixture
def toy_client(client: TestClient, toy: ToyReceiver) -> TestClient:
    """The API of a hub whose registry also holds the toy kind."""
    registry_of(client).add(toy_kind(toy))
    return client


@pytest.fixture
def running_worker(hub: Hub, toy_client: TestClient) -> Iterator[DeliveryWorker]:
    """A started background worker with the toy kind; stopped at teardown, pass or fail."""
    settings = hub.settings.model_copy(
        update={
            "delivery_poll_seconds": 0.05,
            "delivery_backoff_seconds": 0.05,
            "delivery_backoff_max_seconds": 0.1,
            "delivery_timeout_seconds": 1.0,
        }
    )
    w = DeliveryWorker(hub.db, settings, registry_of(toy_client))
    w.start()
    yield w
    w.stop()


def wait_for_statuses(client: TestClient, n: int, timeout: float = 15) -> list[dict]:
    """The toy deliveries, oldest first, once ``n`` of them are no longer pending."""
    deadline = time.monotonic() + timeout
    while True:
        items = client.get("/api/v1/deliveries", params={"kind": "toy"}).json()["items"]
        settled = [d for d in items if d["status"] != "pending"]
        if len(settled) >= n or time.monotonic() > deadline:
            return list(reversed(items))
        time.sleep(0.05)


def test_unknown_kind_is_refused_until_registered(client: TestClient) -> None:
    body = {"webhook_url": TOY_URL, "results": ["toy"], "events": ["order.scheduled"]}
    r = client.put("/api/v1/sources/pims-main", json=body)
    assert r.status_code == 422 and "results" in r.json()["detail"]
    assert client.get("/api/v1/deliveries", params={"kind": "toy"}).status_code == 422
    registry_of(client).add(toy_kind(ToyReceiver()))
    # What the kind requires, the registry checks: no URL, no registration.
    r = client.put("/api/v1/sources/pims-main", json={**body, "webhook_url": None})
    assert r.status_code == 422 and "webhook_url" in r.json()["detail"]
    assert client.put("/api/v1/sources/pims-main", json=body).status_code == 201
    assert client.get("/api/v1/deliveries", params={"kind": "toy"}).status_code == 200


def test_toy_kind_is_dispatched_claimed_retried_and_settled(
    toy_client: TestClient, running_worker: DeliveryWorker, toy: ToyReceiver
) -> None:
    r = toy_client.put(
        "/api/v1/sources/pims-main",
        json={
            "webhook_url": TOY_URL,
            "results": ["toy"],
            "events": ["order.scheduled", "order.updated", "order.cancelled"],
        },
    )
    assert r.status_code == 201, r.text
    order = toy_client.post("/api/v1/orders", json=rex()).json()
    # Not among the toy kind's events: subscribed by the source, still no delivery.
    toy_client.patch(
        f"/api/v1/orders/{order['id']}",
        json={"notes": "changed"},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert toy_client.post(f"/api/v1/orders/{order['id']}/cancel").status_code == 200

    scheduled, cancelled = wait_for_statuses(toy_client, 2)
    assert (scheduled["event"], scheduled["status"], scheduled["attempts"]) == (
        "order.scheduled",
        "delivered",
        2,
    )
    assert scheduled["last_error"] is None  # cleared once delivered
    assert (cancelled["event"], cancelled["status"], cancelled["attempts"]) == (
        "order.cancelled",
        "delivered",
        1,
    )
    # The refused first attempt was retried under the same id, and the later
    # event of the order waited behind it.
    sent = [(c.event_kind, c.attempts, c.uuid) for c in toy.got]
    assert sent == [
        ("order.scheduled", 1, scheduled["delivery_id"]),
        ("order.scheduled", 2, scheduled["delivery_id"]),
        ("order.cancelled", 1, cancelled["delivery_id"]),
    ]
    claim = toy.got[-1]
    assert claim.kind == "toy"
    assert claim.target is not None and claim.target.webhook_url == TOY_URL
    assert claim.payload["event"] == "order.cancelled"
    assert claim.payload["order"]["status"] == "cancelled"


def test_a_kind_that_needs_a_study_waits_for_one(client: TestClient, hub: Hub) -> None:
    kinds = registry_of(client)
    kinds.add(toy_kind(ToyReceiver(), needs_study=True))
    client.put(
        "/api/v1/sources/pims-main",
        json={"webhook_url": TOY_URL, "results": ["toy"], "events": ["order.scheduled"]},
    )
    client.post("/api/v1/orders", json=rex())
    with hub.db.session() as s:
        assert dispatch(s, hub.settings.public_url, kinds) == 1  # the event is done with
    assert client.get("/api/v1/deliveries").json()["items"] == []


# -- the registry itself, without a database ----------------------------------


def test_the_hubs_kinds_answer_the_events_documented_in_webhooks_md() -> None:
    kinds = delivery_kinds()
    # The core's own kinds first; vendor adapters (hub/serve.py) add theirs after.
    assert kinds.names()[:4] == ("webhook", "hl7-oru", "hl7-orm-status", "dicom-forward")
    by_name = {k.name: k for k in kinds}
    assert by_name["webhook"].events == frozenset(EVENTS)
    assert by_name["hl7-oru"].events == {"study.received", "study.reconciled", "order.completed"}
    assert by_name["hl7-oru"].needs_study
    assert by_name["hl7-orm-status"].events == {
        "order.scheduled",
        "order.in_progress",
        "order.completed",
        "order.cancelled",
        "order.discontinued",
    }
    assert not by_name["webhook"].needs_study and not by_name["hl7-orm-status"].needs_study


@pytest.mark.parametrize(
    ("overrides", "why"),
    [
        ({"name": ""}, "1-16 characters"),
        ({"name": "a-name-longer-than-16"}, "1-16 characters"),
        ({"name": "webhook"}, "registered twice"),
        ({"events": frozenset({"order.exploded"})}, "unknown events"),
        ({"requires": ("fax_number",)}, "no source setting"),
    ],
)
def test_a_declaration_the_core_cannot_honour_fails_at_start(
    overrides: dict[str, Any], why: str
) -> None:
    kinds = delivery_kinds()
    with pytest.raises(ValueError, match=why):
        kinds.add(toy_kind(ToyReceiver(), **overrides))


def test_check_names_each_missing_setting_once_with_the_kinds_that_need_it() -> None:
    kinds = delivery_kinds()
    errors = kinds.check(SourceSettings(results=("hl7-oru", "hl7-orm-status", "fax")))
    # The list of kinds to use goes on with the vendor adapters' kinds.
    assert errors[0].message.startswith(
        "unknown result kind 'fax'; use webhook, hl7-oru, hl7-orm-status"
    )
    assert errors[1:] == [
        FieldError("hl7_host", "is required for the 'hl7-oru' and 'hl7-orm-status' results"),
        FieldError("hl7_port", "is required for the 'hl7-oru' and 'hl7-orm-status' results"),
    ]
    assert kinds.check(SourceSettings(results=("hl7-oru",), hl7_host="pims", hl7_port=2575)) == []
